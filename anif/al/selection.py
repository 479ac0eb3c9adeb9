"""Which structures get labelled: QBC selection of candidates, and the paper's dataset reduction.

QBC selection (:func:`select`): a candidate is worth a label when rho > rho_hat (kcal/mol);
above an optional upper trust bound it is more likely broken than informative and is left
out; near-duplicates (Kabsch RMSD below ``min_rmsd`` to a structure of the same molecule
already selected, or identical to one already labelled) are labelled once; at most ``cap``
per cycle, highest rho first (``priority="rho"``; with ``spread``, round-robin over molecules:
the best of each before the second of any), uniformly among those with rho > rho_hat (``"uniform"``,
``[qbc] order = "uniform"``: the paper labels every failing structure; under a cap a uniform draw
keeps their distribution), one per cluster of those with rho > rho_hat in the space the
networks see (``"diverse"``, ``[qbc] order = "diverse"``: k-means with k = ``cap`` on their
:func:`descriptors`, the highest rho of each cluster, so that a batch covers its candidates instead of
crowding where rho is highest) or uniformly at random (``"random"``,
``[qbc] strategy = "random"``, the baseline of scripts/al_vs_random.py, which ignores rho altogether).

Dataset reduction (Smith et al. 2018, Fig. 2a; :func:`reduction_start`, :func:`reduction_step`):
train on a random ``start_fraction`` of a labelled set; evaluate the rest; a "fail case" has
|E_model - E_ref| / sqrt(N) > ``fail_threshold`` kcal/mol; add a random ``add_fraction`` of
the fail cases (at least one) and repeat, until fewer than ``stop_fraction`` of the rest fail,
then add that rest (the remaining fail cases) and stop.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..geometry import kabsch_rmsd


@dataclass
class Selection:
    """Indices selected, and for every other candidate why not."""

    selected: list[int]
    reasons: dict[int, str]


def select(rho: Sequence[float], numbers: Sequence[np.ndarray], coordinates: Sequence[np.ndarray], rho_hat: float,
           cap: int, upper_bound: float = math.inf, min_rmsd: float = 0.0, labelled: Sequence[bool] = (),
           priority: str = "rho", rng: Optional[np.random.Generator] = None, spread: bool = False,
           features: Optional[np.ndarray] = None, below: str = "rho <= rho_hat") -> Selection:
    """QBC selection over candidates given in a fixed order (ties keep that order).

    ``spread``: diversity within the batch: take the highest-rho candidate of every molecule (atom
    sequence) before the second of any, and so on (rounds in the priority's order), so that one molecule whose
    conformers all score high cannot fill the cap.

    ``rho`` kcal/mol (NaN: not scored, never selected but under ``priority="random"``); ``numbers``
    (N,) and ``coordinates`` (N, 3) A per candidate; ``labelled[i]``: already labelled; ``features``
    (candidates, D): where each lies, for ``priority="diverse"`` (default: :func:`descriptors`);
    ``rng`` draws the order of ``"uniform"`` and ``"random"`` and seeds the clusters of ``"diverse"``;
    ``below``: the reason given for a candidate at or under the threshold (another measure than rho
    passed as ``rho`` names itself).
    """
    rho = np.asarray(rho, dtype=float)
    n = len(rho)
    labelled = np.asarray(labelled, dtype=bool) if len(labelled) else np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    if priority in ("random", "uniform"):
        order = (rng or np.random.default_rng(0)).permutation(n)
    elif priority in ("rho", "diverse"):
        order = np.lexsort((np.arange(n), -np.nan_to_num(rho, nan=-np.inf)))
    else:
        raise ValueError(f"priority must be 'rho', 'uniform', 'diverse' or 'random', not {priority!r}")
    qbc = priority != "random"  # rho filters (threshold, trust bound) apply
    if spread and qbc:
        order = _round_robin(order, numbers)
    eligible: list[int] = []
    for i in map(int, order):
        if qbc and not rho[i] > rho_hat:
            reasons[i] = below
        elif qbc and rho[i] > upper_bound:
            reasons[i] = "rho above the trust bound"
        elif labelled[i]:
            reasons[i] = "already labelled"
        else:
            eligible.append(i)
    if priority == "diverse" and len(eligible) > cap:
        x = (descriptors([numbers[i] for i in eligible], [coordinates[i] for i in eligible]) if features is None
             else np.asarray(features, dtype=float)[eligible])
        firsts = _best_per_cluster(x, cap, rng or np.random.default_rng(0))
        rest = set(range(len(eligible))) - set(firsts)
        picks = iter([eligible[k] for k in firsts] + [eligible[k] for k in sorted(rest)])
    else:
        picks = iter(eligible)
    kept: dict[bytes, list[np.ndarray]] = {}
    selected: list[int] = []
    for i in picks:
        if len(selected) >= cap:
            break
        species = np.asarray(numbers[i], dtype=np.int64).tobytes()
        same = kept.setdefault(species, [])
        if same and min_rmsd > 0 and kabsch_rmsd(coordinates[i], np.stack(same)).min() < min_rmsd:
            reasons[i] = "near-duplicate"
            continue
        same.append(np.asarray(coordinates[i]))
        selected.append(i)
    chosen = set(selected)
    for i in eligible:
        if i not in chosen:
            reasons.setdefault(i, "over the cap")
    return Selection(selected, reasons)


def _best_per_cluster(x: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """Rows of ``x`` (given best first) that come first in their k-means cluster (scipy's kmeans2,
    k-means++ seeding from ``rng``), in row order; empty clusters are dropped."""
    from scipy.cluster.vq import kmeans2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "One of the clusters is empty": fewer clusters
        _, cluster = kmeans2(x, k, minit="++", rng=rng)
    first: dict[int, int] = {}
    for row, c in enumerate(cluster.tolist()):
        first.setdefault(c, row)
    return sorted(first.values())


def descriptors(numbers: Sequence[np.ndarray], coordinates: Sequence[np.ndarray], batch: int = 256) -> np.ndarray:
    """Where each structure lies in the space the networks see: per element (H, C, N, O) the mean
    ANI-1x atomic environment vector (torchani's AEVComputer.like_1x) of its atoms of that element
    (zeros where it has none), concatenated: (structures, 4 x AEV length), float64.

    A structure of an element outside H, C, N, O raises ValueError.
    """
    import torch
    from torchani.aev import AEVComputer

    from ..structures import atomic_number
    from ..training.settings import SYMBOLS

    index = {atomic_number(s): i for i, s in enumerate(SYMBOLS)}  # torchani's species index of each element
    aev = AEVComputer.like_1x(num_species=len(SYMBOLS)).double()
    out = []
    for start in range(0, len(numbers), batch):
        chunk = range(start, min(start + batch, len(numbers)))
        width = max(len(numbers[i]) for i in chunk)
        species = torch.full((len(chunk), width), -1, dtype=torch.long)
        xyz = torch.zeros((len(chunk), width, 3), dtype=torch.float64)
        for row, i in enumerate(chunk):
            z = np.asarray(numbers[i], dtype=np.int64)
            unknown = sorted(set(z.tolist()) - set(index))
            if unknown:
                raise ValueError(f"descriptors cover {', '.join(SYMBOLS)} only, not atomic numbers {unknown}")
            species[row, : len(z)] = torch.tensor([index[int(e)] for e in z])
            xyz[row, : len(z)] = torch.as_tensor(np.asarray(coordinates[i], dtype=np.float64))
        with torch.no_grad():
            atomic = aev(species, xyz)  # (structures, atoms, AEV length)
        onehot = torch.nn.functional.one_hot(species.clamp(min=0), len(SYMBOLS)).double()
        onehot = onehot * (species >= 0).unsqueeze(-1)
        counts = onehot.sum(1).clamp(min=1)  # (structures, elements)
        means = torch.einsum("sae,sad->sed", onehot, atomic) / counts.unsqueeze(-1)
        out.append(means.flatten(1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(SYMBOLS) * aev.out_dim))


def _round_robin(order: np.ndarray, numbers: Sequence[np.ndarray]) -> np.ndarray:
    """``order`` regrouped into rounds: the k-th candidate (in ``order``) of every molecule forms round k."""
    rank: dict[bytes, int] = {}
    rounds = np.empty(len(order), dtype=np.int64)
    for position, i in enumerate(order):
        key = np.asarray(numbers[i], dtype=np.int64).tobytes()
        rounds[position] = rank.get(key, 0)
        rank[key] = rounds[position] + 1
    return order[np.lexsort((np.arange(len(order)), rounds))]


# ---- dataset reduction ------------------------------------------------------------------
def fail_cases(error_kcal_mol: np.ndarray, n_atoms: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of |E_model - E_ref| / sqrt(N) > threshold (kcal/mol per sqrt(atom))."""
    return np.abs(np.asarray(error_kcal_mol)) / np.sqrt(np.asarray(n_atoms)) > threshold


def reduction_start(n_total: int, start_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """The random initial subset (at least one conformer), sorted indices."""
    k = max(1, int(math.ceil(start_fraction * n_total)))
    return np.sort(rng.choice(n_total, size=min(k, n_total), replace=False))


def reduction_step(rest: np.ndarray, failing: np.ndarray, add_fraction: float, stop_fraction: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """One round: (indices to add, finished). ``rest``: indices not yet included; ``failing``: their mask.

    Finished when fewer than ``stop_fraction`` of the rest fail: then every remaining fail case
    is added. Otherwise a random ``add_fraction`` of the fail cases (at least one).
    """
    fails = np.asarray(rest)[np.asarray(failing, dtype=bool)]
    if len(rest) == 0 or len(fails) < stop_fraction * len(rest):
        return np.sort(fails), True
    k = max(1, int(math.ceil(add_fraction * len(fails))))
    return np.sort(rng.choice(fails, size=k, replace=False)), False
