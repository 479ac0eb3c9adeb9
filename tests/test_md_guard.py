"""MD that leaves the model's domain is stopped and said so; a failed run never damages an earlier one."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from anif.openmm_plugin.guard import bond_changes, bond_graph, isolated_atoms
from anif.structures import from_smiles, read_structures


def run_anif(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "anif", *map(str, args)], capture_output=True, text=True, env=env)


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_bond_graph_and_changes_follow_distances():
    ethanol = from_smiles("CCO", seed=0)
    bonds = bond_graph(ethanol.numbers, ethanol.coordinates)
    assert bonds == {tuple(sorted(b)) for b in ethanol.bonds}  # RDKit's bonds, found from distances alone
    assert bond_changes(ethanol.numbers, bonds, ethanol.coordinates) is None
    stretched = ethanol.coordinates.copy()
    h = next(j for i, j in sorted(bonds) if i == 0 and ethanol.numbers[j] == 1)
    stretched[h] = stretched[0] + (stretched[h] - stretched[0]) * 2.0  # C-H 1.09 -> 2.18 A
    assert f"C0-H{h}" in bond_changes(ethanol.numbers, bonds, stretched)
    assert isolated_atoms(ethanol.coordinates) == []
    far = ethanol.coordinates.copy()
    far[h] += 50.0
    assert isolated_atoms(far) == [h]


def test_minimisation_that_breaks_bonds_is_undone(tmp_path):
    # ANI-1x rates O + 2 H below bound water: minimisation would dissociate it
    result = run_anif("md", "--smiles", "O", "--steps", 50, "--report-every", 10, "--out", tmp_path / "water")
    assert result.returncode == 0, result.stderr
    assert "minimisation changed the bond graph" in result.stderr
    record = json.loads((tmp_path / "water" / "md.json").read_text())
    assert record["outcome"] == "completed" and len(record["warnings"]) == 1
    (water,) = read_structures(tmp_path / "water" / "topology.pdb")
    assert np.linalg.norm(water.coordinates[1:] - water.coordinates[0], axis=1).max() < 1.1


def test_exploding_md_stops_keeps_frames_and_spares_earlier_run(tmp_path):
    out = tmp_path / "run"
    good = run_anif("md", "--smiles", "CCO", "--steps", 40, "--out", out)
    assert good.returncode == 0, good.stderr
    before = digest(out)
    # a failing run (unknown platform) into the same folder leaves the good run byte-identical
    failed = run_anif("md", "--smiles", "CCO", "--steps", 40, "--platform", "Nope", "--out", out)
    assert failed.returncode == 1 and failed.stderr.startswith("error: ") and "Nope" in failed.stderr
    assert digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial folder left behind
    # an 8 fs timestep blows ethanol apart: stopped with the reason, frames so far kept, exit 3
    blown = run_anif("md", "--smiles", "CCO", "--steps", 400, "--timestep", 8, "--out", tmp_path / "blown")
    assert blown.returncode == 3, blown.stderr
    assert "left the model's domain" in blown.stderr
    record = json.loads((tmp_path / "blown" / "md.json").read_text())
    assert record["outcome"] == "left_model_domain" and record["steps"] < 400
    assert "bond" in record["reason"] or "neighbour" in record["reason"] or "finite" in record["reason"]
    assert (tmp_path / "blown" / "trajectory.dcd").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-100"], "--temperature"),
    (["--timestep", "0"], "--timestep"),
    (["--friction", "-5"], "--friction"),
    (["--steps", "0"], "--steps"),
])
def test_bad_md_numbers_are_usage_errors(tmp_path, args, message):
    result = run_anif("md", "--smiles", "C", "--steps", 10, "--out", tmp_path / "x", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_unwritable_out_is_refused_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_anif("md", "--smiles", "CCO", "--steps", 10, "--out", blocker / "run")
    assert result.returncode == 1 and result.stderr.startswith("error: cannot write to")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("integrator", ["qbc", "langevin"])
def test_rho_far_above_rho_hat_stops_with_any_integrator(ani1x, integrator):
    """The rho check reads sigma from the QBC integrator or, with any other integrator, from the State."""
    import openmm
    from openmm import app, unit

    from anif.openmm_plugin import QBCLangevinIntegrator, create_system, read_qbc
    from anif.openmm_plugin.guard import DomainGuard, LeftModelDomain
    from anif.openmm_plugin.builder import to_topology

    ethanol = from_smiles("CCO", seed=0)
    system, _ = create_system(ani1x, ethanol.numbers)
    args = (300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    chosen = QBCLangevinIntegrator(*args) if integrator == "qbc" else openmm.LangevinMiddleIntegrator(*args)
    simulation = app.Simulation(to_topology(ethanol), system, chosen, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(ethanol.coordinates * 0.1)
    rho = read_qbc(simulation.context)[1]
    assert rho > 0.01
    # a limit above every rho seen lets the run go on; one below stops it after `rho_patience` checks
    simulation.reporters.append(DomainGuard(2, range(ethanol.n_atoms), ethanol.numbers, ethanol.coordinates,
                                            rho_limit=100 * rho, rho_patience=3))
    simulation.step(10)
    simulation.reporters[:] = [DomainGuard(2, range(ethanol.n_atoms), ethanol.numbers, ethanol.coordinates,
                                           rho_limit=rho / 100, rho_patience=3)]
    with pytest.raises(LeftModelDomain, match="rho stayed above") as stopped:
        simulation.step(20)
    assert stopped.value.step == 16  # checks at steps 12, 14, 16
