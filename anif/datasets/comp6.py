"""COMP6 v1 readers (Smith et al., J. Chem. Phys. 148, 241733 (2018)).

A COMP6 v1 file is the legacy ANI layout: one HDF5 group per molecule, usually nested under a
subset group (``s66x8/mol00``), with ``species`` (N,) element symbols, ``coordinates``
(C, N, 3), ``energies`` (C,), ``forces`` (C, N, 3) and extra fields (``lot``, ``cm5``,
``hirshfeld``, ...). Conventions, each checked with a physical test on the S66x8 file:

- ``coordinates``: Angstrom (water O-H bonds 0.958 / 0.965 in ``s66x8/mol00``).
- ``energies``: total energies in Hartree, wB97X/6-31G(d). PySCF wB97X/6-31G* (Cartesian d,
  as Gaussian) on ``s66x8/mol00`` conformer 0 gives -152.7886467 Ha vs -152.7886396 stored
  (0.004 kcal/mol); the released ANI-1x agrees to 1.9 kcal/mol MAE over all 528 conformers.
- ``forces``: **not forces** but the energy *gradient* dE/dx in Hartree/Angstrom. The PySCF
  gradient of the same conformer, converted from Hartree/Bohr, matches the stored array to
  6e-5 Ha/A (max abs), while minus the gradient is off by 0.027 Ha/A; ANI-1x forces point the
  opposite way (mean cosine -0.87 over the 66 dimers); and along every dimer's separation
  path E_j - E_i equals +integral(stored . dx) (trapezoid over steps < 0.6 A: slope 1.009,
  r = 0.9993 over 256 steps), so the unit is Hartree/Angstrom, not Hartree/Bohr. The reader therefore returns
  ``forces = -stored`` so that, as everywhere in anif, forces are -dE/dx in Hartree/Angstrom.
  The other COMP6 v1 subsets come from the same pipeline and get the same conversion. It
  applies to legacy-layout files only: files anif writes (:mod:`anif.datasets`) already hold
  forces and are read as they are.

The subset of a molecule is named after its file (``s66x8_wb97x6-31gd.h5`` -> ``S66x8``,
``gdb11_07_test500.h5`` -> ``GDB07to09`` ...) or, for unknown files, the file stem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .store import DatasetStore, check_labels, stored_forces
from ..errors import InputError

#: (pattern on the file name, subset name as the paper writes it)
SUBSET_PATTERNS = (
    (r"s66x8", "S66x8"),
    (r"ani_md", "ANI-MD"),
    (r"drugbank", "DrugBank"),
    (r"tripeptide", "Tripeptides"),
    (r"gdb11_0?[789]\D|gdb0?7to0?9", "GDB07to09"),
    (r"gdb1[1-3]_1[0-3]\D|gdb11_1[0-3]|gdb10to13", "GDB10to13"),
)


@dataclass
class Comp6Molecule:
    """One molecule's conformer set with reference labels in ANI units."""

    subset: str
    name: str
    species: np.ndarray  # (N,) atomic numbers
    coordinates: np.ndarray  # (C, N, 3) Angstrom
    energies: np.ndarray  # (C,) Hartree
    forces: Optional[np.ndarray]  # (C, N, 3) Hartree/Angstrom, -dE/dx

    @property
    def n_conformers(self) -> int:
        return int(self.energies.shape[0])


def subset_name(path: str | Path) -> str:
    stem = Path(path).name.lower()
    for pattern, name in SUBSET_PATTERNS:
        if re.search(pattern, stem):
            return name
    return Path(path).stem


def comp6_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively for ``*.h5``) into a sorted file list."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.h5"))
            if not found:
                raise InputError(f"{p}: no .h5 files in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return files


def read_comp6_file(path: str | Path, subset: Optional[str] = None) -> list[Comp6Molecule]:
    """All molecules of one COMP6 v1 (legacy ANI layout) file, forces converted to -dE/dx."""
    store = DatasetStore(path, "r")
    if store.stored_kind == "candidates":
        raise InputError(f"{path}: holds sampler candidates (their energies are the ensemble's own mean), "
                         "not reference labels; label them first (anif label)")
    subset = subset or subset_name(path)
    legacy = store.legacy
    molecules = []
    for group, data in store:
        if "energies" not in data:
            raise InputError(f"{path}: group {group!r} has no 'energies'")
        coords = np.asarray(data["coordinates"], dtype=np.float64)
        forces = data.get("forces")
        if forces is not None:
            forces = stored_forces(forces, legacy)
            if forces.shape != coords.shape:
                raise InputError(f"{path}: group {group!r} forces {forces.shape} != coordinates {coords.shape}")
        check_labels(f"{path}: group {group!r}", {**data, "forces": forces} if forces is not None else data)
        molecules.append(
            Comp6Molecule(subset, group, data["species"], coords, np.asarray(data["energies"], np.float64), forces)
        )
    if not molecules:
        raise InputError(f"{path}: no molecules")
    return molecules


def read_comp6(paths: Iterable[str | Path]) -> list[Comp6Molecule]:
    """Molecules of every COMP6 file under ``paths`` (files or folders)."""
    return [m for f in comp6_files(paths) for m in read_comp6_file(f)]
