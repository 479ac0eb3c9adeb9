"""What OpenMM users do next with the ensemble force: copies, XML, checkpoints, openmmml's mixed
ML/MM Systems (openmmml's own ANI test pattern), sigma read from any handle of the force."""

import copy

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from anif.openmm_plugin.builder import to_topology
from anif.openmm_plugin import (
    QBCLangevinIntegrator,
    QBCReporter,
    create_system,
    ensemble_atom_count,
    find_ensemble_force,
    read_qbc,
)
from anif.structures import from_smiles
from anif.units import HARTREE_TO_KCAL_MOL, HARTREE_TO_KJ_MOL
from conftest import float32_atol, float32_qbc_atol

KJ_NM = unit.kilojoule_per_mole / unit.nanometer
KJ = unit.kilojoule_per_mole

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ethanol():
    return from_smiles("CCO", seed=0)


def evaluate_system(system, positions, platform="CPU"):
    """(energy kJ/mol, forces kJ/mol/nm, sigma kcal/mol, rho) of a System at positions (nm)."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    sigma, rho = read_qbc(context)
    return state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ_NM), sigma, rho


def torchani_qbc(ani, numbers, coords_angstrom):
    """(energy Ha, sigma kcal/mol) straight from torchani."""
    species = torch.tensor([list(numbers)], dtype=torch.long)
    x = torch.tensor(np.asarray(coords_angstrom)[None], dtype=torch.float32)
    with torch.no_grad():
        members = ani((species, x), ensemble_values=True).energies[:, 0]
    return members.mean().item(), members.std(unbiased=True).item() * HARTREE_TO_KCAL_MOL


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_copies_and_xml_round_trip_keep_energy_forces_and_sigma(ani1x, ethanol, backend):
    system, force = create_system(ani1x, ethanol.numbers, backend=backend)
    x = ethanol.coordinates / 10
    reference = evaluate_system(system, x)
    assert reference[2] > 0.05
    force_copy = openmm.System()
    for i in range(system.getNumParticles()):
        force_copy.addParticle(system.getParticleMass(i))
    force_copy.addForce(copy.deepcopy(system.getForce(0)))  # a handle from getForce, deep-copied
    copies = {
        "deepcopy": copy.deepcopy(system),
        "xml": openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system)),
        "force deepcopy": force_copy,
    }
    for name, other in copies.items():
        energy, forces, sigma, rho = evaluate_system(other, x)
        assert energy == pytest.approx(reference[0], abs=1e-6), name
        np.testing.assert_allclose(forces, reference[1], atol=1e-6, err_msg=name)
        assert (sigma, rho) == pytest.approx(reference[2:], abs=1e-9), name
        handle = other.getForce(0)
        assert ensemble_atom_count(handle) == ethanol.n_atoms
        context = openmm.Context(other, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(x)
        assert read_qbc(context, handle) == pytest.approx(reference[2:], abs=1e-9), name


def test_state_and_checkpoint_restore_sigma(tmp_path, ani1x, ethanol):
    system, _ = create_system(ani1x, ethanol.numbers)
    integrator = QBCLangevinIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    simulation = app.Simulation(to_topology(ethanol), system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(ethanol.coordinates / 10)
    simulation.context.setVelocitiesToTemperature(300, 1)
    simulation.step(20)
    saved = read_qbc(simulation.context)
    simulation.saveState(str(tmp_path / "state.xml"))
    simulation.saveCheckpoint(str(tmp_path / "state.chk"))
    simulation.step(20)
    assert read_qbc(simulation.context) != pytest.approx(saved, abs=1e-6)
    simulation.loadState(str(tmp_path / "state.xml"))
    assert read_qbc(simulation.context) == pytest.approx(saved, abs=1e-9)
    simulation.step(20)
    simulation.loadCheckpoint(str(tmp_path / "state.chk"))
    assert read_qbc(simulation.context) == pytest.approx(saved, abs=1e-9)
    # a Simulation rebuilt from the serialized System and the saved State
    rebuilt_system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    rebuilt = app.Simulation(to_topology(ethanol), rebuilt_system, openmm.VerletIntegrator(0.0005),
                             openmm.Platform.getPlatformByName("CPU"))
    rebuilt.loadState(str(tmp_path / "state.xml"))
    assert read_qbc(rebuilt.context) == pytest.approx(saved, abs=1e-9)


@pytest.mark.parametrize("integrator_kind", ["LangevinMiddle", "QBCLangevin"])
def test_openmmml_route_reports_sigma_every_step(tmp_path, ani1x_torchani, ethanol, integrator_kind):
    from openmmml import MLPotential

    system = MLPotential("ani1x").createSystem(to_topology(ethanol))
    integrator = {"LangevinMiddle": openmm.LangevinMiddleIntegrator, "QBCLangevin": QBCLangevinIntegrator}[
        integrator_kind](300, 1, 0.0005)
    simulation = app.Simulation(to_topology(ethanol), system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(ethanol.coordinates / 10)
    frames = []

    class Frames:
        def describeNextReport(self, sim):
            return {"steps": 1, "periodic": None, "include": ["positions"]}

        def report(self, sim, state):
            frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))

    reporter = QBCReporter(str(tmp_path / "qbc.csv"), 1)  # finds the force itself
    simulation.reporters += [reporter, Frames()]
    simulation.step(5)
    reporter.close()
    rows = np.atleast_1d(np.genfromtxt(tmp_path / "qbc.csv", delimiter=",", names=True))
    assert len(rows) == 5
    for row, x in zip(rows, frames):
        energy, sigma = torchani_qbc(ani1x_torchani, ethanol.numbers, x)
        assert row["sigma_kcal_mol"] == pytest.approx(sigma, abs=float32_qbc_atol(energy))
        assert row["rho_kcal_mol"] == pytest.approx(sigma / np.sqrt(ethanol.n_atoms),
                                                    abs=float32_qbc_atol(energy, ethanol.n_atoms))
        assert row["potential_kj_mol"] == pytest.approx(energy * HARTREE_TO_KJ_MOL, abs=float32_atol(energy) * HARTREE_TO_KJ_MOL)


@pytest.mark.parametrize("platform", [openmm.Platform.getPlatform(i).getName()
                                      for i in range(openmm.Platform.getNumPlatforms())
                                      if openmm.Platform.getPlatform(i).getName() != "OpenCL"])
def test_simulate_molecule_on_every_platform(ani1x_torchani, ethanol, platform):
    """openmmml's test pattern: the potential simulates a molecule on every platform."""
    from openmmml import MLPotential

    system = MLPotential("ani1x").createSystem(to_topology(ethanol))
    energy, forces, sigma, _ = evaluate_system(system, ethanol.coordinates / 10, platform)
    expected, expected_sigma = torchani_qbc(ani1x_torchani, ethanol.numbers, ethanol.coordinates)
    assert energy == pytest.approx(expected * HARTREE_TO_KJ_MOL, abs=float32_atol(expected) * HARTREE_TO_KJ_MOL)
    assert sigma == pytest.approx(expected_sigma, abs=float32_qbc_atol(expected))
    integrator = openmm.LangevinMiddleIntegrator(300, 1, 0.0005)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(ethanol.coordinates / 10)
    integrator.step(20)
    assert np.isfinite(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ))


@pytest.fixture(scope="module")
def water_box():
    """A 2.2 nm TIP3P box; water 0 straddles the x = 0 face: its atoms are wrapped into the box
    separately, so they lie on opposite sides of it (2 nm apart in raw coordinates)."""
    forcefield = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, boxSize=openmm.Vec3(2.2, 2.2, 2.2) * unit.nanometer)
    positions = np.array(modeller.positions.value_in_unit(unit.nanometer))
    positions[:, 0] -= positions[:3, 0].mean()  # water 0 centred on the x = 0 face
    positions[:, 0] %= 2.2
    assert np.ptp(positions[:3, 0]) > 1.5  # really split across the boundary
    mm_system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                        nonbondedCutoff=0.9 * unit.nanometer, constraints=None, rigidWater=False)
    return modeller.topology, mm_system, positions


def test_mixed_system_water_in_pme_box(ani1x_torchani, water_box):
    """openmmml's pattern: one ML water in a TIP3P PME box, interpolated == direct, lambda 0 == MM."""
    from openmmml import MLPotential

    topology, mm_system, positions = water_box
    ml_atoms = [0, 1, 2]
    potential = MLPotential("ani1x")
    direct = potential.createMixedSystem(topology, mm_system, ml_atoms)
    interpolated = potential.createMixedSystem(topology, mm_system, ml_atoms, interpolate=True)
    e_direct, f_direct, sigma_direct, rho_direct = evaluate_system(direct, positions)
    e_interp, f_interp, sigma_interp, rho_interp = evaluate_system(interpolated, positions)
    assert e_interp == pytest.approx(e_direct, abs=1e-3)
    np.testing.assert_allclose(f_interp, f_direct, rtol=1e-6, atol=1e-2)  # float32 PME forces to ~1e5
    assert (sigma_interp, rho_interp) == pytest.approx((sigma_direct, rho_direct), abs=1e-9)
    assert ensemble_atom_count(find_ensemble_force(interpolated)) == 3
    # sigma of the ML region: torchani on the water made whole
    water = positions[:3] * 10
    box = 22.0
    water[1:] -= box * np.round((water[1:] - water[0]) / box)
    water_energy, sigma_ref = torchani_qbc(ani1x_torchani, [8, 1, 1], water)
    assert sigma_direct == pytest.approx(sigma_ref, abs=float32_qbc_atol(water_energy))
    # lambda_interpolate = 0: the pure MM System
    context = openmm.Context(interpolated, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    context.setParameter("lambda_interpolate", 0.0)
    e_lambda0 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)
    e_mm = evaluate_mm(mm_system, positions)
    assert e_lambda0 == pytest.approx(e_mm, abs=1e-2)
    context.setParameter("lambda_interpolate", 0.5)
    e_half = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)
    assert e_half == pytest.approx(0.5 * (e_mm + e_direct), abs=1e-2)
    # the ML force group alone is image invariant (water 0 moved by a box vector)
    ml_group = find_ensemble_force(direct).getForceGroup()
    moved = positions.copy()
    moved[:3, 0] += 2.2
    ml_energy = []
    for x in (positions, moved):
        context = openmm.Context(direct, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(x)
        ml_energy.append(context.getState(getEnergy=True, groups={ml_group}).getPotentialEnergy().value_in_unit(KJ))
    assert ml_energy[0] == pytest.approx(ml_energy[1], abs=1e-3)


def evaluate_mm(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)


@pytest.mark.parametrize("interpolate", [False, True])
def test_mixed_system_md_reports_ml_sigma_every_step(tmp_path, water_box, interpolate):
    from openmmml import MLPotential

    topology, mm_system, positions = water_box
    system = MLPotential("ani1x").createMixedSystem(topology, mm_system, [0, 1, 2], interpolate=interpolate)
    integrator = QBCLangevinIntegrator(300, 1, 0.0005)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(positions)
    reporter = QBCReporter(str(tmp_path / "qbc.csv"), 1)
    simulation.reporters.append(reporter)
    simulation.step(3)
    reporter.close()
    rows = np.atleast_1d(np.genfromtxt(tmp_path / "qbc.csv", delimiter=",", names=True))
    assert len(rows) == 3
    expected = read_qbc(simulation.context)
    assert rows["sigma_kcal_mol"][-1] == pytest.approx(expected[0], abs=1e-6)
    assert rows["rho_kcal_mol"][-1] == pytest.approx(expected[1], abs=1e-6)
    assert np.all(rows["sigma_kcal_mol"] > 0)
