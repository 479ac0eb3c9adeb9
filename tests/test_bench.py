"""`anif bench comp6` on S66x8 vs an independent torchani + numpy computation; COMP6 conventions; bad input."""

import copy
import itertools
import json

import h5py
import numpy as np
import pytest
import torch

from anif.units import HARTREE_TO_KCAL_MOL as KCAL
from conftest import run_anif


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def independent_s66x8(ani1x_torchani, s66x8_path):
    """Per molecule: reference E (Ha), F (Ha/A, = -stored gradient), ANI-1x E and F, straight from h5py + torchani."""
    model = copy.deepcopy(ani1x_torchani).double()
    out = []
    with h5py.File(s66x8_path, "r") as f:
        for name in sorted(f["s66x8"]):
            g = f["s66x8"][name]
            symbols = [s.decode() for s in g["species"][()]]
            z = torch.tensor([{"H": 1, "C": 6, "N": 7, "O": 8}[s] for s in symbols])
            x = torch.tensor(g["coordinates"][()], dtype=torch.float64, requires_grad=True)
            energy = model((z.expand(x.shape[0], -1), x)).energies
            (grad,) = torch.autograd.grad(energy.sum(), x)
            out.append((g["energies"][()], -g["forces"][()].astype(np.float64), energy.detach().numpy(), -grad.numpy()))
    return out


def independent_metrics(molecules, max_energy=None):
    e, de, f, n = [], [], [], 0
    for e_ref, f_ref, e_ani, f_ani in molecules:
        keep = np.ones(len(e_ref), bool) if max_energy is None else (e_ref - e_ref.min()) * KCAL <= max_energy
        err = (e_ani - e_ref)[keep] * KCAL
        e.extend(err)
        de.extend(err[i] - err[j] for i, j in itertools.combinations(range(len(err)), 2))
        f.extend(((f_ani - f_ref)[keep] * KCAL).ravel())
        n += int(keep.sum())
    row = {"n_conformers": n}
    for key, values in (("E", e), ("dE", de), ("F", f)):
        v = np.asarray(values)
        row[f"{key}_mae"], row[f"{key}_rmse"] = np.abs(v).mean(), np.sqrt((v**2).mean())
    return row


@pytest.mark.parametrize("max_energy", [None, 3.0])
def test_bench_s66x8_matches_independent(monkeypatch, capsys, tmp_path, s66x8_path, independent_s66x8, max_energy):
    args = ["bench", "comp6", "--model", "ani1x", "--data", s66x8_path, "--json-out", tmp_path / "m.json", "--threads", 1]
    if max_energy is None:
        args += ["--plots", tmp_path / "plots"]
    else:
        args += ["--max-energy", max_energy]
    code, out, err = run_anif(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "conformers/s" in err and "S66x8" in out
    got = json.loads((tmp_path / "m.json").read_text())
    assert set(got) == {"S66x8", "overall"}
    want = independent_metrics(independent_s66x8, max_energy)
    for name in ("S66x8", "overall"):
        assert set(got[name]) == set(want)
        assert got[name]["n_conformers"] == want["n_conformers"]
        for key, value in want.items():
            assert got[name][key] == pytest.approx(value, rel=1e-6), key
    if max_energy is None:
        assert want["n_conformers"] == 528
        for png in ("force_parity.png", "error_vs_rho.png", "subset_errors.png"):
            data = (tmp_path / "plots" / png).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    else:
        assert 66 <= want["n_conformers"] < 528  # the window really removes conformers


def test_comp6_conventions(independent_s66x8, s66x8_path):
    """Stored S66x8 'forces' are gradients in Ha/A: minus them integrates to the energy change."""
    from anif.datasets.comp6 import read_comp6_file

    e_ref = np.concatenate([m[0] for m in independent_s66x8])
    e_ani = np.concatenate([m[2] for m in independent_s66x8])
    assert np.abs(e_ani - e_ref).mean() * KCAL < 3.0  # Hartree totals, same level as ANI-1x
    # along each dimer's separation path, E_j - E_i = -integral F.dx (trapezoid over short steps)
    de, work = [], []
    molecules = read_comp6_file(s66x8_path)
    for m in molecules:
        order = np.argsort(np.linalg.norm((m.coordinates - m.coordinates[0]).reshape(len(m.energies), -1), axis=1))
        for i, j in zip(order[:-1], order[1:]):
            dx = m.coordinates[j] - m.coordinates[i]
            if np.linalg.norm(dx) < 0.6:
                de.append(m.energies[j] - m.energies[i])
                work.append(-0.5 * np.sum((m.forces[i] + m.forces[j]) * dx))
    de, work = np.array(de), np.array(work)
    assert len(de) > 200
    assert np.corrcoef(de, work)[0, 1] > 0.99
    assert (de @ work) / (work @ work) == pytest.approx(1.0, abs=0.05)  # sign and Ha/A (Ha/Bohr data would give 1.89)
    f_ref = np.concatenate([m[1].ravel() for m in independent_s66x8])
    f_ani = np.concatenate([m[3].ravel() for m in independent_s66x8])
    assert f_ref @ f_ani / np.linalg.norm(f_ref) / np.linalg.norm(f_ani) > 0.8  # along ANI-1x forces
    water = molecules[0]
    assert water.subset == "S66x8" and list(water.species) == [8, 1, 1, 8, 1, 1]
    oh = np.linalg.norm(water.coordinates[:, 0] - water.coordinates[:, 1], axis=1)
    assert np.all((0.9 < oh) & (oh < 1.05))  # Angstrom
    np.testing.assert_allclose(water.forces, independent_s66x8[0][1])


def test_bench_bad_inputs(monkeypatch, capsys, tmp_path, s66x8_path):
    from anif.datasets.store import DatasetStore
    from anif.models.ensemble import StockAniEnsemble, build_ani, save_model

    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"not an hdf5 file at all" * 10)
    other = tmp_path / "images.h5"
    with h5py.File(other, "w") as f:
        f["pixels"] = np.zeros((4, 4))
    sulfur = tmp_path / "h2s.h5"
    DatasetStore(sulfur).append("h2s", ["S", "H", "H"], [[[0, 0, 0], [1.34, 0, 0], [0, 1.34, 0]]], [-399.0])
    hco = build_ani(["H", "C", "O"], {s: [240, 8, 1] for s in "HCO"}, [-0.5, -38.0, -75.0], members=2)
    save_model(StockAniEnsemble(hco), tmp_path / "hco")
    cases = [
        (["--model", "ani1x", "--data", corrupt], "not a readable HDF5"),
        (["--model", "ani1x", "--data", other], "not an ANI-format dataset"),
        (["--model", "ani1x", "--data", sulfur], "element(s) S not supported"),
        (["--model", tmp_path / "hco", "--data", s66x8_path], "element(s) N not supported"),
        (["--model", "ani1x", "--data", tmp_path / "missing.h5"], "no such file"),
    ]
    for args, message in cases:
        code, out, err = run_anif(monkeypatch, capsys, "bench", "comp6", *args)
        assert code == 1, (args, err)
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    code, _, err = run_anif(monkeypatch, capsys, "data", "info", corrupt)
    assert code == 1 and "not a readable HDF5" in err


def test_data_info_cli(monkeypatch, capsys, tmp_path, s66x8_path):
    code, out, _ = run_anif(monkeypatch, capsys, "data", "info", s66x8_path, "--json-out", tmp_path / "i.json")
    assert code == 0 and "528" in out
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["molecules"] == 66 and info["atoms_min"] == 6 and info["atoms_max"] == 34
    code, out, _ = run_anif(monkeypatch, capsys, "data", "merge", tmp_path / "m.h5", s66x8_path)
    assert code == 0
    code, out, _ = run_anif(monkeypatch, capsys, "data", "split", tmp_path / "m.h5", "--out", tmp_path / "a.h5",
                           "--out", tmp_path / "b.h5", "--fraction", 0.5, "--fraction", 0.5)
    assert code == 0
    from anif.datasets.store import DatasetStore

    a, b = DatasetStore(tmp_path / "a.h5", "r"), DatasetStore(tmp_path / "b.h5", "r")
    assert a.num_conformers() + b.num_conformers() == 528 and not set(a.groups()) & set(b.groups())
