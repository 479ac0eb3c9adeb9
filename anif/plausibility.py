"""Numbers that cannot be right in ANI units: energies not in Hartree, coordinates not in Angstrom.

Each check returns the reason as a sentence, or None when the numbers look plausible:

- total energies are compared with the sum of the free atoms' energies (about -0.5 Ha for H,
  -37.8 for C, -75 for O): molecules lie within a few percent of it in Hartree, 627x beyond
  in kcal/mol, 27x in eV, and near 0 for energies relative to the atoms;
- coordinates through the distance of each atom to its nearest neighbour over the sum of
  their covalent radii: about 1 for molecules in Angstrom, 1.9 in Bohr, 0.1 in nm (the
  median over atoms, for structures of three atoms or more, so that a stretched bond passes);
- NaN energies, and forces that are partly NaN or beyond 10 Ha/A (kcal/mol or eV per A).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import InputError
from .structures import _PT

#: Ground-state energies of the neutral free atoms H..Ar (Hartree, about the HF/DFT limit).
_FREE_ATOM_HARTREE = (
    -0.50, -2.90, -7.43, -14.57, -24.53, -37.69, -54.40, -74.81, -99.41, -128.55,
    -161.86, -199.61, -241.88, -288.85, -340.72, -397.50, -459.48, -526.82,
)
#: Energies per free-atom sum accepted as total energies in Hartree.
ENERGY_RATIO = (0.8, 1.25)
#: Median nearest-neighbour distance / covalent-radius sum that looks like Bohr, and below which nm.
BOHR_RATIO = (1.6, 2.6)
NM_RATIO = 0.5
#: Largest force component taken as Hartree/Angstrom.
MAX_FORCE = 10.0


def free_atom_energy(numbers) -> float:
    """Sum of the free atoms' energies (Hartree); beyond Ar from the Thomas-Fermi scaling Z^(7/3)."""
    z = np.asarray(numbers, dtype=np.int64).ravel()
    table = np.asarray(_FREE_ATOM_HARTREE)
    return float(np.where(z <= len(table), table[np.minimum(z, len(table)) - 1], -0.62 * z ** (7.0 / 3.0)).sum())


def energy_problem(numbers, energies) -> Optional[str]:
    """Why total energies (C,) of a molecule cannot be Hartree, or None."""
    energies = np.asarray(energies, dtype=np.float64).ravel()
    if energies.size == 0:
        return None
    if not np.isfinite(energies).all():
        return "energies contain NaN or infinite values"
    atoms = free_atom_energy(numbers)
    ratio = energies / atoms
    worst = energies[np.argmax(np.abs(np.log(np.clip(ratio, 1e-12, None))))]
    if ratio.min() < ENERGY_RATIO[0] or ratio.max() > ENERGY_RATIO[1]:
        n = len(np.ravel(numbers))
        return (
            f"energy {worst:.6g} ({worst / n:.4g} per atom) does not look like a total energy in Hartree: "
            f"the free atoms give {atoms:.4g} Ha ({atoms / n:.4g} per atom); kcal/mol, eV or relative energies?"
        )
    return None


def coordinate_problem(numbers, coordinates) -> Optional[str]:
    """Why coordinates (C, N, 3) or (N, 3) cannot be Angstrom (they look like Bohr or nm), or None."""
    x = np.asarray(coordinates, dtype=np.float64)
    x = x[None] if x.ndim == 2 else x
    z = np.asarray(numbers, dtype=np.int64).ravel()
    if z.size < 3 or not np.isfinite(x).all():
        return None
    radii = np.array([_PT.GetRcovalent(int(a)) for a in z])
    bonds = radii[:, None] + radii[None]
    block = max(1, 2**20 // z.size**2)  # conformers at a time: a few MB of distances
    median = np.concatenate([_median_nearest(x[c : c + block], bonds) for c in range(0, len(x), block)])
    for c, m in enumerate(median):
        if m < NM_RATIO:
            return (f"conformer {c}: atoms sit at {m:.2f}x their bond lengths from their nearest neighbours; "
                    "coordinates in nm? (Angstrom expected)")
        if BOHR_RATIO[0] <= m <= BOHR_RATIO[1]:
            return (f"conformer {c}: atoms sit at {m:.2f}x their bond lengths from their nearest neighbours; "
                    "coordinates in Bohr? (Angstrom expected)")
    return None


def _median_nearest(x: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Per conformer, the median over atoms of the nearest-neighbour distance in units of ``bonds``."""
    d = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1) / bonds
    d[:, np.arange(len(bonds)), np.arange(len(bonds))] = np.inf
    return np.median(d.min(axis=2), axis=1)


def force_problem(forces) -> Optional[str]:
    """Why forces (C, N, 3) cannot be Hartree/Angstrom, or None (a conformer may have none: all NaN)."""
    f = np.asarray(forces, dtype=np.float64)
    f = f.reshape(f.shape[0], -1) if f.ndim > 1 else f[None]
    missing = np.isnan(f)
    if (missing.any(axis=1) & ~missing.all(axis=1)).any() or np.isinf(f).any():
        return "forces are partly NaN or infinite"
    largest = np.abs(f[~missing]).max(initial=0.0)
    if largest > MAX_FORCE:
        return f"force component {largest:.4g} beyond {MAX_FORCE} Ha/A: kcal/mol/A or eV/A?"
    return None


def label_problems(numbers, coordinates, energies, forces=None) -> list[str]:
    """Every reason why these labels cannot be right in ANI units (empty when they look fine)."""
    found = [coordinate_problem(numbers, coordinates), energy_problem(numbers, energies)]
    if forces is not None:
        found.append(force_problem(forces))
    return [p for p in found if p]


def require_angstrom(structure):
    """``structure``, or InputError when its coordinates look like Bohr or nm, not Angstrom
    (:func:`coordinate_problem`, the check `anif label` makes)."""
    problem = coordinate_problem(structure.numbers, structure.coordinates)
    if problem:
        raise InputError(f"{structure.name or 'structure'}: {problem.split(': ', 1)[-1]}")
    return structure
