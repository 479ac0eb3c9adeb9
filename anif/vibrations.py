"""Harmonic vibrations of a Cartesian Hessian (numpy; masses and constants from OpenMM).

The mass-weighted Hessian, projected free of translations and rotations, is diagonalised;
each vibrational eigenvector e maps to a unit Cartesian direction q = M^-1/2 e / |M^-1/2 e|
with force constant K = q^T H q and reduced mass mu = sum_i m_i q_i^2. Hessians in Ha/A^2,
coordinates in Angstrom, masses in amu.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .structures import Structure, atomic_masses


@dataclass
class NormalModes:
    """Vibrations: frequencies (m,) cm^-1 (negative = imaginary), unit Cartesian directions (m, N, 3),
    force constants along them (m,) Ha/A^2 and reduced masses (m,) amu, m = 3N - 6 (3N - 5 linear)."""

    frequencies: np.ndarray
    modes: np.ndarray
    force_constants: np.ndarray
    reduced_masses: np.ndarray


def _rigid_motions(coords: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Orthonormal basis (k, 3N) of mass-weighted translations and rotations (k = 5 or 6)."""
    sq = np.sqrt(masses)[:, None]
    x = coords - (masses[:, None] * coords).sum(0) / masses.sum()
    vectors = [np.repeat(np.eye(3)[a][None], len(coords), 0) * sq for a in range(3)]
    vectors += [np.cross(np.eye(3)[a], x) * sq for a in range(3)]
    basis = np.array([v.ravel() for v in vectors]).T
    u, s, _ = np.linalg.svd(basis, full_matrices=False)
    return u[:, s > 1e-6 * s.max()].T


def mode_directions(numbers, coordinates: np.ndarray, hessian: np.ndarray):
    """Vibrational modes: force constants K (m,) Ha/A^2 and unit Cartesian directions (m, N, 3)."""
    masses = atomic_masses(numbers)
    inv_sqrt = np.repeat(1.0 / np.sqrt(masses), 3)
    rigid = _rigid_motions(coordinates, masses)
    projector = np.eye(len(inv_sqrt)) - rigid.T @ rigid
    mw = projector @ (inv_sqrt[:, None] * hessian * inv_sqrt[None]) @ projector
    values, vectors = np.linalg.eigh(mw)
    # drop the rigid-body eigenvectors (they lie in the projected-out space)
    vibrational = np.linalg.norm(rigid @ vectors, axis=0) < 0.5
    directions = (inv_sqrt[:, None] * vectors[:, vibrational]).T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    constants = np.einsum("mi,ij,mj->m", directions, hessian, directions)
    return constants, directions.reshape(len(directions), -1, 3)


def _wavenumber_per_sqrt_eigenvalue() -> float:
    """sqrt(Ha / (A^2 amu)) as an angular frequency, divided by 2 pi c: cm^-1 (openmm.unit's constants)."""
    from openmm import unit

    omega_squared = (unit.hartree * unit.AVOGADRO_CONSTANT_NA / (unit.angstrom**2 * unit.amu)).value_in_unit(
        unit.second**-2)
    return float(np.sqrt(omega_squared) / (2 * np.pi * unit.SPEED_OF_LIGHT_C.value_in_unit(unit.centimeter / unit.second)))


def normal_modes(structure: Structure, hessian: np.ndarray) -> NormalModes:
    """Normal modes of a Cartesian Hessian (3N, 3N) Ha/A^2 at ``structure`` (an optimised geometry)."""
    constants, directions = mode_directions(structure.numbers, structure.coordinates, hessian)
    reduced = np.einsum("mni,n->m", directions**2, atomic_masses(structure.numbers))
    eigen = constants / reduced
    return NormalModes(np.sign(eigen) * np.sqrt(np.abs(eigen)) * _wavenumber_per_sqrt_eigenvalue(), directions,
                       constants, reduced)
