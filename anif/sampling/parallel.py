"""Run a sampler (by its name in :mod:`anif.sampling.registry`) over many molecules (or boxes,
or chunks) on the Dask pool, with progress.

Each work item gets its own seed derived from the master seed and its index
(:func:`anif.seeds.seed_of`), so results do not depend on the number of
workers or the order in which items finish. Workers load the model once per process.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Any, Iterator, Sequence

from ..distributed import as_completed_with_progress, dask_client
from ..models import load_model
from ..seeds import seed_of
from .registry import get


@functools.lru_cache(maxsize=2)
def cached_model(spec: str):
    return load_model(spec)


def run_item(item, sampler: str, model: str, rho_hat: float, settings) -> Any:
    """One work item ``(seed, payload)`` of ``sampler`` with the model ``model`` (a load_model spec)."""
    seed, payload = item
    extra = () if settings is None else (settings,)
    return get(sampler).function()(cached_model(model), payload, rho_hat, seed, *extra)


def sampler_items(client, sampler: str, model: str, payloads: Sequence, rho_hat: float, seed: int, settings=None,
                  indices: Sequence[int] | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, result or exception)`` as each payload's sampler run finishes.

    Payload ``i`` runs with the seed ``seed_of(seed, indices[i])`` (default: its position)
    and is yielded under that index, so a subset of a batch (e.g. what a killed run left) gets
    the seeds it would have had in the whole batch. ``client=None`` runs in this process.
    """
    indices = list(range(len(payloads))) if indices is None else list(indices)
    items = [(seed_of(seed, k), p) for k, p in zip(indices, payloads)]
    kwargs = dict(sampler=sampler, model=model, rho_hat=rho_hat, settings=settings)
    for i, result in as_completed_with_progress(client, run_item, items, f"sample {sampler}", **kwargs):
        yield indices[i], result


def run_sampler(sampler: str, model: str, payloads: Sequence, rho_hat: float, seed: int, settings=None,
                workers: int | None = None, scheduler: str | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, result or exception)`` as each payload's sampler run finishes.

    ``workers=0`` runs in this process (no Dask); otherwise a LocalCluster of ``workers``
    processes (default: one per core) or the cluster at ``scheduler``.
    """
    with (nullcontext() if workers == 0 else dask_client(workers=workers, scheduler=scheduler, task_threads=1)) as client:
        yield from sampler_items(client, sampler, model, payloads, rho_hat, seed, settings)
