"""The ANI ensemble as an OpenMM force, checked against direct torchani and finite differences."""

import copy

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from anif.models.ensemble import evaluate, load_model
from anif.openmm_plugin import (
    QBCLangevinIntegrator,
    QBCReporter,
    RhoThresholdExceeded,
    create_force,
    create_system,
    ensemble_atom_count,
    read_qbc,
)
from anif.structures import from_smiles
from anif.units import HARTREE_TO_KCAL_MOL, HARTREE_TO_KJ_MOL
from conftest import float32_atol, float32_qbc_atol

KJ_NM = unit.kilojoule_per_mole / unit.nanometer


@pytest.fixture(scope="module")
def paracetamol():
    return from_smiles("CC(=O)Nc1ccc(O)cc1", seed=1)


def torchani_reference(ani, numbers, coords, cell=None):
    """Mean energy (Ha), forces (Ha/A), sigma (Ha) straight from torchani."""
    species = torch.tensor([numbers], dtype=torch.long)
    x = torch.tensor(np.asarray(coords)[None], dtype=torch.float32, requires_grad=True)
    kwargs = {}
    if cell is not None:
        kwargs = {"cell": torch.tensor(cell, dtype=torch.float32), "pbc": torch.ones(3, dtype=torch.bool)}
    members = ani((species, x), ensemble_values=True, **kwargs).energies[:, 0]
    energy = members.mean()
    (grad,) = torch.autograd.grad(energy, x)
    return energy.item(), -grad[0].numpy(), members.std(unbiased=True).item()


def context_for(system, platform="CPU"):
    return openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName(platform))


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_force_matches_torchani(ani1x, ani1x_torchani, paracetamol, backend):
    system, force = create_system(ani1x, paracetamol.numbers, backend=backend)
    context = context_for(system)
    context.setPositions(paracetamol.coordinates / 10)
    state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / HARTREE_TO_KJ_MOL
    forces = state.getForces(asNumpy=True).value_in_unit(KJ_NM) / HARTREE_TO_KJ_MOL / 10
    ref_e, ref_f, ref_sigma = torchani_reference(ani1x_torchani, list(paracetamol.numbers), paracetamol.coordinates)
    sigma, rho = read_qbc(state, force)
    assert energy == pytest.approx(ref_e, abs=float32_atol(ref_e))  # float32 round-off on ~500 Ha
    np.testing.assert_allclose(forces, ref_f, atol=2e-5)
    assert sigma == pytest.approx(ref_sigma * HARTREE_TO_KCAL_MOL, abs=float32_qbc_atol(ref_e))
    assert rho == pytest.approx(sigma / np.sqrt(paracetamol.n_atoms))
    assert sigma > 0.1  # members really disagree, so the check has teeth


def test_forces_equal_finite_differences():
    model = load_model("ani1x").double()
    mol = from_smiles("CO", seed=3)
    system, _ = create_system(model, mol.numbers)
    context = context_for(system, "Reference")
    x0 = mol.coordinates / 10

    def energy(x):
        context.setPositions(x)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    context.setPositions(x0)
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(KJ_NM)
    h = 1e-5  # nm
    fd = np.zeros_like(x0)
    for i in range(len(x0)):
        for k in range(3):
            xp, xm = x0.copy(), x0.copy()
            xp[i, k] += h
            xm[i, k] -= h
            fd[i, k] = -(energy(xp) - energy(xm)) / (2 * h)
    np.testing.assert_allclose(forces, fd, atol=1e-4 * np.abs(forces).max())


def test_nve_energy_drift():
    """1 ps of NVE at 0.5 fs (TorchForce, float32): total energy drifts little."""
    model = load_model("ani1x")
    mol = from_smiles("CO", seed=0)
    system, _ = create_system(model, mol.numbers)
    integrator = openmm.VerletIntegrator(0.5 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(mol.coordinates / 10)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    totals = []
    for _ in range(100):
        integrator.step(20)
        s = context.getState(getEnergy=True)
        totals.append((s.getPotentialEnergy() + s.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    totals = np.array(totals)
    drift = totals[-1] - totals[0]
    fluctuation = totals.std()
    kinetic = s.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    print(f"NVE 1 ps: drift {drift:.4f} kJ/mol, std {fluctuation:.4f} kJ/mol, kinetic {kinetic:.2f} kJ/mol")
    assert abs(drift) < 0.5  # kJ/mol over 1 ps for 6 atoms
    assert fluctuation < 0.5
    assert kinetic > 1.0  # the molecule really moved


def test_openmmml_route_matches_direct(ani1x, paracetamol):
    from openmmml import MLPotential

    from anif.openmm_plugin.builder import to_topology

    topology = to_topology(paracetamol)
    system = MLPotential("ani1x").createSystem(topology)
    context = context_for(system)
    context.setPositions(paracetamol.coordinates / 10)
    via_openmmml = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    direct_system, _ = create_system(load_model("ani1x"), paracetamol.numbers)  # the model openmmml loads
    direct = context_for(direct_system)
    direct.setPositions(paracetamol.coordinates / 10)
    expected = direct.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert via_openmmml == pytest.approx(expected, abs=1e-3)


def test_openmmml_anif_model_dir(tmp_path, ani1x, paracetamol):
    from openmmml import MLPotential

    from anif.openmm_plugin.builder import to_topology
    from anif.models.ensemble import save_model

    save_model(ani1x, tmp_path / "model")
    system = MLPotential("anif", model=str(tmp_path / "model")).createSystem(to_topology(paracetamol))
    context = context_for(system)
    context.setPositions(paracetamol.coordinates / 10)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    # a float64 reference: float32 totals of the stock path round by 0.16 kJ/mol at this magnitude
    reference = copy.deepcopy(ani1x).double()
    expected = evaluate(reference, paracetamol.numbers, paracetamol.coordinates).energy[0] * HARTREE_TO_KJ_MOL
    assert energy == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_periodic_translation_invariance_and_reference(ani1x, ani1x_torchani, backend):
    """Two waters that touch only across the boundary of a 1.2 nm box.

    Shifting everything by box vectors changes nothing; the energy equals torchani's pbc
    energy and the isolated energy of the pair made whole (water 2 moved by -a).
    """
    water = from_smiles("O", seed=0)
    w1 = water.coordinates - water.coordinates.mean(0) + [0.8, 6.0, 6.0]
    w2 = water.coordinates - water.coordinates.mean(0) + [12.0 - 2.0, 6.3, 6.1]  # 2.8 A away through x = 0
    coords = np.concatenate([w1, w2])
    numbers = np.concatenate([water.numbers, water.numbers])
    box = np.eye(3) * 1.2  # nm; 12 A > 2 * 5.2 A cutoff
    system, force = create_system(ani1x, numbers, box_vectors=box, backend=backend)
    context = context_for(system)

    def energy(x):
        context.setPositions(x / 10)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    e0 = energy(coords)
    for shift in ([12.0, 0, 0], [0, -12.0, 0], [12.0, 12.0, -24.0]):
        assert energy(coords + np.array(shift)) == pytest.approx(e0, abs=1e-3)
    ref_pbc, _, _ = torchani_reference(ani1x_torchani, list(numbers), coords, cell=box * 10)
    whole, _, _ = torchani_reference(ani1x_torchani, list(numbers), np.concatenate([w1, w2 - [12.0, 0, 0]]))
    apart, _, _ = torchani_reference(ani1x_torchani, list(numbers), coords)
    assert e0 / HARTREE_TO_KJ_MOL == pytest.approx(ref_pbc, abs=2e-5)
    assert e0 / HARTREE_TO_KJ_MOL == pytest.approx(whole, abs=2e-5)
    assert abs(whole - apart) * HARTREE_TO_KCAL_MOL > 0.5  # the waters really interact through the boundary


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_subset_of_atoms(ani1x, ani1x_torchani, backend):
    """The force acts on a subset of particles; the others feel nothing."""
    mol = from_smiles("CCO", seed=0)
    system = openmm.System()
    system.addParticle(39.9)  # a spectator particle first
    for z in mol.numbers:
        system.addParticle(app.Element.getByAtomicNumber(int(z)).mass)
    atoms = list(range(1, mol.n_atoms + 1))
    system.addForce(create_force(ani1x, mol.numbers, atoms=atoms, backend=backend))
    context = context_for(system)
    context.setPositions(np.vstack([[[5.0, 5.0, 5.0]], mol.coordinates]) / 10)
    state = context.getState(getEnergy=True, getForces=True)
    forces = state.getForces(asNumpy=True).value_in_unit(KJ_NM) / HARTREE_TO_KJ_MOL / 10
    ref_e, ref_f, _ = torchani_reference(ani1x_torchani, list(mol.numbers), mol.coordinates)
    assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / HARTREE_TO_KJ_MOL == pytest.approx(
        ref_e, abs=2e-5)
    np.testing.assert_allclose(forces[1:], ref_f, atol=2e-5)
    assert np.all(forces[0] == 0)


@pytest.mark.parametrize("integrator_kind", ["LangevinMiddle", "QBCLangevin"])
def test_qbc_reporter_logs_and_stops(tmp_path, ani1x, ani1x_torchani, paracetamol, integrator_kind):
    """The logged sigma and energy equal torchani at the frames; with the QBCLangevinIntegrator
    they come from the integrator's own force evaluation."""
    system, force = create_system(ani1x, paracetamol.numbers)
    integrator_class = {"LangevinMiddle": openmm.LangevinMiddleIntegrator, "QBCLangevin": QBCLangevinIntegrator}
    integrator = integrator_class[integrator_kind](300, 1, 0.0005)
    simulation = app.Simulation(__import__("anif.openmm_plugin.builder", fromlist=["to_topology"]).to_topology(paracetamol), system,
                                integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(paracetamol.coordinates / 10)
    log = tmp_path / "qbc.csv"
    reporter = QBCReporter(str(log), 5, force)
    positions = []

    class Frames:
        def describeNextReport(self, sim):
            return {"steps": 5 - sim.currentStep % 5, "periodic": None, "include": ["positions"]}

        def report(self, sim, state):
            positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))

    simulation.reporters += [reporter, Frames()]
    simulation.step(20)
    reporter.close()
    rows = np.genfromtxt(log, delimiter=",", names=True)
    assert log.read_text().splitlines()[0] == "step,time_ps,potential_kj_mol,temperature_k,sigma_kcal_mol,rho_kcal_mol"
    np.testing.assert_array_equal(rows["step"], [5, 10, 15, 20])
    np.testing.assert_allclose(rows["time_ps"], [0.0025, 0.005, 0.0075, 0.01])
    for row, x in zip(rows, positions):
        e, _, sigma = torchani_reference(ani1x_torchani, list(paracetamol.numbers), x)
        assert row["sigma_kcal_mol"] == pytest.approx(sigma * HARTREE_TO_KCAL_MOL, abs=float32_qbc_atol(e))
        assert row["potential_kj_mol"] == pytest.approx(e * HARTREE_TO_KJ_MOL, abs=float32_atol(e) * HARTREE_TO_KJ_MOL)
        assert row["rho_kcal_mol"] == pytest.approx(row["sigma_kcal_mol"] / np.sqrt(20), rel=1e-4)
    # a threshold below the current rho stops the run at the next report
    stopper = QBCReporter(str(tmp_path / "stop.csv"), 1, force, rho_hat=0.0, stop=True)
    simulation.reporters = [stopper]
    with pytest.raises(RhoThresholdExceeded) as info:
        simulation.step(10)
    assert info.value.step == 21 and simulation.currentStep == 21
    assert info.value.rho_kcal_mol > 0


def test_qbc_langevin_integrator_thermostat_and_cost():
    """The QBC integrator holds its target temperature and records sigma without a second
    force evaluation (sigma after a step equals a fresh evaluation at those positions)."""
    from anif.openmm_plugin.reporters import degrees_of_freedom

    model = load_model("ani1x")
    mol = from_smiles("CCO", seed=0)
    system, force = create_system(model, mol.numbers)
    integrator = QBCLangevinIntegrator(500 * unit.kelvin, 20 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(5)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(mol.coordinates / 10)
    context.setVelocitiesToTemperature(500 * unit.kelvin, 5)
    integrator.step(200)
    kinetic = []
    for _ in range(200):
        integrator.step(5)
        kinetic.append(context.getState(getEnergy=True).getKineticEnergy().value_in_unit(unit.kilojoule_per_mole))
    temperature = 2 * np.mean(kinetic) / (degrees_of_freedom(system) * 0.00831446261815324)
    assert 420 < temperature < 580, temperature
    recorded = integrator.sigma_kj_mol, integrator.potential_kj_mol
    state = context.getState(getEnergy=True, getParameterDerivatives=True)
    assert recorded[0] == pytest.approx(state.getEnergyParameterDerivatives()["anif_sigma"], rel=1e-5)
    assert recorded[1] == pytest.approx(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), abs=1e-3)
    assert integrator.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(500)


def test_create_system_takes_create_forces_order(ani1x):
    mol = from_smiles("CCO", seed=0)
    system, force = create_system(ani1x, mol.numbers)
    assert system.getNumParticles() == mol.n_atoms and ensemble_atom_count(force) == mol.n_atoms
    context = context_for(system)
    context.setPositions(mol.coordinates / 10)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    expected = evaluate(ani1x, mol.numbers, mol.coordinates).energy[0] * HARTREE_TO_KJ_MOL
    assert energy == pytest.approx(expected, abs=0.05)
