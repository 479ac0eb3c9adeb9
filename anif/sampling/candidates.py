"""What every sampler returns: candidate structures with their rho and provenance.

A :class:`Candidate` is a structure the ensemble disagrees on (or, for configurational
search, any scored molecule), its QBC value rho (kcal/mol), the ensemble mean energy
(Hartree; a placeholder until the labeller computes reference labels) and a provenance
record (sampler, source molecule, seed, sampler-specific details).
:func:`write_candidates` appends them to a candidate store (an ANI-format HDF5 through
:class:`anif.datasets.DatasetStore`, kind "candidates": it refuses a file of reference labels).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..models import score_structures
from ..structures import Structure


@dataclass
class Candidate:
    """A sampled structure, its rho (kcal/mol), ensemble energy (Ha) and provenance."""

    structure: Structure
    rho_kcal_mol: float
    energy: float
    provenance: dict = field(default_factory=dict)


#: The samplers' QBC test: ensemble energy (Ha) and rho (kcal/mol) of structures, in size-sorted batches.
score = score_structures


def write_candidates(path, candidates: Sequence[Candidate]) -> int:
    """Append candidates to a candidate store (one group per atom sequence, created empty when there
    are none); return how many were new (structures the store holds are skipped).

    Per conformer: ``energies`` (ensemble mean, Hartree; ``method`` says so), ``rho_kcal_mol``,
    ``sampler``, ``source``, ``seed`` and ``provenance`` (the full record as JSON).
    """
    from ..datasets import CANDIDATE_METHOD, DatasetStore

    store = DatasetStore(path, mode="a", kind="candidates")
    by_species: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        by_species.setdefault(tuple(int(z) for z in c.structure.numbers), []).append(c)
    written = 0
    with store.transaction():
        for key, group in by_species.items():
            written += store.append(
                None,
                species=np.array(key),
                coordinates=np.stack([c.structure.coordinates for c in group]),
                energies=np.array([c.energy for c in group]),
                method=CANDIDATE_METHOD,
                rho_kcal_mol=np.array([c.rho_kcal_mol for c in group]),
                sampler=np.array([str(c.provenance.get("sampler", "")) for c in group]),
                source=np.array([str(c.provenance.get("source", "")) for c in group]),
                seed=np.array([int(c.provenance.get("seed", -1)) for c in group]),
                provenance=np.array([json.dumps(c.provenance, sort_keys=True) for c in group]),
            )
    return written
