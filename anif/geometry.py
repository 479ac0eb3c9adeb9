"""Geometry on coordinate arrays (numpy only): minimum image, whole molecules, dimer pairs, Kabsch RMSD.

Orthorhombic boxes only (lengths (3,)); lengths and coordinates in Angstrom. Molecules are
index arrays into the box's atoms.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np


def minimum_image(vectors: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Shortest periodic images of difference vectors (..., 3) in a box with lengths (3,)."""
    return vectors - box * np.round(vectors / box)


def make_whole(positions: np.ndarray, box: np.ndarray, *, molecules: Optional[Sequence[np.ndarray]] = None,
               bonds: Optional[Iterable[tuple[int, int]]] = None) -> np.ndarray:
    """Positions (N, 3) with every molecule unbroken, given its ``molecules`` or its ``bonds`` (one of them).

    ``molecules`` (index arrays; ``box`` the lengths (3,)): each atom imaged next to its molecule's
    first atom, then the molecule's centroid moved into the box. ``bonds`` (atom pairs; ``box`` the
    box vectors (3, 3) as rows, any shape of cell): a walk along the bond graph moves each atom to the
    minimum image of the bonded atom it is reached from, so molecules of any size come out whole;
    the first atom of each molecule stays where it is.
    """
    if (molecules is None) == (bonds is None):
        raise ValueError("make_whole: give molecules or bonds")
    if molecules is not None:
        out = positions.copy()
        for atoms in molecules:
            x = positions[atoms[0]] + minimum_image(positions[atoms] - positions[atoms[0]], box)
            out[atoms] = x - box * np.floor(x.mean(0) / box)
        return out
    x = positions.copy()
    inverse = np.linalg.inv(box)
    neighbours: dict[int, list[int]] = {}
    for i, j in bonds:
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    seen: set[int] = set()
    for root in range(len(x)):
        if root in seen:
            continue
        seen.add(root)
        stack = [root]
        while stack:
            i = stack.pop()
            for j in neighbours.get(i, []):
                if j not in seen:
                    delta = x[j] - x[i]
                    x[j] -= np.round(delta @ inverse) @ box
                    seen.add(j)
                    stack.append(j)
    return x


def dimer_pairs(positions: np.ndarray, molecules: Sequence[np.ndarray], box: np.ndarray, cutoff: float):
    """Pairs (i, j, coordinates) of whole molecules whose closest contact (minimum image) <= cutoff (A).

    ``positions`` must hold whole molecules (:func:`make_whole`); molecule j is translated by
    whole box vectors so that it sits at its closest image next to molecule i.
    """
    pairs = []
    for i in range(len(molecules)):
        a = positions[molecules[i]]
        for j in range(i + 1, len(molecules)):
            b = positions[molecules[j]]
            raw = b[None] - a[:, None]
            d = np.linalg.norm(minimum_image(raw, box), axis=-1)
            k = np.unravel_index(np.argmin(d), d.shape)
            if d[k] <= cutoff:
                shift = raw[k] - minimum_image(raw[k], box)
                pairs.append((i, j, np.concatenate([a, b - shift])))
    return pairs


def kabsch_rmsd(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """RMSD (A) of x (N, 3) to each of ys (B, N, 3) after optimal rotation + translation."""
    x = x - x.mean(0)
    ys = ys - ys.mean(1, keepdims=True)
    h = np.einsum("ni,bnj->bij", x, ys)
    u, sv, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt))
    sv[:, -1] *= d
    msd = (np.sum(x * x) + np.sum(ys * ys, axis=(1, 2)) - 2 * sv.sum(1)) / len(x)
    return np.sqrt(np.maximum(msd, 0.0))
