"""One flag vocabulary (anif/cli/common.py): one spelling per flag (the old ones are gone);
structures come as --smiles/--input in every sampler."""

import sys

import pytest
import typer

from anif.cli import app, main

COMMAND = typer.main.get_command(app)


def parsed(*argv: str) -> dict:
    """The parameters click hands the command ``argv`` (the body does not run)."""
    cmd, args = COMMAND, list(argv)
    while hasattr(cmd, "commands") and args and args[0] in cmd.commands:
        cmd = cmd.commands[args.pop(0)]
    return cmd.make_context(cmd.name, args).params


@pytest.mark.parametrize("command, new, old, key, value", [
    ("md --smiles C --steps 5 --out x", "--rho-hat", "--rho-threshold", "rho_hat", "0.5"),
    ("train --data a.h5 --out m", "--workers", "--jobs", "workers", "2"),
    ("bench comp6 --model ani1x --data a.h5", "--json-out", "--json", "json_out", "m.json"),
    ("qbc calibrate --model ani1x --data a.h5", "--json-out", "--json", "json_out", "c.json"),
    ("data info a.h5", "--json-out", "--json", "json_out", "i.json"),
    ("sample rts --smiles C --out c.h5", "--time-ps", "--ramp-ps", "ramp_ps", "2.5"),
])
def test_one_spelling_per_flag(command, new, old, key, value):
    args = command.split()
    assert str(parsed(*args, new, value)[key]) == value
    with pytest.raises(Exception, match="No such option"):
        parsed(*args, old, value)


def test_json_stays_a_switch_where_it_was_one():
    assert parsed("energy", "--input", "a.xyz", "--json")["json_output"] is True
    assert parsed("al", "status", "folder", "--json")["json_out"] is True


def test_defaults_come_from_the_settings_objects():
    from anif.sampling.settings import DimerSettings, DNMSSettings, RTSSettings
    from anif.training.settings import TrainSettings

    rts, dimers, dnms = (parsed("sample", k, "--smiles", "C", "--out", "c.h5") for k in ("rts", "dimers", "dnms"))
    assert (rts["t_end"], rts["ramp_ps"], rts["repeats"]) == (RTSSettings.t_end, RTSSettings.ramp_ps, RTSSettings.repeats)
    assert (dimers["time_ps"], dimers["molecules"]) == (DimerSettings.time_ps, DimerSettings.molecules)
    assert (dnms["pool"], dnms["keep"]) == (DNMSSettings.pool, DNMSSettings.keep)
    assert parsed("train", "--data", "a.h5", "--out", "m")["max_epochs"] == TrainSettings.max_epochs
    from anif.md.settings import MD_DEFAULTS

    md = parsed("md", "--smiles", "C", "--steps", "5", "--out", "x")
    assert (md["temperature"], md["timestep"], md["friction"], md["report_every"]) == (
        MD_DEFAULTS.temperature, MD_DEFAULTS.timestep_fs, MD_DEFAULTS.friction, MD_DEFAULTS.report_every)


@pytest.mark.parametrize("sampler", ["search", "dimers"])
@pytest.mark.parametrize("form", [["C1CC"], ["--smiles", "C1CC"], ["--input", "{d}/bad.smi"]])
def test_positional_samplers_take_smiles_and_input(sampler, form, tmp_path, monkeypatch, capsys):
    """Positional SMILES, --smiles and --input reach the same reader (an invalid SMILES: one error line)."""
    (tmp_path / "bad.smi").write_text("C1CC bad\n")
    argv = ["anif", "sample", sampler, *(a.format(d=tmp_path) for a in form), "--out", str(tmp_path / "c.h5"),
            "--workers", "0"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "no usable molecule" in err, err


def test_md_takes_time_ps_or_steps_not_both(tmp_path, monkeypatch, capsys):
    assert parsed("md", "--smiles", "C", "--time-ps", "0.01", "--out", "x")["time_ps"] == 0.01
    monkeypatch.setattr(sys, "argv", ["anif", "md", "--smiles", "C", "--steps", "5", "--time-ps", "1",
                                      "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2 and "--time-ps" in capsys.readouterr().err  # a usage mistake


def test_samplers_read_the_store_format(tmp_path, monkeypatch, capsys):
    """Every sampler's structure input (rts/dnms/dimers through _load, search directly) takes the
    ANI HDF5 the other commands write."""
    import numpy as np

    from anif.cli.sample import _load
    from anif.datasets.store import DatasetStore
    from anif.models.ensemble import load_model

    water = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])
    shifts = np.random.default_rng(0).normal(scale=0.05, size=(2, 3, 3))
    DatasetStore(tmp_path / "w.h5", kind="labels").append(None, [8, 1, 1], water + shifts, [-76.4, -76.4],
                                                          method="wb97x/6-31g*")
    assert len(_load(load_model("ani1x"), [str(tmp_path / "w.h5")], 0)) == 2
    monkeypatch.setattr(sys, "argv", ["anif", "sample", "search", "--input", str(tmp_path / "w.h5"), "--rho-hat", "0",
                                      "--out", str(tmp_path / "c.h5"), "--workers", "0"])
    main()
    assert DatasetStore(tmp_path / "c.h5", "r").num_conformers() == 2, capsys.readouterr().err


def test_energy_backends_agree(monkeypatch, capsys):
    """`anif energy` defaults to the PythonForce (no TorchScript compilation at start-up); the
    TorchForce that `anif md` uses gives the same numbers."""
    import json

    import numpy as np

    results = {}
    for backend in ("python", "torch"):
        monkeypatch.setattr(sys, "argv", ["anif", "energy", "--smiles", "CCO", "--json", "--backend", backend])
        main()
        results[backend] = json.loads(capsys.readouterr().out)[0]
    for key in ("energy_hartree", "forces_hartree_per_angstrom", "sigma_kcal_mol", "rho_kcal_mol"):
        np.testing.assert_allclose(results["python"][key], results["torch"][key], rtol=1e-6, atol=1e-6)
