"""OpenMM reporters that watch the ensemble's disagreement during a simulation."""

from __future__ import annotations

import math

import numpy as np
import openmm
from openmm import unit

from .force import ensemble_atom_count, find_ensemble_force, read_qbc, sigma_from_state, sigma_needs_inner_context
from .integrators import QBCLangevinIntegrator
from ..units import KJ_MOL_TO_KCAL_MOL

QBC_CSV_HEADER = "step,time_ps,potential_kj_mol,temperature_k,sigma_kcal_mol,rho_kcal_mol"


class RhoThresholdExceeded(Exception):
    """Raised out of ``Simulation.step`` by a stopping :class:`QBCReporter`."""

    def __init__(self, step: int, rho_kcal_mol: float, positions):
        super().__init__(f"rho {rho_kcal_mol:.4f} kcal/mol exceeded the threshold at step {step}")
        self.step = step
        self.rho_kcal_mol = rho_kcal_mol
        self.positions = positions


def degrees_of_freedom(system: openmm.System) -> int:
    """Kinetic degrees of freedom, as StateDataReporter counts them."""
    dof = sum(3 for i in range(system.getNumParticles()) if system.getParticleMass(i) > 0 * unit.dalton)
    dof -= system.getNumConstraints()
    if any(isinstance(system.getForce(i), openmm.CMMotionRemover) for i in range(system.getNumForces())):
        dof -= 3
    return dof


class SigmaReader:
    """sigma (kcal/mol) of a simulation's ensemble force at a reporter's State, read the cheapest
    way available: from a :class:`QBCLangevinIntegrator` (no extra evaluation), from openmmml's
    interpolating CustomCVForce's inner Context (one extra evaluation of the ML atoms), or from the
    State's parameter derivatives (a reporter asks for them with :meth:`include`)."""

    def __init__(self, force: openmm.Force | None = None):
        self.force = force
        self._inner: bool | None = None

    @staticmethod
    def include(simulation) -> list[str]:
        """What the State must hold (for describeNextReport's ``include``)."""
        return [] if isinstance(simulation.integrator, QBCLangevinIntegrator) else ["energy", "parameterDerivatives"]

    def n_atoms(self, simulation) -> int:
        self._resolve(simulation.system)
        return ensemble_atom_count(self.force)

    def _resolve(self, system: openmm.System) -> None:
        if self._inner is None:
            self.force = self.force or find_ensemble_force(system)
            self._inner = sigma_needs_inner_context(system)

    def __call__(self, simulation, state: openmm.State) -> float:
        self._resolve(simulation.system)
        if self._inner:
            return read_qbc(simulation.context, self.force)[0]
        if isinstance(simulation.integrator, QBCLangevinIntegrator):
            return simulation.integrator.sigma_kj_mol * KJ_MOL_TO_KCAL_MOL
        return sigma_from_state(state, self.force)


class QBCReporter:
    """Log the ensemble disagreement every ``reportInterval`` steps and optionally act on it.

    Writes CSV rows ``step,time_ps,potential_kj_mol,temperature_k,sigma_kcal_mol,rho_kcal_mol``.
    With a :class:`QBCLangevinIntegrator` sigma and the potential energy are read from the
    integrator (no extra force evaluation); otherwise from a State (one extra evaluation). In
    openmmml's interpolating mixed System (the force inside a CustomCVForce) sigma is that of the
    ML region, read from the CustomCVForce's inner Context (one extra evaluation of the ML atoms).

    Parameters
    ----------
    file : str or file-like
        Where to write the CSV (a path is opened for writing; a file object is used as is).
    reportInterval : int
        Steps between reports (1: the QBC test at every step, as in RTS).
    force : openmm.Force, optional
        Any handle of the ensemble force (:func:`anif.openmm_plugin.create_force` or openmmml's
        ``MLPotential('ani1x')``); default: the simulated System's only ensemble force.
    rho_hat : float, optional
        The QBC threshold in kcal/mol. Steps with rho above it
        are recorded in :attr:`flagged`.
    stop : bool
        Raise :class:`RhoThresholdExceeded` from ``simulation.step`` at the first such step.
    """

    def __init__(self, file, reportInterval: int, force: openmm.Force | None = None, rho_hat: float | None = None,
                 stop: bool = False):
        self._own = isinstance(file, str) or hasattr(file, "__fspath__")
        self._out = open(file, "w") if self._own else file
        self._interval = int(reportInterval)
        self._sigma = SigmaReader(force)
        self._threshold = rho_hat
        self._stop = stop
        self._dof = None
        self._masses = None
        self._n_atoms = None
        self.flagged: list[tuple[int, float]] = []
        self._out.write(QBC_CSV_HEADER + "\n")

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        qbc = isinstance(simulation.integrator, QBCLangevinIntegrator)
        include = ["positions"] + (["velocities"] if qbc else []) + SigmaReader.include(simulation)
        return {"steps": steps, "periodic": None, "include": include}

    def report(self, simulation, state):
        if self._dof is None:
            system = simulation.system
            self._n_atoms = self._sigma.n_atoms(simulation)
            self._dof = degrees_of_freedom(system)
            self._masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton)
                                     for i in range(system.getNumParticles())])
        integrator = simulation.integrator
        if isinstance(integrator, QBCLangevinIntegrator):
            velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
            kinetic = 0.5 * float((self._masses[:, None] * velocities**2).sum())
            potential = integrator.potential_kj_mol
        else:
            kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
            potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        sigma = self._sigma(simulation, state)
        temperature = 2 * kinetic / (self._dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
            unit.kilojoule_per_mole / unit.kelvin)) if self._dof > 0 else 0.0
        rho = sigma / math.sqrt(self._n_atoms)
        step = simulation.currentStep
        self._out.write(
            f"{step},{state.getTime().value_in_unit(unit.picosecond):.6f},{potential:.6f},"
            f"{temperature:.4f},{sigma:.6f},{rho:.6f}\n"
        )
        self._out.flush()
        if self._threshold is not None and rho > self._threshold:
            self.flagged.append((step, rho))
            if self._stop:
                raise RhoThresholdExceeded(step, rho, state.getPositions(asNumpy=True))

    def close(self):
        if self._own:
            self._out.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
