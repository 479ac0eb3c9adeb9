"""The stop rule and the kind of the next cycle, as a pure function of the finished cycles.

Stop when the last cycle reached ``max_cycles`` (cycles after the bootstrap), the training set
reached the label budget, the campaign's wall time ran out, or the mean test RMSE has not
improved (by the relative margin ``min_improvement`` over the best before) for ``patience``
cycles. Otherwise: after the bootstrap, a configurational cycle (the paper's cycle starts with
the configurational search); after a configurational cycle, a conformational one;
conformational cycles repeat until ``[conformational] patience`` of them in a row did not help
(no improvement, or nothing selected), then a configurational cycle follows (patience 0: after every
conformational cycle, so the test error never steers the schedule). Without
unsearched source molecules only conformational cycles remain; without molecules to sample
either, the campaign stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import ConformationalSettings, StopSettings


@dataclass(frozen=True)
class CycleRecord:
    """What the schedule needs of a finished cycle."""

    cycle: int
    kind: str
    test_rmse: float  # mean over the test sets, kcal/mol
    selected: int  # training structures selected for labelling
    wall_s: float


def improvements(errors: dict[int, float], min_improvement: float) -> dict[int, bool]:
    """Whether each cycle's error beat the best before it by the relative margin."""
    out, best = {}, math.inf
    for cycle in sorted(errors):
        out[cycle] = errors[cycle] < best * (1.0 - min_improvement)
        best = min(best, errors[cycle])
    return out


def next_cycle(cycles: list[CycleRecord], labels_total: int, exhausted: bool, has_molecules: bool,
               stop: StopSettings, conformational: ConformationalSettings) -> tuple[str, str]:
    """(stop reason, "") or ("", kind of the next cycle)."""
    last = cycles[-1]
    improved = improvements({c.cycle: c.test_rmse for c in cycles}, stop.min_improvement)
    if last.cycle >= stop.max_cycles:
        return f"max_cycles ({stop.max_cycles}) reached", ""
    if stop.label_budget and labels_total >= stop.label_budget:
        return f"label budget ({stop.label_budget}) reached", ""
    if stop.wall_time_h and sum(c.wall_s for c in cycles) >= stop.wall_time_h * 3600:
        return f"wall time ({stop.wall_time_h} h) reached", ""
    recent = [improved[c.cycle] for c in cycles if c.kind != "bootstrap"][-stop.patience:]
    if len(recent) == stop.patience and not any(recent):
        return f"no improvement of the test error for {stop.patience} cycles", ""
    if exhausted and not has_molecules:
        return "nothing to sample: no molecules and the search sources are exhausted", ""
    if exhausted:
        if last.kind == "conformational" and not last.selected and not improved[last.cycle]:
            return "nothing left to sample: search sources exhausted, no candidates selected", ""
        return "", "conformational"
    if last.kind == "bootstrap" or not has_molecules:
        return "", "configurational"
    if last.kind == "configurational":
        return "", "conformational"
    streak = []  # newest first: did each conformational cycle since the last configurational one help?
    for c in reversed(cycles):
        if c.kind != "conformational":
            break
        streak.append(improved[c.cycle] and c.selected > 0)
    p = conformational.patience
    if not last.selected or (len(streak) >= p and not any(streak[:p])):
        return "", "configurational"
    return "", "conformational"
