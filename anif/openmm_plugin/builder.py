"""Building OpenMM Simulations with the ensemble force: topologies of bare structures, platforms,
and the one Langevin Simulation builder used by ``anif md``, RTS and the dimer boxes."""

from __future__ import annotations

from typing import Optional

import numpy as np
import openmm
from openmm import app, unit

from ..errors import AnifError, InputError
from ..structures import Structure, symbol
from .force import exposes_sigma_derivative, find_ensemble_force
from .integrators import QBCLangevinIntegrator


def atom_names(numbers) -> list[str]:
    """PDB atom names: element symbol and a running count per element (C1, C2, H1, ...)."""
    counts: dict[str, int] = {}
    names = []
    for z in numbers:
        sym = symbol(z)
        counts[sym] = counts.get(sym, 0) + 1
        names.append(f"{sym}{counts[sym]}")
    return names


def to_topology(structure: Structure, box_angstrom: Optional[np.ndarray] = None) -> app.Topology:
    """An OpenMM Topology (one residue 'MOL') for a structure, with its bonds if known; periodic
    with the (3,) or (3, 3) box in Angstrom if given."""
    top = app.Topology()
    chain = top.addChain()
    residue = top.addResidue("MOL", chain)
    atoms = [top.addAtom(name, app.Element.getByAtomicNumber(int(z)), residue)
             for name, z in zip(atom_names(structure.numbers), structure.numbers)]
    for i, j in structure.bonds:
        top.addBond(atoms[i], atoms[j])
    if box_angstrom is not None:
        box = np.asarray(box_angstrom, dtype=float)
        top.setPeriodicBoxVectors((np.diag(box) if box.ndim == 1 else box) * unit.angstrom)
    return top


def get_platform(name: str) -> openmm.Platform:
    """An OpenMM platform by name, with the available ones listed when it is missing."""
    try:
        return openmm.Platform.getPlatformByName(name)
    except Exception:
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        raise AnifError(f"OpenMM platform {name!r} not available (available: {', '.join(names)})") from None


def openmm_seed(seed: int) -> int:
    """A seed OpenMM accepts (a positive 31-bit int; 0 would mean 'pick one at random')."""
    return (int(seed) & 0x7FFFFFFF) or 1


def langevin_simulation(topology: app.Topology, system: openmm.System, positions_nm, temperature: float,
                        friction: float, timestep_fs: float, platform: str = "CPU", seed: int = 0,
                        velocities: bool = True) -> app.Simulation:
    """A Simulation with LangevinMiddle dynamics at ``temperature`` (K), ``friction`` (1/ps) and
    ``timestep_fs`` (fs), positions set and velocities drawn (``seed``).

    The integrator is a :class:`QBCLangevinIntegrator` (sigma recorded with each step's own
    force evaluation) when the System's ensemble force exposes sigma as a parameter derivative,
    else OpenMM's LangevinMiddleIntegrator.
    """
    if not temperature > 0 or not timestep_fs > 0 or not friction >= 0:
        raise InputError(f"temperature ({temperature} K) and timestep ({timestep_fs} fs) must be > 0 "
                         f"and friction ({friction} 1/ps) >= 0")
    args = (temperature * unit.kelvin, friction / unit.picosecond, timestep_fs * unit.femtosecond)
    qbc = exposes_sigma_derivative(find_ensemble_force(system))
    integrator = QBCLangevinIntegrator(*args) if qbc else openmm.LangevinMiddleIntegrator(*args)
    integrator.setRandomNumberSeed(openmm_seed(seed))
    simulation = app.Simulation(topology, system, integrator, get_platform(platform))
    simulation.context.setPositions(np.asarray(positions_nm))
    if velocities:
        simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, openmm_seed(seed))
    return simulation
