"""``anif label``: a file of structures labelled by the PySCF oracle into a label store.

The batch runs :func:`anif.labeling.oracles.label_task` on a Dask pool (:mod:`anif.distributed`,
sized by :func:`~anif.distributed.worker_policy`), commits each label to the output label store
(:class:`anif.datasets.DatasetStore`, kind "labels") as it arrives, with the provenance columns
of :class:`~anif.labeling.record.Label` (the campaign's ``dataset.h5`` carries the same), records
structures whose SCF fails in ``OUT.failed.jsonl`` (one JSON object a line) and, on a rerun,
computes only the structures that are in neither. Identical structures (same elements,
coordinates to 1e-6 A, charge and multiplicity) are computed once, and the store's re-check
under its lock keeps concurrent runs on one output from storing a structure twice. Input
coordinates that look like Bohr or nm are refused before computing. Each SCF starts from the
orbitals of the nearest labelled conformer of the same molecule, shared through ``OUT.dm/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from ..datasets.store import PROVENANCE, DatasetStore, open_output
from ..distributed import DASHBOARD_ADDRESS, as_completed_with_progress, dask_client, worker_policy
from ..errors import InputError
from ..plausibility import coordinate_problem
from ..structures import Structure
from .oracles import PySCFOracle, label_task, stamped
from .record import Label
from .reference import check_level, check_structure, resolve_device, structure_key
from .settings import Level

#: Per-conformer columns of an HDF5 input carried through to the labels.
_CARRIED = tuple(k for k in PROVENANCE if k != "method")


def guesses_path(out: str | Path) -> Path:
    """Where ``anif label`` keeps converged orbitals beside its output: ``labels.h5`` -> ``labels.dm/``."""
    return Path(out).with_suffix(".dm")


@dataclass
class LabelTask:
    """One unique structure to label, with the per-conformer columns it carries from its input."""

    structure: Structure
    key: str
    carried: dict = field(default_factory=dict)


@dataclass
class LabelSummary:
    """Counts of one ``label_file`` run."""

    total: int = 0  # structures in the input
    unique: int = 0
    already_labelled: int = 0  # before this run, or by a concurrent run on the same output
    already_failed: int = 0
    labelled: int = 0  # computed in this run
    failed: int = 0

    @property
    def all_failed(self) -> bool:
        """Nothing labelled: every structure computed in this run failed, or all are recorded as failed."""
        return self.labelled == 0 and (self.failed > 0 or self.already_failed == self.unique > 0)

    def line(self, out: Path) -> str:
        return (
            f"{self.labelled} labelled, {self.failed} failed in this run; {self.already_labelled} already labelled, "
            f"{self.already_failed} recorded as failed before ({self.total} structures, {self.unique} unique) -> {out}"
        )


def failures_path(out: str | Path) -> Path:
    """The failure log beside an output file: ``labels.h5`` -> ``labels.failed.jsonl``."""
    return Path(out).with_suffix(".failed.jsonl")


def read_failures(out: str | Path) -> list[dict]:
    """Failure records of ``out`` (a last line cut short by a kill is ignored)."""
    path = failures_path(out)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_input(path: str | Path) -> list[tuple[Structure, dict]]:
    """Structures (and carried per-conformer provenance) from XYZ, SDF, PDB or ANI-format HDF5."""
    from ..datasets.store import read_any

    return read_any(path, carried=_CARRIED)


class _LabelWriter:
    """Commits labels to the output store one by one, and failures to the sidecar log."""

    #: What a store never mixes: labels of another level are refused.
    CHECKED = ("density_fit", "basis_convention", "method")

    def __init__(self, store: DatasetStore, oracle: PySCFOracle):
        self.out, self.store, self.max_cycle = store.path, store, oracle.level.max_cycle
        provenance = oracle.provenance()
        self.done: set[str] = set()
        for _, data in store.iter_groups((*self.CHECKED, "structure_key")):
            for key in self.CHECKED:
                expected = provenance[key]
                found = {v.item() if hasattr(v, "item") else v for v in data.get(key, [])}
                if found - {expected}:
                    raise InputError(
                        f"{self.out}: holds labels with {key}={sorted(map(str, found - {expected}))[0]!r}, this run "
                        f"computes {key}={expected!r}; choose another --out"
                    )
            self.done.update(str(k) for k in data.get("structure_key", []))
        self.failed = {r.get("key") for r in read_failures(self.out)} - self.done

    def commit(self, task: LabelTask, label: Label) -> bool:
        """Store one label; False if the store already held it (a concurrent run on the same output)."""
        s = task.structure
        written = self.store.append(
            None, s.numbers, s.coordinates[None], [label.energy], label.forces[None],
            **{k: [v] for k, v in task.carried.items()}, **label.columns(), structure_key=task.key,
        )
        self.done.add(task.key)
        return written > 0

    def record_failure(self, task: LabelTask, label: Label) -> None:
        s = task.structure
        record = {
            "key": task.key, "reason": label.reason, **label.columns(), "max_cycle": self.max_cycle,
            "numbers": [int(z) for z in s.numbers], "coordinates": np.round(s.coordinates, 8).tolist(),
        }
        path = failures_path(self.out)
        line = json.dumps(record) + "\n"
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # the last write was cut short by a kill
                    line = "\n" + line
        with open(path, "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.failed.add(task.key)


def plan(items: list[tuple[Structure, dict]], level: Level) -> tuple[list[LabelTask], int]:
    """Check every structure, then drop duplicates. Returns (unique tasks, number of structures)."""
    check_level(level)
    tasks: dict[str, LabelTask] = {}
    for structure, carried in items:
        problem = coordinate_problem(structure.numbers, structure.coordinates)
        if problem:
            raise InputError(f"{structure.name or 'structure'}: {problem}")
        check_structure(structure, level)
        key = structure_key(structure)
        tasks.setdefault(key, LabelTask(structure, key, carried))
    return list(tasks.values()), len(items)


def label_file(
    input: str | Path,
    out: str | Path,
    level: Level = Level(),
    charge: Optional[int] = None,
    multiplicity: Optional[int] = None,
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
    threads: Optional[int] = None,
    retry_failed: bool = False,
    dashboard: str = DASHBOARD_ADDRESS,
    guess_reuse: bool = True,
) -> LabelSummary:
    """Label every structure of ``input`` into ``out`` with a :class:`PySCFOracle` at ``level``
    (resumable; see the module docstring).

    Locally, ``workers`` processes each run PySCF on ``threads`` threads (default:
    :func:`~anif.distributed.worker_policy`'s). With ``scheduler`` the remote workers'
    OMP_NUM_THREADS rules unless ``threads`` is given. ``dashboard``: where the local Dask
    scheduler serves HTTP (default loopback). ``guess_reuse``: start each SCF from the converged
    orbitals of the nearest labelled conformer of the same molecule, kept in ``OUT.dm/``
    (:func:`guesses_path`) and shared by all workers and reruns (False: PySCF's own guess every
    time; the labels agree either way). ``level.device`` ``auto`` is resolved here.
    """
    for option, value in (("workers", workers), ("threads", threads)):
        if value is not None and value < 1:
            raise InputError(f"number of {option} must be >= 1, got {value}")
    level = replace(check_level(level), device=resolve_device(level.device))  # one-line error for cuda without one
    store = open_output(out, kind="labels")  # refuses an unwritable --out or a candidate store before any work
    items = read_input(input)
    for structure, _ in items:
        structure.charge = structure.charge if charge is None else charge
        structure.multiplicity = structure.multiplicity if multiplicity is None else multiplicity
    tasks, total = plan(items, level)
    oracle = PySCFOracle(level, guesses=str(guesses_path(out)) if guess_reuse else False)
    writer = _LabelWriter(store, oracle)
    summary = LabelSummary(total=total, unique=len(tasks))
    todo = []
    for task in tasks:
        if task.key in writer.done:
            summary.already_labelled += 1
        elif task.key in writer.failed and not retry_failed:
            summary.already_failed += 1
        else:
            todo.append(task)
    if not todo:
        return summary
    if scheduler is None:
        workers, threads = worker_policy(workers, threads, len(todo), gpu=level.device == "cuda")
    oracle = replace(oracle, threads=threads)
    with dask_client(workers=workers, scheduler=scheduler, task_threads=threads, dashboard=dashboard) as client:
        for i, label in as_completed_with_progress(client, label_task, [t.structure for t in todo], "labelling",
                                                   oracle=oracle):
            if isinstance(label, BaseException):
                label = stamped(todo[i].structure, oracle, ok=False,
                                reason=f"worker error: {type(label).__name__}: {label}")
            if not label.ok:
                writer.record_failure(todo[i], label)
                summary.failed += 1
            elif writer.commit(todo[i], label):
                summary.labelled += 1
            else:
                summary.already_labelled += 1
    return summary
