"""What every stage is handed: the campaign's folder, config, ledger, oracle and worker pool, and
the cycle it runs in (:class:`StageContext`); the campaign's file names and test hook (seeds:
:func:`anif.seeds.seed_of`)."""

from __future__ import annotations

import os
import signal
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ...distributed import dask_client, worker_policy
from ...labeling.oracles import Oracle
from ..config import Config
from ..ledger import Cycle, Ledger
from ..stores import DATASET, SAMPLING_SET, TEST_DIR, sync

__all__ = ["DATASET", "DONE", "MODELS", "Pool", "SAMPLING_SET", "StageContext", "TEST_DIR", "kill_point", "model_dir"]

#: The stage of a finished cycle.
DONE = "done"
MODELS = "models"
_kills: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process at the N-th ``name`` when ANIF_AL_KILL_AT=name[:N]."""
    target = os.environ.get("ANIF_AL_KILL_AT", "")
    if not target:
        return
    point, _, count = target.rpartition(":")
    if not count.isdigit():
        point, count = target, "1"
    if point != name:
        return
    _kills[name] = _kills.get(name, 0) + 1
    if _kills[name] >= int(count):
        os.kill(os.getpid(), signal.SIGKILL)


def model_dir(folder: Path, cycle: int) -> Path:
    return folder / MODELS / f"cycle_{cycle:03d}"


class Pool:
    """The campaign's Dask pool, started on first use: ``workers`` local processes (0: none, this
    process runs every task; sized by :func:`anif.distributed.worker_policy`) or the cluster at
    ``scheduler``; ``threads`` per task."""

    def __init__(self, workers: Optional[int], scheduler: Optional[str]):
        self.workers, self.threads, self.scheduler = workers, None, scheduler  # remote: their OMP_NUM_THREADS rules
        if scheduler is None:
            self.workers, self.threads = worker_policy(workers)
        self._stack: Optional[ExitStack] = None
        self._client = None

    def client(self):
        """The Dask client (started on first use), or None for workers=0 (this process)."""
        if self.workers == 0:
            return None
        if self._stack is None:
            self._stack = ExitStack()
            self._client = self._stack.enter_context(
                dask_client(workers=self.workers, scheduler=self.scheduler, task_threads=self.threads))
        return self._client

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack, self._client = None, None


@dataclass
class StageContext:
    """One stage's view of the campaign: where, with what, and in which cycle."""

    config: Config
    folder: Path
    ledger: Ledger
    oracle: Oracle
    pool: Pool
    progress: bool
    cycle: Cycle

    @property
    def seed(self) -> int:
        """The campaign's seed ([campaign] seed)."""
        return self.config.campaign.seed

    def previous_model(self) -> str:
        """The model folder of the cycle before this one."""
        return str(model_dir(self.folder, self.cycle.cycle - 1))

    def sync_stores(self) -> int:
        """Bring dataset.h5, test_sets/*.h5 and sampling_set.h5 up to the ledger; returns the dataset size."""
        tests = [t.name for t in self.config.test_sets if t.smiles]
        return sync(self.folder, self.ledger, tests, self.oracle.minima_method)
