"""`anif md` on ML/MM systems: prepared Amber and OpenMM inputs with --ml-atoms, a molecule in a
TIP3P box; sigma/rho of the ML region checked against torchani on the written frames."""

import json
import os
import subprocess
import sys

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from anif.md.dynamics import image_around
from anif.units import HARTREE_TO_KCAL_MOL
from conftest import float32_qbc_atol

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_anif(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "anif", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd)


def torchani_sigma(ani, numbers, coords_angstrom) -> tuple[float, float]:
    """(mean energy Ha, sigma kcal/mol) straight from torchani."""
    species = torch.tensor([list(numbers)], dtype=torch.long)
    x = torch.tensor(np.asarray(coords_angstrom)[None], dtype=torch.float32)
    with torch.no_grad():
        members = ani((species, x), ensemble_values=True).energies[:, 0]
    return members.mean().item(), members.std(unbiased=True).item() * HARTREE_TO_KCAL_MOL


def check_ml_sigma(out, ani, ml_atoms, numbers):
    """Every qbc.csv row's sigma/rho equals torchani's on the DCD frame of the same step (ML atoms
    made whole by mdtraj's imaging)."""
    rows = np.atleast_1d(np.genfromtxt(out / "qbc.csv", delimiter=",", names=True))
    traj = mdtraj.load_dcd(str(out / "trajectory.dcd"), top=str(out / "topology.pdb"))
    assert traj.n_frames == len(rows) > 1
    whole = image_around(traj, ml_atoms)
    for row, frame in zip(rows, whole.xyz):
        energy, sigma = torchani_sigma(ani, numbers, frame[ml_atoms] * 10)
        assert row["sigma_kcal_mol"] == pytest.approx(sigma, abs=float32_qbc_atol(energy))
        assert row["rho_kcal_mol"] == pytest.approx(row["sigma_kcal_mol"] / np.sqrt(len(ml_atoms)), rel=1e-4)
    return traj, whole


@pytest.fixture(scope="module")
def amber_water_box(tmp_path_factory):
    """A 2.2 nm TIP3P box written as Amber prmtop/inpcrd (ParmEd) and as System XML + PDB."""
    import parmed

    folder = tmp_path_factory.mktemp("amber")
    forcefield = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, boxSize=openmm.Vec3(2.2, 2.2, 2.2) * unit.nanometer, positiveIon="Na+",
                        negativeIon="Cl-", ionicStrength=0.3 * unit.molar)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=0.9 * unit.nanometer, constraints=None, rigidWater=False)
    structure = parmed.openmm.load_topology(modeller.topology, system, xyz=modeller.positions)
    structure.save(str(folder / "box.prmtop"))
    structure.save(str(folder / "box.inpcrd"))
    (folder / "box.xml").write_text(openmm.XmlSerializer.serialize(system))
    with open(folder / "box.pdb", "w") as fh:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, fh)
    water = next(r for r in modeller.topology.residues() if r.name == "HOH")
    return folder, [a.index for a in water.atoms()], water.index


@pytest.mark.parametrize("kind", ["prmtop", "xml"])
def test_prepared_system_ml_water(tmp_path, ani1x_torchani, amber_water_box, kind):
    folder, water_atoms, water_resid = amber_water_box
    inputs = (["--prmtop", folder / "box.prmtop", "--inpcrd", folder / "box.inpcrd"] if kind == "prmtop"
              else ["--system-xml", folder / "box.xml", "--pdb", folder / "box.pdb"])
    out = tmp_path / "run"
    result = run_anif("md", *inputs, "--ml-atoms", f"resid {water_resid}", "--steps", 30, "--report-every", 10,
                      "--out", out)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "md.json").read_text())
    assert record["ml_atoms"] == water_atoms and record["steps"] == 30
    check_ml_sigma(out, ani1x_torchani, water_atoms, [8, 1, 1])
    result = run_anif("analyze", out)
    assert result.returncode == 0, result.stderr
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["n_atoms"] == 3  # the ML water alone
    assert 0.5 < analysis["summary"]["radius_of_gyration_mean_angstrom"] < 1.0  # a whole water


def test_solvated_molecule_keeps_waters_and_solute_whole(tmp_path, ani1x_torchani):
    out = tmp_path / "solvated"
    result = run_anif("md", "--smiles", "CCO", "--solvent", "water", "--box", 2.0, "--steps", 40,
                      "--report-every", 10, "--out", out)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "md.json").read_text())
    assert record["ml_atoms"] == list(range(9)) and record["solvent"] == "water"
    assert record["mm"]["solute"] == "gaff-2.11" and record["mm"]["charges"] == "am1bcc"
    assert record["mm"]["versions"]["openmmforcefields"] and record["solute_in"] == "ml"
    traj, whole = check_ml_sigma(out, ani1x_torchani, list(range(9)), [6, 6, 8, 1, 1, 1, 1, 1, 1])
    waters = [r for r in traj.topology.residues if r.name == "HOH"]
    assert len(waters) > 200
    for frame in whole.xyz:  # every water keeps its O-H bonds in every frame (rigid TIP3P)
        for residue in waters[::20]:
            o, h1, h2 = (a.index for a in residue.atoms)
            assert np.linalg.norm(frame[o] - frame[h1]) == pytest.approx(0.09572, abs=1e-3)
    result = run_anif("analyze", out)
    assert result.returncode == 0, result.stderr
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["n_atoms"] == 9
    # ethanol made whole: radius of gyration of a 9-atom molecule, not of atoms spread over the box
    assert 1.0 < analysis["summary"]["radius_of_gyration_mean_angstrom"] < 2.0
    assert analysis["summary"]["rmsd_max_angstrom"] < 1.5


def test_solvated_molecule_mm_only(tmp_path, ani1x_torchani):
    """--mm-only: the solute in MM too (its GAFF bonds hold it together), qbc.csv still the ensemble's
    sigma on the ML atoms of every frame, and the potential that of the all-MM System."""
    out = tmp_path / "mm"
    result = run_anif("md", "--smiles", "CCO", "--solvent", "water", "--box", 2.0, "--steps", 30,
                      "--report-every", 10, "--mm-only", "--out", out)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "md.json").read_text())
    assert record["solute_in"] == "mm" and record["mm"]["solute"] == "gaff-2.11"
    traj, whole = check_ml_sigma(out, ani1x_torchani, list(range(9)), [6, 6, 8, 1, 1, 1, 1, 1, 1])
    # the potential in qbc.csv is the MM System's (lambda 0), recomputed here from the written frame
    from anif.md.mlmm import solvated_system
    from anif.structures import from_smiles

    built = solvated_system(from_smiles("CCO"), 2.0, smiles="CCO")
    context = openmm.Context(built.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPeriodicBoxVectors(*built.system.getDefaultPeriodicBoxVectors())
    context.setPositions(traj.xyz[-1].astype(np.float64))
    mm = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    rows = np.atleast_1d(np.genfromtxt(out / "qbc.csv", delimiter=",", names=True))
    assert rows["potential_kj_mol"][-1] == pytest.approx(mm, abs=2.0)  # DCD positions are float32


@pytest.mark.parametrize("args, message", [
    (["--ml-atoms", "resname XYZ"], "matches no atom"),
    (["--ml-atoms", "resname NA"], "not supported by the model"),
    (["--ml-atoms", "resname HOH and resid 0 to 3 or resname CL"], "not supported by the model"),
    (["--ml-atoms", "resid ("], "invalid --ml-atoms selection"),
    (["--ml-atoms", "resid 0 and element O"], "cuts the bond O-H"),  # a water's O without its hydrogens
    (["--ml-atoms", "index 1"], "cuts the bond H"),  # a lone hydrogen of a water
    ([], "needs --ml-atoms"),
])
def test_prepared_system_bad_selection(tmp_path, amber_water_box, args, message):
    folder, _, _ = amber_water_box
    result = run_anif("md", "--prmtop", folder / "box.prmtop", "--inpcrd", folder / "box.inpcrd", *args,
                      "--steps", 5, "--out", tmp_path / "bad")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_prmtop_inpcrd_atom_count_mismatch(tmp_path, amber_water_box):
    folder, _, _ = amber_water_box
    lines = (folder / "box.inpcrd").read_text().splitlines()
    # drop one atom's coordinates (a line holds two atoms) and fix the count in the header
    count = int(lines[1].split()[0])
    short = tmp_path / "short.inpcrd"
    short.write_text("\n".join([lines[0], f"{count - 2:6d}"] + lines[2:-2] + lines[-1:]) + "\n")
    result = run_anif("md", "--prmtop", folder / "box.prmtop", "--inpcrd", short, "--ml-atoms", "resid 0",
                      "--steps", 5, "--out", tmp_path / "bad")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
