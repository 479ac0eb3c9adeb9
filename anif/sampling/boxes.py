"""Periodic boxes of molecules: random packing (the geometry helpers live in :mod:`anif.geometry`).

Orthorhombic boxes only; lengths and coordinates in Angstrom. Molecules are index arrays
into the box's atoms.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError
from ..geometry import minimum_image
from ..structures import Structure, atomic_masses
from .search import random_orientation

#: Avogadro's number times 1e-24 (cm^3 per A^3): g/mol per A^3 -> g/cm^3.
_AMU_PER_A3_TO_G_CM3 = 1.0 / 0.602214076


def pack_box(conformers: Sequence[Structure], count: int, density: float, rng: np.random.Generator,
             min_distance: float = 2.0, max_tries: int = 2000):
    """Place ``count`` molecules drawn from ``conformers`` randomly (position and orientation).

    The cubic box length follows from the total mass and ``density`` (g/cm^3); no two atoms of
    different molecules are closer than ``min_distance`` (A) under minimum image. Returns
    (numbers (M,), positions (M, 3) A, box lengths (3,) A, molecule atom-index arrays, chosen
    conformer index per molecule).
    """
    if not conformers:
        raise InputError("dimer sampling needs at least one conformer")
    chosen = rng.integers(len(conformers), size=count)
    mass = sum(float(m) for k in chosen for m in atomic_masses(conformers[k].numbers))
    box = np.full(3, (mass * _AMU_PER_A3_TO_G_CM3 / density) ** (1.0 / 3.0))
    numbers, positions, molecules, start = [], [], [], 0
    for k in chosen:
        for _ in range(max_tries):
            x = random_orientation(conformers[k], rng) + rng.uniform(0, 1, 3) * box
            if not positions or np.linalg.norm(
                minimum_image(x[:, None] - np.concatenate(positions)[None], box), axis=-1
            ).min() >= min_distance:
                break
        else:
            raise InputError(
                f"could not place {count} molecules at density {density} g/cm^3 without overlaps "
                f"(box {box[0]:.1f} A); lower the density or the number of molecules"
            )
        numbers.append(conformers[k].numbers)
        positions.append(x)
        molecules.append(np.arange(start, start + len(x)))
        start += len(x)
    return np.concatenate(numbers), np.concatenate(positions), box, molecules, chosen
