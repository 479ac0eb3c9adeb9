"""Dimer sampling: MD of a periodic box of molecules, cut into QBC-tested dimer pairs.

Molecules drawn from a conformer set are packed at random positions and orientations into a
cubic box at a target density (:func:`anif.sampling.boxes.pack_box`), then run with the
periodic ensemble force under a Langevin thermostat. Every ``interval`` steps a
:class:`DimerReporter` cuts the box into pairs of whole molecules whose closest contact
(minimum image) is within ``cutoff`` and QBC-tests all of them in one batch; the failing
pairs are returned, each molecule pair at most once (its first failing occurrence).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..openmm_plugin import create_system
from ..openmm_plugin.guard import DomainGuard, LeftModelDomain
from ..openmm_plugin.builder import langevin_simulation, to_topology
from ..openmm_plugin.sampling_reporters import DimerReporter
from ..structures import Structure
from ..units import ANGSTROM_TO_NM, FS_PER_PS
from .boxes import pack_box
from .candidates import Candidate
from .settings import DimerSettings


def run_dimer_box(model, conformers: Sequence[Structure], rho_hat: float, seed: int,
                  settings: DimerSettings = DimerSettings(), keep_frames: bool = False):
    """Pack a box, run the MD, return (candidates, the DimerReporter, molecule -> conformer index)."""
    rng = np.random.default_rng(seed)
    numbers, positions, box, molecules, chosen = pack_box(conformers, settings.molecules, settings.density, rng,
                                                          settings.min_distance)
    system, _ = create_system(model, numbers, box_vectors=np.diag(box) * ANGSTROM_TO_NM, backend=settings.backend)
    simulation = langevin_simulation(to_topology(Structure(numbers, positions), box), system, positions * ANGSTROM_TO_NM,
                                     settings.temperature, settings.friction, settings.timestep_fs, seed=seed)
    reporter = DimerReporter(settings.interval, model, numbers, molecules, rho_hat, settings.cutoff, keep_frames)
    # the guard first: a box whose molecules fall apart yields no pairs from then on
    simulation.reporters += [DomainGuard(settings.interval, range(len(numbers)), numbers, positions), reporter]
    try:
        simulation.step(int(round(settings.time_ps * FS_PER_PS / settings.timestep_fs)))
    except LeftModelDomain:
        pass
    names = [conformers[k].name for k in chosen]
    candidates = [
        Candidate(f["structure"], f["rho_kcal_mol"], f["energy"], {
            "sampler": "dimer", "source": f"{names[f['i']]}+{names[f['j']]}", "seed": int(seed),
            "step": f["step"], "time_ps": f["time_ps"], "molecules": [f["i"], f["j"]],
            "box_a": float(box[0]), "cutoff_a": settings.cutoff,
        })
        for f in reporter.failures
    ]
    for c in candidates:
        c.structure.name = c.provenance["source"]
    return candidates, reporter, chosen


def sample_dimers(model, conformers: Sequence[Structure], rho_hat: float, seed: int,
                  settings: DimerSettings = DimerSettings()) -> list[Candidate]:
    """Failing dimer pairs of one box (see :func:`run_dimer_box`)."""
    return run_dimer_box(model, conformers, rho_hat, seed, settings)[0]
