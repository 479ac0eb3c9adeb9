"""The label record: what an oracle returns for one structure and what every writer of labels stores.

``anif label`` (its labels file and ``OUT.failed.jsonl``) and the campaign (its ledger, then
``dataset.h5`` and the generated test sets) keep the same :data:`COLUMNS` per conformer, beside
the store's own (``structure_key``; ``source``, ``sampler``, ``al_cycle``, ``rho_kcal_mol`` of
:data:`anif.datasets.store.PROVENANCE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Label:
    """One structure's reference energy (Hartree) and forces (Hartree/Angstrom), or why there are none
    (``ok`` False, ``reason``), with its provenance; a default is the column's "unknown"."""

    key: str  # the structure's identity (anif.datasets.store.structure_keys)
    ok: bool
    energy: float = math.nan
    forces: Optional[np.ndarray] = None  # (N, 3)
    reason: str = ""
    method: str = ""  # the level as labels record it: "wb97x/6-31g*", "wb97x/6-31g*/df", "teacher:ani1x"
    basis: str = ""
    basis_convention: str = ""  # "cartesian" (6D, Gaussian's for Pople bases) or "spherical"
    density_fit: int = -1  # 1 or 0 (-1: no SCF)
    grid: str = ""  # DFT grid per atom, "RADIAL,ANGULAR"
    program: str = ""  # e.g. "pyscf 2.8.0 (libxc 7.0.0)", "torchani 2.9"
    device: str = ""  # "cpu" or "cuda"
    scf_converged: int = -1  # 1 for a PySCF label, 0 for a failed SCF (-1: no SCF)
    scf_strategy: str = ""  # the rung of the SCF retry ladder that converged
    scf_iterations: int = -1
    scf_guess: str = ""  # "minao" or "neighbour:RMSD" (the nearest labelled conformer's orbitals)
    wall_time_s: float = math.nan
    host: str = ""  # hostname:pid of the worker
    name: str = ""
    charge: int = 0
    multiplicity: int = 1

    def columns(self) -> dict:
        """The provenance columns, as both writers store them per conformer."""
        return {k: getattr(self, k) for k in COLUMNS}


#: The provenance columns of a label (name -> "unknown" value).
COLUMNS = {f.name: f.default for f in fields(Label) if f.name not in ("key", "ok", "energy", "forces", "reason")}
