"""The active-learning loop of Smith et al. (2018), Fig. 2, with the MD engine as its sampler.

A campaign folder holds ``ledger.sqlite`` (:mod:`anif.al.ledger`, the record of everything
done), ``dataset.h5`` (the training set, ANI HDF5 with ``al_cycle``, ``sampler``, ``source``,
``rho_kcal_mol`` per conformer), ``sampling_set.h5`` (the conformer sampling set: molecules at
the oracle's minimum), ``test_sets/NAME.h5`` (generated test sets), ``models/cycle_NNN/`` (one
anif model per cycle), ``history.json`` and ``plots/``.

Cycles and their stages:

- ``bootstrap`` (cycle 0): [reduce: the paper's dataset reduction of a labelled set] or
  search: pick small molecules (1..5 C, N, O atoms) -> optimize (oracle minimum + Hessian) ->
  sample (DNMS, no QBC: there is no ensemble yet; also the generated test sets' conformers)
  -> select (all) -> label -> train -> evaluate.
- ``configurational``: search (molecules from the sources, staged by size, scored by QBC with
  the last ensemble) -> optimize (the failing ones, by the oracle, tight criteria; they join
  the conformer sampling set) -> sample (DNMS / RTS / dimer boxes on the new molecules) ->
  select -> label -> train -> evaluate.
- ``conformational``: sample (on the conformer sampling set) -> select -> label -> train -> evaluate.

``[qbc] strategy = "random"`` runs the same stages without rho: the search keeps every molecule (or a
uniform draw of ``[search] keep``), the samplers keep every candidate, and the selection fills the same
cap uniformly (the A/B baseline).

Each stage is one module of :mod:`anif.al.stages` (one per box of Fig. 2), run from its table
:data:`anif.al.stages.STAGES` with a typed context; every SQL statement is in :mod:`anif.al.ledger`.
This module is the driver: it opens (or resumes) the campaign, runs the stage the last cycle is
in, moves the cycle on, and after each evaluation decides the next cycle.

After each evaluation the stop rule runs (max cycles, label budget, wall time, no improvement
of the mean test RMSE for ``patience`` cycles) and picks the next cycle: conformational cycles
repeat until the test error stops improving for ``[conformational] patience`` cycles, then a
configurational cycle follows; the first cycle after the bootstrap is configurational (the
paper's cycle starts with the configurational search).

Crash safety: every stage commits its results to the ledger as they arrive and is idempotent,
so a killed campaign resumes at the stage it was in and computes only what is missing; every
random choice is seeded from (seed, cycle, what), so a resumed campaign makes the same
selections as one that ran straight through. Test hook: ``ANIF_AL_KILL_AT=POINT[:N]`` sends
SIGKILL to the process the N-th time it reaches POINT (``stage:NAME`` at the start of a stage,
``sample``, ``search``, ``optimize`` and ``label`` after each committed result, ``reduce``
after each reduction round).
"""

from __future__ import annotations

import fcntl
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Optional

from ..errors import AnifError, InputError
from ..labeling.oracles import Oracle
from .config import Config, changes, record
from .ledger import LEDGER, Cycle, Ledger
from .oracles import make_oracle
from .schedule import CycleRecord, next_cycle
from .stages import CYCLES, STAGES
from .stages.context import DATASET, DONE, Pool, StageContext, kill_point, model_dir
from .stages.search import source_molecules

__all__ = ["AGREE_KCAL_MOL", "Campaign", "KINDS", "kill_point", "model_dir", "run_campaign"]
log = logging.getLogger("anif.al")

KINDS = ("bootstrap", "configurational", "conformational")
#: rho (kcal/mol) below which a committee's members agree exactly (evaluation is in float64).
AGREE_KCAL_MOL = 1e-6


class Campaign:
    """One campaign folder run with one config (see the module docstring)."""

    def __init__(self, config: Config, folder: str | Path, workers: Optional[int] = None,
                 scheduler: Optional[str] = None, oracle: Optional[Oracle] = None, progress: bool = True):
        if workers is not None and workers < 0:
            raise InputError(f"--workers must be >= 0, got {workers}")
        if workers is not None and scheduler is not None:
            raise InputError("give either --workers or --scheduler, not both")
        self.config, self.folder, self.progress = config, Path(folder), progress
        self.pool = Pool(workers, scheduler)
        self.oracle = oracle or make_oracle(config, self.pool.threads, self.folder)
        self.ledger: Optional[Ledger] = None
        self._lock = None  # the open lock file while this process runs the campaign

    def run(self) -> dict:
        """Start or resume; returns the campaign's status (anif.al.report.status)."""
        from .report import status, write_history

        try:
            self._open()
            while True:
                cycle = self.ledger.last_cycle()
                if cycle.stage == DONE:
                    if not self._next_cycle(cycle):
                        break
                    continue
                self._run_stage(cycle)
            return status(self.folder, self.ledger)
        finally:
            self.pool.close()
            if self._lock is not None:
                write_history(self.folder, self.ledger)
                self._lock.close()
            if self.ledger is not None:
                self.ledger.close()

    def _open(self) -> None:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: exists and is not a folder")
        fresh = not (folder / LEDGER).exists()
        if fresh and folder.exists() and any(folder.iterdir()):
            raise InputError(f"{folder}: exists, is not empty and holds no campaign; choose a new --out")
        self.ledger = Ledger(folder)
        lock = open(folder / ".lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise InputError(f"{folder}: another `anif al run` is working on this campaign") from None
        self._lock = lock
        current = record(self.config)
        previous = self.ledger.get("config")
        if previous is None:
            with self.ledger.transaction():
                self.ledger.set("config", current)
                self.ledger.set("oracle", self.oracle.method)
                self._insert_cycle(0, "bootstrap", self.config.qbc.rho_hat)
            if self.config.path and Path(self.config.path).is_file():
                shutil.copyfile(self.config.path, folder / "config.toml")
            return
        diff = changes(previous, current)
        if self.ledger.get("oracle") != self.oracle.method:
            diff.append("the oracle")
        if diff:
            raise InputError(
                f"{folder} was started with a different config ({', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''} "
                "changed; only [stop] may change when resuming); use a new --out"
            )

    def _stages(self, kind: str) -> tuple[str, ...]:
        if kind == "bootstrap" and self.config.bootstrap.dataset:
            return CYCLES["bootstrap-reduce"]
        return CYCLES[kind]

    def _insert_cycle(self, cycle: int, kind: str, rho_hat: float) -> None:
        self.ledger.insert_cycle(Cycle(cycle, kind, self._stages(kind)[0], rho_hat))

    def _run_stage(self, cycle: Cycle) -> None:
        from .report import write_history

        stage = cycle.stage
        kill_point(f"stage:{stage}")
        log.info("cycle %d (%s): %s", cycle.cycle, cycle.kind, stage)
        start = time.perf_counter()
        STAGES[stage](StageContext(self.config, self.folder, self.ledger, self.oracle, self.pool, self.progress, cycle))
        stages = self._stages(cycle.kind)
        following = stages[stages.index(stage) + 1] if stage != stages[-1] else DONE
        with self.ledger.transaction():
            self.ledger.advance(cycle.cycle, following, time.perf_counter() - start)
            self.ledger.add_stage_time(cycle.cycle, stage, time.perf_counter() - start)  # the report's time per stage
        write_history(self.folder, self.ledger)

    # ---- stop rule and the next cycle -----------------------------------------------------------
    def _next_cycle(self, cycle: Cycle) -> bool:
        """Insert the next cycle (True), or record why the campaign stops (False); raise AnifError
        when the campaign cannot learn (:meth:`cannot_learn`)."""
        why = self.cannot_learn()
        if why:
            raise AnifError(why)
        reason, kind = self.decide()
        with self.ledger.transaction():
            if reason:
                self.ledger.set("stop_reason", reason)
            else:
                self.ledger.set("stop_reason", None)
                rho_hat = self.ledger.get(f"rho_hat_after_{cycle.cycle}") or cycle.rho_hat
                self._insert_cycle(cycle.cycle + 1, kind, rho_hat)
        if reason:
            log.info("campaign finished: %s", reason)
        return not reason

    def cannot_learn(self) -> str:
        """Why the campaign cannot learn, or '': its last two cycles after the bootstrap selected
        nothing while the members agreed exactly on every test structure (rho = 0), so QBC can
        never select anything and more cycles would only spend time."""
        cycles = self.ledger.last_done_after_bootstrap(DONE, 2)
        if len(cycles) < 2:
            return ""
        for cycle in cycles:
            selected = self.ledger.count_train_labels(cycle)
            max_rho = self.ledger.max_test_rho(cycle)
            if selected or max_rho is None or max_rho > AGREE_KCAL_MOL:
                return ""
        return (f"cycles {cycles[1]} and {cycles[0]} selected nothing and the ensemble's members agree exactly on every "
                "test structure (rho = 0): the committee cannot disagree, so QBC can never select. Give the members "
                "different starts or data: train from scratch (no [campaign] init), start from an ensemble whose "
                "members differ, or raise [training] lr so fine-tuning moves them; the labels so far are kept in "
                f"{DATASET}")

    def decide(self) -> tuple[str, str]:
        """(stop reason or '', kind of the next cycle): :func:`anif.al.schedule.next_cycle` on the finished cycles."""
        errors = self.ledger.mean_test_rmse()
        selected = self.ledger.selected_per_cycle()
        cycles = [CycleRecord(c.cycle, c.kind, errors.get(c.cycle, math.inf), selected.get(c.cycle, 0), c.wall_s)
                  for c in self.ledger.cycles()]
        exhausted = not source_molecules(self.ledger, self.config, cycles[-1].cycle + 1)[0]
        has_molecules = bool(self.ledger.molecules(role="train", status="ok"))
        return next_cycle(cycles, self.ledger.labels_total(), exhausted, has_molecules, self.config.stop,
                          self.config.conformational)


def run_campaign(config: Config, folder: str | Path, workers: Optional[int] = None, scheduler: Optional[str] = None,
                 oracle: Optional[Oracle] = None, progress: bool = True) -> dict:
    """Start or resume the campaign in ``folder``; returns its status (see anif.al.report.status)."""
    return Campaign(config, folder, workers, scheduler, oracle, progress).run()
