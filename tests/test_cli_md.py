"""`anif energy`, `anif md`, `anif analyze` end to end, and their errors on bad input."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from anif.structures import read_structures
from anif.units import HARTREE_TO_KCAL_MOL
from conftest import float32_atol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def anif(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "anif", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": ROOT})


def write_xyz(path, frames):
    with open(path, "w") as fh:
        for atoms in frames:
            fh.write(f"{len(atoms)}\n\n")
            for sym, x, y, z in atoms:
                fh.write(f"{sym} {x} {y} {z}\n")
    return path


WATER = [("O", 0.0, 0.0, 0.117), ("H", 0.0, 0.757, -0.467), ("H", 0.0, -0.757, -0.467)]
METHANE = [("C", 0.0319, 0.0064, 0.0130), ("H", -0.8314, 0.3937, -0.2640), ("H", -0.6652, -0.8446, 0.2076),
           ("H", 0.4555, 0.5429, 0.8117), ("H", 0.6609, -0.1680, -0.9104)]


def test_energy_json_matches_torchani(tmp_path, ani1x_torchani):
    path = write_xyz(tmp_path / "two.xyz", [WATER, METHANE])
    result = anif("energy", "--input", path, "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 2
    for record, structure in zip(records, read_structures(path)):
        assert set(record) == {"n_atoms", "energy_hartree", "forces_hartree_per_angstrom", "member_energies_hartree",
                               "sigma_kcal_mol", "rho_kcal_mol"}
        species = torch.as_tensor(structure.numbers[None])
        x = torch.tensor(structure.coordinates[None], dtype=torch.float32, requires_grad=True)
        members = ani1x_torchani((species, x), ensemble_values=True).energies[:, 0]
        (grad,) = torch.autograd.grad(members.mean(), x)
        assert record["n_atoms"] == structure.n_atoms
        assert record["energy_hartree"] == pytest.approx(members.mean().item(), abs=2e-5)
        np.testing.assert_allclose(record["forces_hartree_per_angstrom"], -grad[0].numpy(), atol=2e-5)
        np.testing.assert_allclose(record["member_energies_hartree"], members.detach().numpy(),
                                   atol=float32_atol(members.detach().numpy()))
        sigma = members.std().item() * HARTREE_TO_KCAL_MOL
        assert record["sigma_kcal_mol"] == pytest.approx(sigma, abs=1e-3)
        assert record["rho_kcal_mol"] == pytest.approx(sigma / np.sqrt(structure.n_atoms), abs=1e-3)
    # methane at the torchani README geometry (its sanity value)
    assert records[1]["energy_hartree"] == pytest.approx(-40.45901870727539, abs=1e-5)


def test_energy_totals_of_a_large_molecule_keep_float64_digits(tmp_path, ani1x_torchani):
    """Self energies are added in float64: C60H122 (182 atoms, -2359 Ha) lost 0.06 kcal/mol to
    float32 rounding of the total; the float32 networks' own error is ~1e-4 kcal/mol."""
    from anif.structures import from_smiles, write_xyz as write_structures

    molecule = from_smiles("C" * 60, seed=0)
    path = tmp_path / "c60h122.xyz"
    write_structures([molecule], path)
    result = anif("energy", "--input", path, "--json")
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    model = copy.deepcopy(ani1x_torchani).double()
    species = torch.as_tensor(molecule.numbers[None])
    with torch.no_grad():
        members = model((species, torch.tensor(molecule.coordinates[None])), ensemble_values=True).energies[:, 0]
    # 2e-6 Ha = 0.0013 kcal/mol; one float32 ulp at 2359 Ha is 2.4e-4 Ha
    assert record["energy_hartree"] == pytest.approx(members.mean().item(), abs=2e-6)
    np.testing.assert_allclose(record["member_energies_hartree"], members.numpy(), rtol=0, atol=2e-6)


def kabsch_rmsd(a, b):
    a, b = a - a.mean(0), b - b.mean(0)
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    s[-1] *= d
    return np.sqrt(max((a ** 2).sum() + (b ** 2).sum() - 2 * s.sum(), 0.0) / len(a))


def test_md_and_analyze(tmp_path):
    out = tmp_path / "run"
    result = anif("md", "--smiles", "CCO", "--steps", 60, "--report-every", 10, "--temperature", 350,
                  "--seed", 3, "--out", out)
    assert result.returncode == 0, result.stderr
    assert {"topology.pdb", "trajectory.dcd", "qbc.csv"} <= set(os.listdir(out))
    lines = (out / "qbc.csv").read_text().splitlines()
    assert lines[0] == "step,time_ps,potential_kj_mol,temperature_k,sigma_kcal_mol,rho_kcal_mol"
    assert [int(line.split(",")[0]) for line in lines[1:]] == [10, 20, 30, 40, 50, 60]
    result = anif("analyze", out)
    assert result.returncode == 0, result.stderr
    analysis = json.loads((out / "analysis.json").read_text())
    for name in ("rmsd.png", "radius_of_gyration.png", "rho.png"):
        assert (out / name).stat().st_size > 1000
    import mdtraj

    traj = mdtraj.load_dcd(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    xyz = traj.xyz * 10
    assert analysis["n_frames"] == 6
    expected_rmsd = [kabsch_rmsd(xyz[0], frame) for frame in xyz]
    np.testing.assert_allclose(analysis["rmsd_angstrom"], expected_rmsd, atol=1e-3)
    expected_rg = [np.sqrt(((f - f.mean(0)) ** 2).sum(1).mean()) for f in xyz]
    np.testing.assert_allclose(analysis["radius_of_gyration_angstrom"], expected_rg, atol=1e-4)
    rho = np.genfromtxt(out / "qbc.csv", delimiter=",", names=True)["rho_kcal_mol"]
    np.testing.assert_allclose(analysis["rho_kcal_mol"], rho)
    assert max(expected_rmsd) > 0.01  # atoms moved
    # the PDB the run wrote is valid `anif energy` input (PDB reader)
    result = anif("energy", "--input", out / "topology.pdb", "--json")
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["n_atoms"] == 9 and record["energy_hartree"] < -150


BAD_INPUTS = {
    "invalid_smiles": (["md", "--smiles", "C1CC(", "--steps", 5], "invalid SMILES"),
    "charged": (["md", "--smiles", "[NH4+]", "--steps", 5], "charged"),
    "radical": (["md", "--smiles", "[CH3]", "--steps", 5], "open-shell"),
    "missing_file": (["energy", "--input", "{tmp}/nope.xyz"], "no such file"),
    "corrupt_xyz": (["energy", "--input", "{tmp}/corrupt.xyz"], "expected an atom count"),
    "corrupt_sdf": (["energy", "--input", "{tmp}/corrupt.sdf"], "could not be parsed"),
    "unsupported_element": (["energy", "--input", "{tmp}/hcl.xyz"], "Cl not supported"),
    "nan": (["energy", "--input", "{tmp}/nan.xyz"], "NaN"),
    "overlap": (["energy", "--input", "{tmp}/overlap.xyz"], "overlap"),
    "unknown_model": (["energy", "--input", "{tmp}/water.xyz", "--model", "{tmp}/nomodel"], "unknown model"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_line_error(tmp_path, case):
    (tmp_path / "corrupt.xyz").write_text("three\nwater\nO 0 0 0\n")
    (tmp_path / "corrupt.sdf").write_text("not a molfile\n\n\n  garbage\n$$$$\n")
    write_xyz(tmp_path / "hcl.xyz", [[("H", 0, 0, 0), ("Cl", 0, 0, 1.27)]])
    write_xyz(tmp_path / "nan.xyz", [[("O", 0, 0, "nan"), ("H", 0, 0.757, -0.467), ("H", 0, -0.757, -0.467)]])
    write_xyz(tmp_path / "overlap.xyz", [[("O", 0, 0, 0), ("H", 0, 0, 0.1), ("H", 0, 0.9, 0)]])
    write_xyz(tmp_path / "water.xyz", [WATER])
    args, message = BAD_INPUTS[case]
    args = [a.format(tmp=tmp_path) if isinstance(a, str) else a for a in args]
    if args[0] == "md":
        args += ["--out", tmp_path / "out"]
    result = anif(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_energy_and_md_read_the_store_format(tmp_path, s66x8_path):
    """`anif energy` and `anif md` take the ANI-format HDF5 every other command writes."""
    from anif.datasets.store import DatasetStore
    from anif.models.ensemble import evaluate, load_model

    source = DatasetStore(s66x8_path, "r")
    group = source.groups()[0]
    data = source.read(group)
    store = DatasetStore(tmp_path / "two.h5", "a", kind="labels")
    store.append(None, data["species"], data["coordinates"][:2], data["energies"][:2], method="wb97x/6-31g*")
    result = anif("energy", "--input", tmp_path / "two.h5", "--json")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    model = load_model("ani1x")
    expected = evaluate(model, np.stack([data["species"]] * 2), data["coordinates"][:2], forces=False).energy
    np.testing.assert_allclose([r["energy_hartree"] for r in records], expected, atol=float32_atol(expected))
    md = anif("md", "--input", tmp_path / "two.h5", "--steps", 20, "--out", tmp_path / "md")
    assert md.returncode == 0, md.stderr
    assert json.loads((tmp_path / "md" / "md.json").read_text())["steps"] == 20
