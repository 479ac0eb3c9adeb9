"""Extended XYZ in and out of the store (ASE's reader and writer) and ANI-format files without a
`method` column: they train with a warning; only sampler candidates are refused."""

import json

import h5py
import numpy as np
import pytest

from anif.datasets.store import DatasetStore
from conftest import run_anif

WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])
METHANOL = np.array([[-0.046, 0.663, 0.0], [-0.046, -0.756, 0.0], [-1.086, 0.975, 0.0], [0.431, 1.071, 0.891],
                     [0.431, 1.071, -0.891], [0.862, -1.085, 0.0]])


def _ase_frames(n=4, seed=0):
    """Frames as an ASE user makes them: energies (eV) and forces (eV/A) as calculator results."""
    import ase
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        symbols, xyz, e0 = ("OH2", WATER, -2080.0) if i % 2 == 0 else ("COHHHH", METHANOL, -3132.0)
        atoms = ase.Atoms(symbols, positions=xyz + rng.normal(scale=0.03, size=xyz.shape))
        atoms.calc = SinglePointCalculator(atoms, energy=e0 + rng.normal(scale=0.1),
                                           forces=rng.normal(scale=1.0, size=xyz.shape))
        frames.append(atoms)
    return frames


def test_ase_written_file_imports_to_the_same_energies_and_forces(tmp_path, monkeypatch, capsys):
    import ase.io
    import ase.units

    frames = _ase_frames()
    ase.io.write(tmp_path / "set.extxyz", frames, format="extxyz")
    code, out, err = run_anif(monkeypatch, capsys, "data", "import", tmp_path / "set.extxyz", "--out",
                              tmp_path / "set.h5", "--method", "pbe/def2-svp")
    assert code == 0, err
    assert "4 of 4 conformers added" in out
    store = DatasetStore(tmp_path / "set.h5", "r")
    assert store.kind == "labels" and store.num_conformers() == 4
    got = {}
    for _, data in store:
        for c in range(len(data["energies"])):
            got[round(float(data["coordinates"][c][0][0]), 6)] = (data, c)
    for atoms in frames:
        data, c = got[round(float(atoms.positions[0][0]), 6)]
        assert list(data["species"].reshape(-1, len(atoms))[0]) == list(atoms.numbers)
        np.testing.assert_allclose(data["coordinates"][c], atoms.positions, atol=1e-8)
        # ASE's own numbers, converted with ASE's Hartree
        assert data["energies"][c] == pytest.approx(atoms.get_potential_energy() / ase.units.Hartree, rel=1e-14)
        np.testing.assert_allclose(data["forces"][c], atoms.get_forces() / ase.units.Hartree, atol=1e-8 / 27)
        assert data["method"][c].decode() if isinstance(data["method"][c], bytes) else data["method"][c]


def test_export_then_import_is_lossless(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(2)
    source = tmp_path / "a.h5"
    DatasetStore(source, kind="labels").append(
        None, [8, 1, 1], WATER + rng.normal(scale=0.05, size=(3, 3, 3)), -76.4 + rng.normal(scale=0.01, size=3),
        rng.normal(scale=0.05, size=(3, 3, 3)), method="wb97x/6-31g*", sampler="dnms", al_cycle=2,
        rho_kcal_mol=np.array([0.31, 0.42, np.nan]))
    for key_args in ([], ["--energy-key", "REF_energy", "--forces-key", "REF_forces"]):
        xyz, back = tmp_path / f"a{len(key_args)}.extxyz", tmp_path / f"b{len(key_args)}.h5"
        code, out, err = run_anif(monkeypatch, capsys, "data", "export", source, "--out", xyz, *key_args)
        assert code == 0 and "3 conformers written" in out, err
        if key_args:
            assert "REF_energy=" in xyz.read_text() and "REF_forces:R:3" in xyz.read_text()
        code, out, err = run_anif(monkeypatch, capsys, "data", "import", xyz, "--out", back, *key_args)
        assert code == 0 and "3 of 3 conformers added" in out, err
        (name_a, a), = list(DatasetStore(source, "r"))
        (name_b, b), = list(DatasetStore(back, "r"))
        assert name_a == name_b
        np.testing.assert_allclose(b["energies"], a["energies"], rtol=1e-14)  # eV and back: float64 round-off
        np.testing.assert_allclose(b["coordinates"], a["coordinates"], atol=5e-9)  # ASE writes 8 decimals
        np.testing.assert_allclose(b["forces"], a["forces"], atol=5e-9 / 27.2)
        for key in ("method", "sampler", "source"):
            assert [str(x) for x in b[key]] == [str(x) for x in a[key]], key
        np.testing.assert_array_equal(b["al_cycle"], a["al_cycle"])
        np.testing.assert_array_equal(b["rho_kcal_mol"], a["rho_kcal_mol"])  # NaN where unset, kept
        np.testing.assert_array_equal(b["structure_key"], a["structure_key"])


def test_extxyz_without_energies_is_refused(tmp_path, monkeypatch, capsys):
    import ase
    import ase.io

    ase.io.write(tmp_path / "bare.extxyz", [ase.Atoms("OH2", positions=WATER)], format="extxyz")
    code, _, err = run_anif(monkeypatch, capsys, "data", "import", tmp_path / "bare.extxyz", "--out",
                            tmp_path / "x.h5")
    assert code == 1 and err.startswith("error: ") and "has no energy under 'energy'" in err
    assert err.count("\n") == 1 and not (tmp_path / "x.h5").exists()
    assert not list(tmp_path.glob(".x.h5*"))  # not even the store's hidden folder


def test_comp6_layout_without_method_trains_with_a_warning(tmp_path, monkeypatch, capsys):
    """A COMP6 v1-layout file (no 'grouping' attribute, no method/lot): labels of unknown method."""
    import torch

    from anif.models.ensemble import load_model
    from anif.training.data import read_conformers, unknown_method_warning, unlabelled

    rng = np.random.default_rng(4)
    path = tmp_path / "comp6_like.h5"
    with h5py.File(path, "w") as f:
        for name, numbers, xyz, e0 in (("mol00", [8, 1, 1], WATER, -76.4), ("mol01", [6, 8, 1, 1, 1, 1], METHANOL,
                                                                             -115.7)):
            g = f.create_group("set").create_group(name) if "set" not in f else f["set"].create_group(name)
            g["species"] = np.array([{1: b"H", 6: b"C", 8: b"O"}[z] for z in numbers])
            g["coordinates"] = xyz + rng.normal(scale=0.04, size=(12, len(numbers), 3))
            g["energies"] = e0 + rng.normal(scale=0.005, size=12)
    data = read_conformers([path])
    assert not unlabelled(data).any() and "24 of 24 conformers carry no 'method'" in unknown_method_warning(data)
    torch.set_num_threads(1)
    code, out, err = run_anif(monkeypatch, capsys, "train", "--data", path, "--out", tmp_path / "m", "--members", 2,
                              "--folds", 2, "--arch", "small", "--max-epochs", 1)
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning:") and "no 'method'" in line]
    assert len(warnings) == 1
    assert load_model(str(tmp_path / "m")) is not None
    assert any("no 'method'" in w for w in json.loads((tmp_path / "m" / "model.json").read_text())["warnings"])
