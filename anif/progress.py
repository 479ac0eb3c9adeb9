"""The one progress display for long work: rich bars on stderr (nothing at all when disabled).

:func:`step_progress` draws one bar; :func:`task_progress` draws one bar per key (e.g. one per
ensemble member) whose descriptions can change as the work goes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, Mapping


def _bars(unit: str, transient: bool):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn(f"{{task.completed}}/{{task.total}} {unit}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=Console(stderr=True), transient=transient)


@contextmanager
def step_progress(label: str, total: int, enabled: bool = True, unit: str = "steps",
                  transient: bool = True) -> Iterator[Callable[[int], None]]:
    """A bar for ``total`` units of work; yields ``advance(completed)`` to move it."""
    if not enabled:
        yield lambda completed: None
        return
    with _bars(unit, transient) as bar:
        task = bar.add_task(label, total=total)
        yield lambda completed: bar.update(task, completed=completed)


@contextmanager
def task_progress(labels: Mapping[Hashable, str], total: int, unit: str = "steps",
                  transient: bool = False) -> Iterator[Callable[..., None]]:
    """One bar of ``total`` units per key of ``labels``; yields ``update(key, completed, label=None)``."""
    with _bars(unit, transient) as bar:
        tasks = {key: bar.add_task(label, total=total) for key, label in labels.items()}

        def update(key: Hashable, completed: int, label: str | None = None) -> None:
            bar.update(tasks[key], completed=completed, **({} if label is None else {"description": label}))

        yield update
