"""What every sampler returns: candidate structures with their rho and provenance.

A :class:`Candidate` is a structure the ensemble disagrees on (or, for configurational
search, any scored molecule), its QBC value rho (kcal/mol), the ensemble mean energy
(Hartree; a placeholder until the labeller computes reference labels) and a provenance
record (sampler, source molecule, seed, sampler-specific details).
:func:`write_candidates` appends them to an ANI-format HDF5 through
:class:`anif.datasets.DatasetStore`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..models import evaluate, pad_structures
from ..structures import Structure


@dataclass
class Candidate:
    """A sampled structure, its rho (kcal/mol), ensemble energy (Ha) and provenance."""

    structure: Structure
    rho_kcal_mol: float
    energy: float
    provenance: dict = field(default_factory=dict)


def score(model, structures: Sequence[Structure], batch_size: int = 256):
    """Ensemble energy (Ha) and rho (kcal/mol) of structures, in padded batches (no forces)."""
    energy, rho = np.zeros(len(structures)), np.zeros(len(structures))
    for start in range(0, len(structures), batch_size):
        batch = structures[start : start + batch_size]
        result = evaluate(model, *pad_structures(batch), forces=False)
        energy[start : start + len(batch)] = result.energy
        rho[start : start + len(batch)] = result.rho_kcal_mol
    return energy, rho


def molecule_seed(master_seed: int, index: int) -> int:
    """A per-molecule seed derived from the master seed (independent of the molecule count)."""
    return int(np.random.SeedSequence([int(master_seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def write_candidates(path, candidates: Sequence[Candidate]) -> int:
    """Append candidates to an ANI-format HDF5 (one group per atom sequence); return the count.

    Per conformer: ``energies`` (ensemble mean, Hartree), ``method``
    (:data:`anif.datasets.CANDIDATE_METHOD`: not a label), ``rho_kcal_mol``, ``sampler``,
    ``source``, ``seed`` and ``provenance`` (the full record as JSON).
    """
    from ..datasets import CANDIDATE_METHOD, DatasetStore

    store = DatasetStore(path, mode="a")
    by_species: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        by_species.setdefault(tuple(int(z) for z in c.structure.numbers), []).append(c)
    with store.transaction():
        for key, group in by_species.items():
            store.append(
                store.group_for(key),
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
    return len(candidates)
