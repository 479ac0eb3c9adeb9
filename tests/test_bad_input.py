"""The bad-input battery: every command, given input it cannot use, exits non-zero with one line
(`error: ...`, or click's usage message for a usage mistake), never a traceback, and leaves an
earlier good output byte-identical."""

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_anif


GOOD_XYZ = "3\nwater\nO 0.0 0.0 0.0\nH 0.957 0.0 0.0\nH -0.240 0.927 0.0\n"


def digest(path: Path) -> dict:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def files(tmp_path_factory, s66x8_path):
    """Inputs (good and bad) and earlier good outputs the bad runs must not touch."""
    from anif.datasets.store import DatasetStore
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
    # a user's project folder: no `--out` may delete or change it
    (d / "proj" / "data").mkdir(parents=True)
    (d / "proj" / "notes.txt").write_text("my notes\n")
    (d / "proj" / "data" / "important.csv").write_text("a,b\n1,2\n")
    (d / "skeleton.xyz").write_text("3\nethanol without its hydrogens\nC 0 0 0\nC 1.52 0 0\nO 2.01 1.34 0.1\n")
    (d / "xx.xyz").write_text(GOOD_XYZ.replace("\nO ", "\nXx "))
    (d / "z200.xyz").write_text(GOOD_XYZ.replace("\nO ", "\n200 "))
    (d / "flat2d.sdf").write_text(ETHANOL_2D)
    (d / "noh.pdb").write_text(ETHANOL_NO_H_PDB)
    (d / "radical.sdf").write_text(METHYL_RADICAL)
    (d / "empty.sdf").write_text("")
    _edited_store(d / "labels.h5", d / "kcal.h5", "energies", lambda e: e * 627.5094740631)
    _edited_store(d / "labels.h5", d / "nan.h5", "energies", lambda e: e * math.nan)
    _edited_store(d / "labels.h5", d / "short.h5", "energies", lambda e: e[:1])
    _edited_store(d / "labels.h5", d / "z200.h5", "species", lambda z: z * 0 + 200)
    _damaged_models(d)
    (d / "bad.toml").write_text('[campaign]\nseed = 0\n[qbc]\nrho_hat = -1.0\n[test_sets.t]\nsmiles = ["CCO"]\n')
    (d / "kcal.toml").write_text('[campaign]\nseed = 0\n[test_sets.t]\nfile = "kcal.h5"\n')
    (d / "short.toml").write_text('[campaign]\nseed = 0\n[bootstrap]\ndataset = "short.h5"\n[test_sets.t]\nfile = "labels.h5"\n')
    (d / "ok.toml").write_text('[campaign]\nseed = 0\n[test_sets.t]\nsmiles = ["CCO"]\n')
    (d / "run").mkdir()
    for name, text in {"topology.pdb": "END\n", "trajectory.dcd": "x", "qbc.csv": "step\n1\n", "md.json": "{}"}.items():
        (d / "run" / name).write_text(text)
    return d


ETHANOL_2D = """ethanol
  a 2D record without hydrogens, as PubChem and many exports give

  3  2  0  0  0  0  0  0  0  0999 V2000
    2.5369   -0.1550    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    3.4030    0.3450    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    4.2690   -0.1550    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  2  3  1  0
M  END
$$$$
"""
ETHANOL_3D_NO_H = """ethanol
  RDKit          3D

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.5200    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    2.0100    1.3400    0.1000 O   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  2  3  1  0
M  END
$$$$
"""
METHYL_RADICAL = """methyl
  RDKit          3D

  4  3  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
    1.0790    0.0000    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.5395    0.9344    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
   -0.5395   -0.9344    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
  1  4  1  0
M  RAD  1   1   2
M  END
$$$$
"""
ETHANOL_NO_H_PDB = """HETATM    1  C1  ETH A   1       0.000   0.000   0.000  1.00  0.00           C
HETATM    2  C2  ETH A   1       1.520   0.000   0.000  1.00  0.00           C
HETATM    3  O1  ETH A   1       2.020   1.350   0.000  1.00  0.00           O
END
"""


def _edited_store(source: Path, dest: Path, field: str, edit) -> None:
    """A copy of an ANI-format store with ``field`` of its first group changed (as a foreign tool might)."""
    import shutil

    import h5py

    shutil.copy(source, dest)
    with h5py.File(dest, "a") as f:
        groups = []
        f.visititems(lambda name, obj: groups.append(obj) if isinstance(obj, h5py.Group) and field in obj else None)
        group = groups[0]
        value = edit(group[field][()])
        del group[field]
        group[field] = value


def _damaged_models(d: Path) -> None:
    """A small valid anif model folder and damaged copies of it."""
    import hashlib as _hashlib
    import io
    import shutil

    import torch

    from anif.models.ensemble import StockAniEnsemble, build_ani, save_model

    symbols = ["H", "C", "N", "O"]
    ani = build_ani(symbols, {s: [384, 4, 1] for s in symbols}, [-0.5, -38.0, -54.7, -75.2], 2)
    save_model(StockAniEnsemble(ani), d / "model_ok")

    def copy(name, spec_edit=None, state_edit=None):
        shutil.copytree(d / "model_ok", d / name)
        spec = json.loads((d / name / "model.json").read_text())
        if state_edit is not None:
            state = torch.load(d / name / "weights.pt", weights_only=True)
            state_edit(state)
            buffer = io.BytesIO()
            torch.save(state, buffer)
            (d / name / "weights.pt").write_bytes(buffer.getvalue())
            spec["weights_sha256"] = _hashlib.sha256(buffer.getvalue()).hexdigest()
        if spec_edit is not None:
            spec_edit(spec)
        (d / name / "model.json").write_text(json.dumps(spec))

    copy("model_nokey", spec_edit=lambda s: s.pop("layer_dims"))
    copy("model_types", spec_edit=lambda s: s.update(members="two"))
    copy("model_element", spec_edit=lambda s: s.update(symbols=["H", "C", "N", "Qq"]))
    first = lambda st: next(k for k, v in st.items() if v.ndim == 2)  # noqa: E731
    copy("model_shape", state_edit=lambda st: st.update({first(st): st[first(st)][:, :-1].clone()}))
    copy("model_list", state_edit=lambda st: st.update({first(st): st[first(st)].tolist()}))
    # a planted pickle (it would call a function on load): refused by torch's weights-only reader
    import pickle

    shutil.copytree(d / "model_ok", d / "model_pickle")
    planted = pickle.dumps({"weights": print})
    (d / "model_pickle" / "weights.pt").write_bytes(planted)
    spec = json.loads((d / "model_pickle" / "model.json").read_text())
    spec["weights_sha256"] = _hashlib.sha256(planted).hexdigest()
    (d / "model_pickle" / "model.json").write_text(json.dumps(spec))


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
    # --- issue 24: nothing lost, nothing wrong -------------------------------------------------------
    # --out is never a licence to delete: a user's folder, a file, the input itself
    ("md --smiles C --steps 10 --out {d}/proj", 1, "not an `anif md` run"),
    ("md --smiles C --steps 10 --out {d}/good.xyz", 1, "not a directory"),
    ("md --input {d}/good.xyz --steps 10 --out {d}/good.xyz", 1, "is also an input"),
    ("md --smiles C --steps 10 --out /proc/anif-run", 1, "cannot write"),
    ("train --data {d}/labels.h5 --out {d}/proj", 1, "not an `anif train` model folder"),
    ("train --data {d}/labels.h5 --out {d}/labels.h5", 1, "not a directory"),
    ("train --data {d}/labels.h5 --out /proc/anif-model", 1, "cannot write"),
    ("al run {d}/ok.toml --out {d}/proj", 1, "not an `anif al` campaign folder"),
    ("al run {d}/ok.toml --out {d}/ok.toml", 1, "not a directory"),
    # no output may be an input
    ("data info {d}/labels.h5 --json-out {d}/labels.h5", 1, "is also an input"),
    ("data merge {d}/labels.h5 {d}/labels.h5", 1, "is also an input"),
    ("data split {d}/labels.h5 --out {d}/labels.h5 --fraction 1", 1, "is also an input"),
    ("bench comp6 --model ani1x --data {d}/labels.h5 --json-out {d}/labels.h5", 1, "is also an input"),
    ("qbc calibrate --model ani1x --data {d}/labels.h5 --json-out {d}/labels.h5", 1, "is also an input"),
    ("qbc calibrate --model ani1x --data {d}/labels.h5 --plot {d}/labels.h5", 1, "is also an input"),
    ("label --input {d}/labels.h5 --out {d}/labels.h5", 1, "is also an input"),
    ("sample search {d}/candidates.h5 --out {d}/candidates.h5", 1, "is also an input"),
    ("energy --input {d}/good.xyz --model {d}/model_ok --json", 0, ""),  # (the small model itself is fine)
    # outputs checked before work: unwritable, a folder where a file goes, under /proc
    ("data info {d}/labels.h5 --json-out {d}/proj", 1, "is a folder"),
    ("data info {d}/labels.h5 --json-out {d}/blocker/x.json", 1, "cannot write"),
    ("data merge /proc/anif-merged.h5 {d}/labels.h5", 1, "cannot write"),
    ("bench comp6 --model ani1x --data {d}/labels.h5 --json-out /proc/anif.json", 1, "cannot write"),
    ("bench comp6 --model ani1x --data {d}/labels.h5 --plots {d}/good.xyz", 1, "not a folder"),
    ("qbc calibrate --model ani1x --data {d}/labels.h5 --plot {d}/proj", 1, "is a folder"),
    # structures are what they say
    ("md --input {d}/z200.xyz --steps 10 --out {d}/run", 1, "z200.xyz: frame 1: atomic number 200 is not an element"),
    ("energy --input {d}/z200.xyz", 1, "atomic number 200 is not an element"),
    ("energy --input {d}/xx.xyz", 1, "xx.xyz: frame 1: unknown element symbol 'Xx'"),
    ("energy --input {d}/bohr.xyz", 1, "Bohr"),
    ("md --input {d}/bohr.xyz --steps 10 --out {d}/run", 1, "Bohr"),
    ("sample dnms --input {d}/bohr.xyz --out {d}/c.h5 --workers 0", 1, "Bohr"),
    ("energy --input {d}/z200.h5", 1, "not an element"),
    ("energy --input {d}/flat2d.sdf", 1, "2D record without explicit hydrogens"),
    ("md --input {d}/flat2d.sdf --steps 10 --out {d}/run", 1, "2D record"),
    ("energy --input {d}/noh.pdb", 1, "no hydrogen atoms"),
    ("energy --input {d}/skeleton.xyz", 1, "hydrogens missing from the file?"),
    ("md --input {d}/skeleton.xyz --steps 10 --out {d}/run", 1, "hydrogens missing"),
    # numbers finite and in range, seeds in the RNGs' range, options that need another
    ("md --smiles C --time-ps inf --out {d}/run", 2, "--time-ps"),
    ("md --smiles C --time-ps 1e12 --out {d}/run", 2, "beyond OpenMM"),
    ("md --smiles C --steps 3000000000 --out {d}/run", 2, "--steps"),
    ("md --smiles C --steps 10 --temperature inf --out {d}/run", 2, "--temperature"),
    ("md --smiles C --steps 10 --temperature 1e300 --out {d}/run", 2, "at most 20000 K"),
    ("sample rts --smiles C --t-end 1e9 --out {d}/c.h5", 2, "--t-end"),
    ("data info {d}/proj", 1, "it is a folder"),
    ("energy --input {d}/empty.sdf", 1, "not a readable SDF"),
    ("data split {d}/labels.h5 --out {d}/a.h5 --out {d}/c.h5 --fraction 0.6 --fraction 0.6", 2, "add up to 1"),
    ("data split {d}/labels.h5 --out {d}/a.h5 --fraction 0.5", 2, "add up to 1"),
    ("md --smiles C --steps 10 --timestep nan --out {d}/run", 2, "--timestep"),
    ("md --smiles C --steps 10 --friction inf --out {d}/run", 2, "--friction"),
    ("md --smiles C --steps 10 --solvent water --box inf --out {d}/run", 2, "--box"),
    ("md --smiles C --steps 10 --seed -1 --out {d}/run", 2, "--seed"),
    ("md --smiles C --steps 10 --seed 4294967296 --out {d}/run", 2, "--seed"),
    ("md --smiles C --steps 10 --rho-hat nan --out {d}/run", 2, "--rho-hat"),
    ("md --smiles C --steps 10 --stop-on-rho --out {d}/run", 2, "--rho-hat"),
    ("md --smiles C --steps 10 --report-every 50 --out {d}/run", 2, "--report-every"),
    ("analyze {d}/run --rho-hat inf", 2, "--rho-hat"),
    ("train --data {d}/labels.h5 --out {d}/model --seed -3", 2, "--seed"),
    ("train --data {d}/labels.h5 --out {d}/model --checkpoint-every inf", 2, "--checkpoint-every"),
    ("train --data {d}/labels.h5 --out {d}/model --workers -1", 2, "--workers"),
    ("data split {d}/labels.h5 --out {d}/a.h5 --fraction 1 --seed 4294967296", 2, "--seed"),
    ("data split {d}/labels.h5 --out {d}/a.h5 --fraction nan", 2, "--fraction"),
    ("data split {d}/labels.h5 --out {d}/a.h5 --fraction 1.5", 2, "--fraction"),
    ("bench comp6 --model ani1x --data {d}/labels.h5 --rho-hat inf", 2, "--rho-hat"),
    ("bench comp6 --model ani1x --data {d}/labels.h5 --rho-hat 0.5", 2, "give --plots"),
    ("md --smiles C --steps 10 --solvent water --box 2 --backend python --out {d}/run", 2, "vacuum only"),
    ("energy --input {d}/radical.sdf", 1, "atom 1 (C) has 1 unpaired electron"),
    ("bench comp6 --model ani1x --data {d}/labels.h5 --max-energy inf", 2, "--max-energy"),
    ("qbc calibrate --model ani1x --data {d}/labels.h5 --error inf", 2, "--error"),
    ("qbc calibrate --model ani1x --data {d}/labels.h5 --capture nan", 2, "--capture"),
    ("sample rts --smiles C --seed -1 --out {d}/c.h5", 2, "--seed"),
    ("sample rts --smiles C --time-ps inf --out {d}/c.h5", 2, "--time-ps"),
    ("sample rts --smiles C --friction inf --out {d}/c.h5", 2, "--friction"),
    ("sample dimers C --density nan --out {d}/c.h5", 2, "--density"),
    ("sample dnms --smiles C --min-rmsd inf --out {d}/c.h5", 2, "--min-rmsd"),
    ("label --input {d}/good.xyz --out {d}/new_labels.h5 --multiplicity 0", 2, "--multiplicity"),
    ("label --input {d}/good.xyz --out {d}/new_labels.h5 --grid 0,302", 1, "--grid"),
    ("al run {d}/bad.toml --out {d}/camp", 1, "[qbc] rho_hat must be > 0"),
    ("al run {d}/kcal.toml --out {d}/camp", 1, "[test_sets.t] file"),
    ("al run {d}/short.toml --out {d}/camp", 1, "[bootstrap] dataset"),
    ("al run {d}/ok.toml --out {d}/camp --workers -1", 2, "--workers"),
    # data are what they claim, in every reader
    ("data info {d}/short.h5", 1, "field 'energies' has 1 value(s)"),
    ("data info {d}/z200.h5", 1, "field 'species'"),
    ("train --data {d}/kcal.h5 --out {d}/model", 1, "Hartree"),
    ("train --data {d}/nan.h5 --out {d}/model", 1, "NaN"),
    ("train --data {d}/short.h5 --out {d}/model", 1, "field 'energies'"),
    ("bench comp6 --model ani1x --data {d}/kcal.h5", 1, "Hartree"),
    ("bench comp6 --model ani1x --data {d}/nan.h5", 1, "NaN"),
    ("bench comp6 --model ani1x --data {d}/short.h5", 1, "field 'energies'"),
    ("qbc calibrate --model ani1x --data {d}/nan.h5", 1, "NaN"),
    ("qbc calibrate --model ani1x --data {d}/kcal.h5", 1, "Hartree"),
    ("data merge {d}/merged.h5 {d}/kcal.h5", 1, "Hartree"),
    ("bench comp6 --model ani1x --data {d}/candidates.h5", 1, "sampler candidates"),
    ("qbc calibrate --model ani1x --data {d}/candidates.h5", 1, "sampler candidates"),
    ("train --data {d}/labels.h5 --data {d}/labels.h5 --out {d}/model", 1, "given twice"),
    ("bench comp6 --model ani1x --data {d}/labels.h5 {d}/labels.h5", 1, "given twice"),
    ("energy --input {d}/proj", 1, "is a folder"),
    ("label --input {d}/good.xyz --out {d}/new_labels.h5 --workers 0", 1, "workers must be >= 1"),
    # a model folder is validated before use
    ("energy --input {d}/good.xyz --model {d}/model_nokey", 1, "model.json lacks the key 'layer_dims'"),
    ("energy --input {d}/good.xyz --model {d}/model_types", 1, "'members' must be a positive integer"),
    ("energy --input {d}/good.xyz --model {d}/model_element", 1, "not an element"),
    ("energy --input {d}/good.xyz --model {d}/model_shape", 1, "weights.pt does not fit model.json"),
    ("energy --input {d}/good.xyz --model {d}/model_list", 1, "not a plain tensor"),
    ("energy --input {d}/good.xyz --model {d}/model_pickle", 1, "corrupt or unsafe weights.pt"),
    ("bench comp6 --model {d}/model_shape --data {d}/labels.h5", 1, "does not fit"),
    ("bench comp6 --model {d}/model_ok --data {d}/labels.h5 --json-out {d}/model_ok/model.json", 1, "is also an input"),
    ("qbc calibrate --model {d}/model_ok --data {d}/labels.h5 --plot {d}/model_ok/weights.pt", 1, "is also an input"),
    ("md --smiles C --steps 10 --model {d}/model_nokey --out {d}/run", 1, "lacks the key"),
    # no command, unknown command
    ("", 2, "Missing command"),
    ("frobnicate", 2, "No such command"),
]


@pytest.mark.parametrize("args, status, message", CASES, ids=[c[0][:60] for c in CASES])
def test_bad_input_is_one_clear_line(monkeypatch, capsys, files, args, status, message):
    before = {name: digest(files / name) for name in ("run", "labels.h5", "candidates.h5", "proj", "good.xyz", "ok.toml")}
    code, _, err = run_anif(monkeypatch, capsys, *args.format(d=files).split())
    assert code == status, err
    assert "Traceback" not in err and message in err, err
    if status == 1:
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, err
    for name, value in before.items():
        assert digest(files / name) == value, f"{name} changed"
    for name in ("missing.h5", "merged.h5", "a.h5", "c.h5", "new_labels.h5", "camp"):  # nothing made where nothing was done
        assert not (files / name).exists(), name
    assert not list(files.glob(".*partial*")) and not list(files.glob(".anif-probe-*"))
    assert not (files / "model").exists() or not any((files / "model").iterdir())


def test_battery_covers_every_command():
    commands = {c[0].split()[0] for c in CASES if c[0]}
    assert {"md", "energy", "analyze", "train", "label", "data", "bench", "qbc", "sample", "al"} <= commands
    assert len(CASES) >= 130


def test_no_traceback_from_the_installed_entry_point(tmp_path):
    """The console script, not only main(): a usage mistake and a bad file give one clear message."""
    anif = Path(sys.executable).parent / "anif"
    usage = subprocess.run([str(anif), "train", "--epochs", "5"], capture_output=True, text=True)
    assert usage.returncode == 2 and "No such option: --epochs" in usage.stderr and "Traceback" not in usage.stderr
    bad = subprocess.run([str(anif), "energy", "--input", str(tmp_path / "none.xyz")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1


# ---- nothing lost: --out and staging (issue 24) -------------------------------------------------
def _anif(*args, cwd=None):
    anif = Path(sys.executable).parent / "anif"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(anif), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)


def test_out_dot_is_refused_and_the_folder_untouched(monkeypatch, capsys, files):
    """`--out .` names the folder the user stands in: refused in one line, nothing changed, no staging."""
    before = digest(files / "proj")
    monkeypatch.chdir(files / "proj")
    code, _, err = run_anif(monkeypatch, capsys, "md", "--smiles", "C", "--steps", "10", "--out", ".")
    assert code == 1 and err.startswith("error: --out") and "current folder" in err and len(err.splitlines()) == 1
    assert digest(files / "proj") == before
    assert not list(files.glob(".*partial*")) and not list((files / "proj").glob(".*"))


def test_an_empty_folder_and_an_earlier_run_may_be_out(monkeypatch, capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run_anif(monkeypatch, capsys, "md", "--smiles", "C", "--steps", "10", "--out", empty)
    assert code == 0, err
    first = json.loads((empty / "md.json").read_text())
    assert first["outcome"] == "completed" and first["steps"] == 10
    code, out, err = run_anif(monkeypatch, capsys, "md", "--smiles", "C", "--steps", "20", "--out", empty)
    assert code == 0, err  # an earlier completed run is replaced by a completed one
    assert json.loads((empty / "md.json").read_text())["steps"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_run_that_left_the_domain_does_not_replace_an_earlier_good_run(tmp_path):
    out = tmp_path / "run"
    good = _anif("md", "--smiles", "CCO", "--steps", 40, "--out", out)
    assert good.returncode == 0, good.stderr
    before = digest(out)
    # an 8 fs timestep blows ethanol apart: exit 3, frames kept beside the earlier run, which is untouched
    blown = _anif("md", "--smiles", "CCO", "--steps", 400, "--timestep", 8, "--out", out)
    assert blown.returncode == 3, blown.stderr
    assert digest(out) == before
    beside = tmp_path / "run.left-domain"
    record = json.loads((beside / "md.json").read_text())
    assert record["outcome"] == "left_model_domain" and record["steps"] < 400
    assert str(beside) in blown.stderr and "which is kept" in blown.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.left-domain"]


def test_sigterm_of_md_removes_its_staging_folder(tmp_path):
    anif = Path(sys.executable).parent / "anif"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(anif), "md", "--smiles", "CCO", "--steps", "1000000", "--out", str(tmp_path / "long")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until MD writes frames in its staging folder
        if any((p / "qbc.csv").is_file() for p in tmp_path.glob(".long.partial-*")):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("MD did not start within 120 s")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # no staging folder, no half run


# ---- JSON outputs are JSON ---------------------------------------------------------------------------
def _strict(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_every_json_output_parses_strictly(monkeypatch, capsys, files, tmp_path):
    """energy --json, md.json, analysis.json, data info, bench and qbc --json-out: valid JSON (no NaN)."""
    code, out, err = run_anif(monkeypatch, capsys, "energy", "--input", files / "good.xyz", "--json")
    assert code == 0, err
    assert _strict(out)[0]["n_atoms"] == 3
    run = tmp_path / "run"
    code, _, err = run_anif(monkeypatch, capsys, "md", "--smiles", "C", "--steps", "20", "--out", run)
    assert code == 0, err
    assert _strict((run / "md.json").read_text())["steps"] == 20
    code, _, err = run_anif(monkeypatch, capsys, "analyze", run)
    assert code == 0, err
    assert _strict((run / "analysis.json").read_text())["n_frames"] == 2
    code, _, err = run_anif(monkeypatch, capsys, "data", "info", files / "labels.h5", "--json-out", tmp_path / "info.json")
    assert code == 0, err
    assert _strict((tmp_path / "info.json").read_text())["conformers"] == 4
    code, _, err = run_anif(monkeypatch, capsys, "bench", "comp6", "--model", "ani1x", "--data", files / "labels.h5",
                            "--json-out", tmp_path / "bench.json")
    assert code == 0, err
    metrics = _strict((tmp_path / "bench.json").read_text())
    assert metrics["overall"]["n_conformers"] == 4
    code, _, err = run_anif(monkeypatch, capsys, "qbc", "calibrate", "--model", "ani1x", "--data", files / "labels.h5",
                            "--error", "0.001", "--json-out", tmp_path / "qbc.json")
    assert code == 0, err
    assert _strict((tmp_path / "qbc.json").read_text())["n_structures"] == 4


def test_strict_json_writes_null_for_undefined_numbers():
    from anif.outputs import strict_json

    text = strict_json({"a": math.nan, "b": [1.0, math.inf, np.float32("nan")], "c": np.arange(2)})
    assert _strict(text) == {"a": None, "b": [1.0, None, None], "c": [0, 1]}


# ---- structures are what they say -------------------------------------------------------------------
def test_sdf_without_hydrogens_gets_them_with_coordinates(monkeypatch, capsys, tmp_path):
    """A 3D SDF record without explicit hydrogens is ethanol (9 atoms), not a C-C-O skeleton; the
    note is said, and the energies are those of the completed molecule written out as XYZ."""
    from anif.structures import read_structures, write_xyz

    sdf = tmp_path / "ethanol.sdf"
    sdf.write_text(ETHANOL_3D_NO_H)
    (ethanol,) = read_structures(sdf)
    assert ethanol.n_atoms == 9 and sorted(ethanol.numbers.tolist()) == [1] * 6 + [6, 6, 8]
    assert "added 6 implicit hydrogen(s)" in ethanol.notes[0]
    bonded = np.linalg.norm(ethanol.coordinates[3:] - ethanol.coordinates[[0, 0, 0, 1, 1, 2]], axis=1)
    assert np.all((bonded > 0.9) & (bonded < 1.15))  # each H placed at a bond length from its atom
    code, out, err = run_anif(monkeypatch, capsys, "energy", "--input", sdf, "--json")
    assert code == 0, err
    assert "note:" in err and "implicit hydrogen" in err
    from_sdf = _strict(out)[0]
    write_xyz([ethanol], tmp_path / "ethanol.xyz")
    code, out, err = run_anif(monkeypatch, capsys, "energy", "--input", tmp_path / "ethanol.xyz", "--json")
    assert code == 0, err
    assert from_sdf["n_atoms"] == 9
    assert from_sdf["energy_hartree"] == pytest.approx(_strict(out)[0]["energy_hartree"], abs=1e-5)
    code, _, err = run_anif(monkeypatch, capsys, "md", "--input", sdf, "--steps", "10", "--out", tmp_path / "run")
    assert code == 0, err
    warnings = json.loads((tmp_path / "run" / "md.json").read_text())["warnings"]
    assert any("implicit hydrogen" in w for w in warnings)


def test_xyz_without_hydrogens_that_is_a_molecule_is_read(tmp_path):
    """CO2 and cyanogen have no hydrogens and are molecules: read as given (only skeletons are refused)."""
    from anif.structures import read_structures

    (tmp_path / "co2.xyz").write_text("3\nCO2\nO 0 0 0\nC 1.16 0 0\nO 2.32 0 0\n")
    (tmp_path / "c2n2.xyz").write_text("4\ncyanogen\nN 0 0 0\nC 1.16 0 0\nC 2.54 0 0\nN 3.70 0 0\n")
    assert read_structures(tmp_path / "co2.xyz")[0].numbers.tolist() == [8, 6, 8]
    assert read_structures(tmp_path / "c2n2.xyz")[0].n_atoms == 4
