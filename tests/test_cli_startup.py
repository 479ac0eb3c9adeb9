"""Start-up: the command line loads no heavy package until a command needs it (issue 14:
`anif --help` under 1 s). A regression (a command module importing torch & co. at the top)
fails here, whatever the machine's speed."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "openmm", "openmmtorch", "torchani", "pyscf", "dask", "distributed", "h5py", "rdkit",
         "matplotlib", "scipy", "mdtraj")


def loaded_by(statement: str) -> list[str]:
    """Heavy packages in sys.modules after ``statement`` in a fresh interpreter."""
    probe = f"import sys\n{statement}\nprint('LOADED', *(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1].split()[1:]


def test_import_cli_loads_no_heavy_package():
    assert loaded_by("import anif.cli") == []


def test_help_of_every_command_loads_no_heavy_package():
    commands = [[], ["energy"], ["md"], ["analyze"], ["label"], ["train"], ["data", "info"], ["data", "merge"],
                ["data", "split"], ["bench", "comp6"], ["qbc", "calibrate"], ["sample", "rts"], ["sample", "dnms"],
                ["sample", "dimers"], ["sample", "search"], ["al", "run"], ["al", "status"], ["al", "report"]]
    statement = (f"from anif.cli import app\nfor argv in {commands!r}:\n"
                 "    try:\n        app([*argv, '--help'])\n    except SystemExit:\n        pass")
    assert loaded_by(statement) == []


def test_settings_and_packages_are_torch_free():
    """What the CLI and campaign configs read for defaults, and the lazy packages themselves."""
    assert loaded_by("import anif.al, anif.sampling, anif.al.config, anif.training.settings, "
                     "anif.labeling.settings, anif.sampling.settings, anif.md.settings, anif.models, "
                     "anif.datasets, anif.training, anif.labeling, anif.md, anif.accuracy") == []


def test_lazy_packages_still_export_their_names():
    from anif.al import load_config, run_campaign
    from anif.sampling import RTSSettings, sample_rts, write_candidates
    from anif.sampling.rts import RTSSettings as old_home
    from anif.datasets import DatasetStore
    from anif.labeling import Level, label_file
    from anif.models import load_model
    from anif.training import TrainSettings, train_ensemble

    assert all(map(callable, (load_config, run_campaign, sample_rts, write_candidates, DatasetStore, label_file,
                              load_model, train_ensemble)))
    assert Level().method == "wb97x"
    assert RTSSettings is old_home
    assert TrainSettings().members == 5
