"""Conformers as frames of thermostatted MD with an ensemble: the structures an MD user meets.

:func:`md_frames` gives a campaign's MD test sets; :func:`sample_md` is the campaign's MD sampler
(the paper's MD sampling): frames of the committee's own MD at a fixed temperature, each
QBC-tested, so torsions and soft modes that normal modes about a minimum never reach become
candidates.

One Langevin trajectory per molecule at ``temperature``: ``equilibration_ps`` first, then a frame
every ``interval_ps`` until ``n`` frames are taken. The trajectory is watched by the
:class:`~anif.openmm_plugin.guard.DomainGuard`; a molecule that breaks or forms a bond yields the
frames taken before.
"""

from __future__ import annotations

import numpy as np
from openmm import unit

from ..openmm_plugin import create_system
from ..openmm_plugin.builder import langevin_simulation, to_topology
from ..openmm_plugin.guard import DomainGuard, LeftModelDomain
from ..structures import Structure
from ..units import ANGSTROM_TO_NM, FS_PER_PS
from .candidates import Candidate, score
from .settings import FrameSettings


def md_frames(model, structure: Structure, seed: int, settings: FrameSettings = FrameSettings()) -> list[Candidate]:
    """``settings.n`` frames of a Langevin trajectory of ``structure`` with ``model`` as the force."""
    system, _ = create_system(model, structure.numbers)
    simulation = langevin_simulation(to_topology(structure), system, structure.coordinates * ANGSTROM_TO_NM,
                                     settings.temperature, settings.friction, settings.timestep_fs, seed=seed)
    guard = DomainGuard(20, range(structure.n_atoms), structure.numbers, structure.coordinates)
    simulation.reporters.append(guard)
    steps = lambda ps: max(1, int(round(ps * FS_PER_PS / settings.timestep_fs)))  # noqa: E731
    out = []
    try:
        simulation.step(steps(settings.equilibration_ps))
        for k in range(settings.n):
            simulation.step(steps(settings.interval_ps))
            xyz = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
            frame = Structure(structure.numbers, np.asarray(xyz, dtype=np.float64), name=structure.name)
            out.append(Candidate(frame, float("nan"), float("nan"), {
                "sampler": "md", "source": structure.name, "seed": int(seed), "frame": k,
                "time_ps": simulation.currentStep * settings.timestep_fs / FS_PER_PS,
                "temperature_k": settings.temperature}))
    except LeftModelDomain:
        pass
    return out


def sample_md(model, structure: Structure, rho_hat: float, seed: int,
              settings: FrameSettings = FrameSettings()) -> list[Candidate]:
    """Frames of the committee's MD from ``structure`` with rho > ``rho_hat`` (kcal/mol), as candidates."""
    frames = md_frames(model, structure, seed, settings)
    if not frames:
        return []
    energy, rho = score(model, [f.structure for f in frames])
    return [Candidate(f.structure, float(r), float(e), f.provenance)
            for f, e, r in zip(frames, energy, rho) if r > rho_hat]
