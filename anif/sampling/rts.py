"""RTS: random trajectory sampling with the ensemble as the OpenMM force.

Each trajectory starts from the input geometry with random velocities at ``t_start``; a
Langevin thermostat's target temperature is raised linearly to ``t_end`` over ``ramp_ps``
(:class:`TemperatureRampReporter`) and the QBC test runs at every step
(:class:`QBCReporter` with ``stop=True``). The trajectory ends at the first structure with
rho > rho_hat, which is returned, or at the end of the ramp with nothing. ``repeats``
trajectories per molecule, each with its own seed derived from the molecule's seed.

A trajectory that breaks or forms bonds or flings atoms away (checked every 20 steps, and at
the failing step) yields nothing: fragments are not molecules ANI-1x is meant to learn.

Cost: with the TorchForce the integrator is a :class:`QBCLangevinIntegrator`, which records
sigma with the forces it computes anyway, so the QBC test at every step costs nothing extra.
"""

from __future__ import annotations

import io
from pathlib import Path

from openmm import unit

from ..openmm_plugin import QBCReporter, RhoThresholdExceeded, create_system
from ..openmm_plugin.guard import DomainGuard, LeftModelDomain, bond_changes
from ..openmm_plugin.sampling_reporters import TemperatureRampReporter
from ..openmm_plugin.builder import langevin_simulation, to_topology
from ..seeds import seed_of
from ..structures import Structure
from ..units import ANGSTROM_TO_NM, FS_PER_PS
from .candidates import Candidate, score
from .settings import RTSSettings


#: Steps between checks of the molecule's integrity (the failing structure is always checked).
GUARD_INTERVAL = 20


def rts_trajectory(model, structure: Structure, rho_hat: float, seed: int, settings: RTSSettings = RTSSettings(),
                   log_prefix: str | Path | None = None, system=None):
    """One RTS trajectory: the first failing Candidate, or None at the end of the ramp.

    ``log_prefix``: write ``PREFIX.ramp.csv`` (target temperature) and ``PREFIX.qbc.csv``
    (QBC log with the kinetic temperature). ``system``: a (System, force) pair from
    :func:`anif.openmm_plugin.create_system` to reuse across trajectories.
    Returns (candidate or None, ramp reporter, number of steps run).
    """
    system, force = system or create_system(model, structure.numbers, backend=settings.backend)
    simulation = langevin_simulation(to_topology(structure), system, structure.coordinates * ANGSTROM_TO_NM, settings.t_start,
                                     settings.friction, settings.timestep_fs, seed=seed)
    ramp = TemperatureRampReporter(1, settings.t_start, settings.t_end, settings.ramp_ps,
                                   file=f"{log_prefix}.ramp.csv" if log_prefix else None)
    qbc = QBCReporter(f"{log_prefix}.qbc.csv" if log_prefix else io.StringIO(), 1, force,
                      rho_hat=rho_hat, stop=True)
    guard = DomainGuard(GUARD_INTERVAL, range(structure.n_atoms), structure.numbers, structure.coordinates)
    simulation.reporters += [ramp, qbc, guard]
    found = None
    try:
        simulation.step(settings.steps)
    except RhoThresholdExceeded as stop:
        found = stop
    except LeftModelDomain:  # fragments are never candidates
        pass
    finally:
        ramp.close()
        qbc.close()
    if found is None:
        return None, ramp, simulation.currentStep
    failing = Structure(structure.numbers, found.positions.value_in_unit(unit.angstrom), name=structure.name)
    if bond_changes(structure.numbers, guard.bonds, failing.coordinates):
        return None, ramp, simulation.currentStep
    energy, rho = score(model, [failing])
    time_ps = found.step * settings.timestep_fs / FS_PER_PS
    provenance = {"sampler": "rts", "source": structure.name, "seed": int(seed), "step": int(found.step),
                  "time_ps": time_ps, "target_temperature_k": ramp.temperature(time_ps),
                  "rho_openmm_kcal_mol": float(found.rho_kcal_mol)}
    return Candidate(failing, float(rho[0]), float(energy[0]), provenance), ramp, simulation.currentStep


def sample_rts(model, structure: Structure, rho_hat: float, seed: int,
               settings: RTSSettings = RTSSettings()) -> list[Candidate]:
    """``settings.repeats`` RTS trajectories from ``structure``; the failing structures found."""
    system = create_system(model, structure.numbers, backend=settings.backend)
    out = []
    for k in range(settings.repeats):
        candidate, _, _ = rts_trajectory(model, structure, rho_hat, seed_of(seed, k), settings, system=system)
        if candidate is not None:
            candidate.provenance["repeat"] = k
            out.append(candidate)
    return out
