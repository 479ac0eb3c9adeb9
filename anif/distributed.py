"""A Dask pool for the expensive steps (reference labels, samplers) and a progress loop over it.

``dask_client`` gives a :class:`distributed.Client`: on an existing cluster when a scheduler
address is given (e.g. one started on SLURM with dask-jobqueue, see docs/cluster.md), else
on a LocalCluster of worker *processes* sized to this machine. The LocalCluster's scheduler
and workers listen on loopback only, its HTTP endpoint (dashboard, metrics) too unless another
``dashboard`` address is asked for.
``as_completed_with_progress`` fans a function out over items and yields results as they
finish, with a progress bar and ETA; a failing item yields its exception instead of
stopping the loop, so one bad structure never kills a batch. Dask itself is imported when a
pool starts, so importing this module (and the commands built on it) stays cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import InputError
from .progress import step_progress

if TYPE_CHECKING:
    from distributed import Client

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Where a LocalCluster's scheduler serves HTTP (dashboard, metrics): loopback, a free port.
DASHBOARD_ADDRESS = "127.0.0.1:0"


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_policy(workers: int | None = None, threads: int | None = None, tasks: int | None = None,
                  gpu: bool = False) -> tuple[int, int]:
    """(worker processes, threads each) on this machine: the one policy of every pool (``anif label``,
    ``anif sample``, the campaign's).

    Unless given, workers fill the cores at ``threads`` each (default one), at most one per task;
    fewer tasks than cores give each worker the spare cores as threads. Labels are independent, so
    W processes scale as W, while PySCF's OpenMP threads do not on the serial parts (Python,
    diagonalisation, the small blocks of a 2-6 heavy-atom molecule); ``scripts/benchmark_labeling.py
    --policy`` compares 1 worker x C threads with C workers x 1 thread (2 quiet cores: C workers 1.39x
    faster on methanol, 1.09x on ethyl acetate). ``gpu``: one process drives the device (several
    would only queue on it), with all cores as threads for its CPU parts.
    ``workers=0`` (no pool: this process runs every task) gets all cores as threads.
    """
    cores = available_cores()
    if workers is None:
        workers = 1 if gpu else max(1, min(cores // (threads or 1), tasks or cores))
    return workers, threads or max(1, cores // max(1, workers))


@contextmanager
def dask_client(
    workers: int | None = None,
    scheduler: str | None = None,
    threads_per_worker: int = 1,
    task_threads: int | None = None,
    dashboard: str = DASHBOARD_ADDRESS,
) -> Iterator["Client"]:
    """A Dask client: ``Client(scheduler)`` if an address is given, else a LocalCluster.

    workers: LocalCluster worker processes (default: :func:`worker_policy`'s, workers * threads = cores).
    threads_per_worker: tasks each worker runs at once.
    task_threads: OpenMP/BLAS threads each task may use (sets OMP_NUM_THREADS & co. in the
    local worker processes); with ``scheduler`` the remote workers' own environment rules.
    dashboard: HOST:PORT of the LocalCluster scheduler's HTTP endpoint (default loopback, a
    free port; e.g. "0.0.0.0:8787" exposes it to the network, unauthenticated).
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None and workers is not None:
        raise InputError("give either a number of workers or a scheduler address, not both")
    if workers is not None and workers < 1:
        raise InputError(f"number of workers must be >= 1, got {workers}")
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot connect to Dask scheduler {scheduler!r}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n_workers = workers or worker_policy(threads=max(1, threads_per_worker) * max(1, task_threads or 1))[0]
    environ = {f"distributed.nanny.pre-spawn-environ.{v}": int(task_threads) for v in _THREAD_VARIABLES} if task_threads else {}
    with dask.config.set(environ):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": dashboard},
            silence_logs=logging.ERROR,
        )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def as_completed_with_progress(
    client: "Client | None", fn: Callable[..., Any], items: Iterable[Any], description: str, **kwargs
) -> Iterator[tuple[int, Any]]:
    """Submit ``fn(item, **kwargs)`` for every item; yield ``(index, result)`` as each finishes.

    A task that raises yields ``(index, exception)`` instead. Leaving the loop early cancels
    the tasks still pending. ``client=None`` runs the items one after another in this process
    (same results and progress bar, no Dask).
    """
    from distributed import as_completed

    items = list(items)
    if client is None:
        yield from _serial(fn, items, description, kwargs)
        return
    futures = {client.submit(fn, item, pure=False, **kwargs): i for i, item in enumerate(items)}
    with step_progress(description, len(futures), unit="tasks", transient=False) as advance:
        pending = set(futures)
        try:
            for done, future in enumerate(as_completed(list(futures)), 1):
                pending.discard(future)
                index = futures[future]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - the task's own error, handed to the caller
                    result = exc
                future.release()
                advance(done)
                yield index, result
        finally:
            if pending:
                client.cancel(list(pending))


def _serial(fn, items: list, description: str, kwargs: dict) -> Iterator[tuple[int, Any]]:
    with step_progress(description, len(items), unit="tasks", transient=False) as advance:
        for index, item in enumerate(items):
            try:
                result = fn(item, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the item's own error, handed to the caller
                result = exc
            advance(index + 1)
            yield index, result
