"""The bad-input battery: every command, given input it cannot use, exits non-zero with one line
(`error: ...`, or click's usage message for a usage mistake), never a traceback, and leaves an
earlier good output byte-identical."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_anif


GOOD_XYZ = "3\nwater\nO 0.0 0.0 0.0\nH 0.957 0.0 0.0\nH -0.240 0.927 0.0\n"


def digest(path: Path) -> dict:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def files(tmp_path_factory, s66x8_path):
    """Inputs (good and bad) and earlier good outputs the bad runs must not touch."""
    from anif.datasets import DatasetStore
    from anif.sampling.candidates import Candidate, write_candidates
    from anif.structures import from_smiles

    d = tmp_path_factory.mktemp("bad")
    (d / "good.xyz").write_text(GOOD_XYZ)
    (d / "nan.xyz").write_text(GOOD_XYZ.replace("0.957", "nan"))
    (d / "overlap.xyz").write_text(GOOD_XYZ.replace("0.957 0.0 0.0", "0.01 0.0 0.0"))
    (d / "corrupt.xyz").write_text("3\nwater\nO 0.0 0.0\nH one two three\n")
    (d / "bohr.xyz").write_text("3\nwater\nO 0.0 0.0 0.0\nH 1.809 0.0 0.0\nH -0.454 1.752 0.0\n")
    (d / "corrupt.h5").write_bytes(b"this is not an HDF5 file" * 10)
    labels = DatasetStore(d / "labels.h5", "a", kind="labels")  # real wB97X/6-31G(d) labels: two S66x8 groups
    source = DatasetStore(s66x8_path, "r")
    for group in source.groups()[:2]:
        data = source.read(group)
        labels.append(None, data["species"], data["coordinates"][:2], data["energies"][:2], method="wb97x/6-31g*")
    write_candidates(d / "candidates.h5", [Candidate(from_smiles("CCO", seed=1), 0.5, -155.0, {"sampler": "test"})])
    (d / "blocker").write_text("a file where a folder is needed")
    (d / "run").mkdir()
    for name, text in {"topology.pdb": "END\n", "trajectory.dcd": "x", "qbc.csv": "step\n1\n", "md.json": "{}"}.items():
        (d / "run" / name).write_text(text)
    return d


# (arguments, exit status, text the message holds); {d} is the fixture folder
CASES = [
    # md
    ("md --smiles C --steps 0 --out {d}/run", 2, "--steps"),
    ("md --smiles C --steps 10 --temperature -100 --out {d}/run", 2, "--temperature"),
    ("md --smiles C --steps 10 --timestep 0 --out {d}/run", 2, "--timestep"),
    ("md --smiles C --steps 10 --friction -5 --out {d}/run", 2, "--friction"),
    ("md --smiles C --steps 10 --report-every 0 --out {d}/run", 2, "--report-every"),
    ("md --smiles C1CC --steps 10 --out {d}/run", 1, "invalid SMILES"),
    ("md --smiles CS --steps 10 --out {d}/run", 1, "not supported"),
    ("md --smiles [CH3] --steps 10 --out {d}/run", 1, "open-shell"),
    ("md --smiles C[NH3+] --steps 10 --out {d}/run", 1, "charged"),
    ("md --input {d}/missing.xyz --steps 10 --out {d}/run", 1, "missing.xyz"),
    ("md --input {d}/nan.xyz --steps 10 --out {d}/run", 1, "NaN"),
    ("md --input {d}/overlap.xyz --steps 10 --out {d}/run", 1, "overlap"),
    ("md --input {d}/corrupt.xyz --steps 10 --out {d}/run", 1, "corrupt.xyz"),
    ("md --smiles C --solvent water --steps 10 --out {d}/run", 1, "--solvent and --box"),
    ("md --smiles C --solvent octanol --box 2 --steps 10 --out {d}/run", 1, "--solvent"),
    ("md --smiles C --ml-atoms all --steps 10 --out {d}/run", 1, "--ml-atoms"),
    ("md --smiles C --steps 10 --platform Nope --out {d}/run", 1, "Nope"),
    ("md --smiles C --steps 10 --out {d}/blocker/run", 1, "cannot write"),
    ("md --smiles C --steps 10", 2, "--out"),
    ("md --smiles C --steps 10 --epochs 5 --out {d}/run", 2, "--epochs"),
    ("md --smiles C --out {d}/run", 2, "--time-ps"),  # no length: a usage mistake, as when --steps was required
    ("md --smiles C --steps 10 --time-ps 1 --out {d}/run", 2, "one of them"),
    # energy, analyze
    ("energy --input {d}/missing.xyz", 1, "missing.xyz"),
    ("energy --input {d}/nan.xyz", 1, "NaN"),
    ("energy --input {d}/good.xyz --model {d}/no_model", 1, "no_model"),
    ("analyze {d}/nowhere", 1, "missing"),
    ("analyze {d}/run", 1, "trajectory"),
    # train
    ("train --data {d}/labels.h5 --out {d}/model --batch-size 0", 1, "--batch-size"),
    ("train --data {d}/labels.h5 --out {d}/model --lr -1", 1, "--lr"),
    ("train --data {d}/labels.h5 --out {d}/model --max-epochs 0", 1, "--max-epochs"),
    ("train --data {d}/candidates.h5 --out {d}/model", 1, "not reference labels"),
    ("train --data {d}/missing.h5 --out {d}/model", 1, "missing.h5"),
    ("train --data {d}/labels.h5 --out {d}/model --epochs 5", 2, "--epochs"),
    # label
    ("label --input {d}/missing.xyz --out {d}/new_labels.h5", 1, "missing.xyz"),
    ("label --input {d}/good.xyz --out {d}/candidates.h5", 1, "candidate"),
    ("label --input {d}/bohr.xyz --out {d}/new_labels.h5", 1, "Bohr"),
    ("label --input {d}/good.xyz --out {d}/blocker/labels.h5", 1, "blocker"),
    # data
    ("data split {d}/labels.h5 --out {d}/a.h5 --out {d}/a.h5 --fraction 0.5 --fraction 0.5", 1, "a.h5"),
    ("data merge {d}/merged.h5 {d}/missing.h5", 1, "missing.h5"),
    ("data info {d}/corrupt.h5", 1, "corrupt.h5"),
    # bench, qbc
    ("bench comp6 --model ani1x --data {d}/labels.h5 --threads -2", 2, "--threads"),
    ("bench comp6 --model ani1x --data {d}/labels.h5 --max-energy -5", 2, "--max-energy"),
    ("bench comp6 --model ani1x --data {d}/missing.h5", 1, "missing.h5"),
    ("qbc calibrate --model ani1x --data {d}/labels.h5 --error -1", 2, "--error"),
    ("qbc calibrate --model ani1x --data {d}/labels.h5 --capture 1.5", 2, "--capture"),
    # sample
    ("sample rts --smiles C --timestep 0 --out {d}/c.h5", 2, "--timestep"),
    ("sample rts --smiles C --t-start -100 --out {d}/c.h5", 2, "--t-start"),
    ("sample rts --smiles C --repeats -1 --out {d}/c.h5", 2, "--repeats"),
    ("sample dnms --smiles C --temperature -5 --out {d}/c.h5", 2, "--temperature"),
    ("sample dnms --smiles C --pool 0 --out {d}/c.h5", 2, "--pool"),
    ("sample dimers C --density 1e6 --out {d}/c.h5", 2, "--density"),
    ("sample rts --smiles C --out {d}/labels.h5 --workers 0", 1, "label"),
    ("sample search C1CC --out {d}/c.h5 --workers 0", 1, "no usable molecule"),
    # no command, unknown command
    ("", 2, "Missing command"),
    ("frobnicate", 2, "No such command"),
]


@pytest.mark.parametrize("args, status, message", CASES, ids=[c[0][:60] for c in CASES])
def test_bad_input_is_one_clear_line(monkeypatch, capsys, files, args, status, message):
    before = {name: digest(files / name) for name in ("run", "labels.h5", "candidates.h5")}
    code, _, err = run_anif(monkeypatch, capsys, *args.format(d=files).split())
    assert code == status, err
    assert "Traceback" not in err and message in err, err
    if status == 1:
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, err
    for name, value in before.items():
        assert digest(files / name) == value, f"{name} changed"
    for name in ("missing.h5", "merged.h5", "a.h5", "c.h5", "new_labels.h5"):  # nothing made where nothing was done
        assert not (files / name).exists(), name
    assert not (files / "model").exists() or not any((files / "model").iterdir())


def test_battery_covers_every_command():
    commands = {c[0].split()[0] for c in CASES if c[0]}
    assert {"md", "energy", "analyze", "train", "label", "data", "bench", "qbc", "sample"} <= commands
    assert len(CASES) >= 40


def test_no_traceback_from_the_installed_entry_point(tmp_path):
    """The console script, not only main(): a usage mistake and a bad file give one clear message."""
    anif = Path(sys.executable).parent / "anif"
    usage = subprocess.run([str(anif), "train", "--epochs", "5"], capture_output=True, text=True)
    assert usage.returncode == 2 and "No such option: --epochs" in usage.stderr and "Traceback" not in usage.stderr
    bad = subprocess.run([str(anif), "energy", "--input", str(tmp_path / "none.xyz")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
