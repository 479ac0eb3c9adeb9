"""Select (Fig. 2, "QBC: rho > rho_hat"): which candidates of the cycle get a label: all of the
bootstrap's, else the QBC selection (:func:`anif.al.selection.select`: above rho_hat, under the
trust bound, no near-duplicates, at most [qbc] max_per_cycle, within the label budget; with [qbc]
measure = "forces" the last ensemble's force disagreement above force_hat instead of rho) or the
random baseline; the selected ones become pending labels, every other candidate records why not."""

from __future__ import annotations

import logging
import math

import numpy as np

from ...seeds import seed_of
from .. import selection
from ..ledger import CandidateRecord, LabelRecord, numbers_of, xyz_of
from .context import StageContext
from .sample import NMS

log = logging.getLogger("anif.al")


def sampler_name(sampler: str) -> str:
    """The dataset's ``sampler`` value: nms (bootstrap DNMS) is dnms; test sets name their set."""
    return "dnms" if sampler == NMS else sampler


def unique(rows: list[CandidateRecord], earlier: set) -> list[CandidateRecord]:
    """Candidates whose structure was not labelled in an earlier cycle, first occurrence of each key."""
    seen, out = set(earlier), []
    for r in rows:
        if r.key not in seen:
            seen.add(r.key)
            out.append(r)
    return out


def run(ctx: StageContext) -> None:
    cycle, q, ledger = ctx.cycle.cycle, ctx.config.qbc, ctx.ledger
    with ledger.transaction():
        ledger.clear_selection(cycle)
        rows = ledger.candidates(cycle)
        earlier = ledger.label_keys_before(cycle)
        tests = [r for r in rows if r.role != "train"]
        train = [r for r in rows if r.role == "train"]
        budget = ctx.config.stop.label_budget
        left = budget - ledger.labels_total() if budget else len(train)
        if ctx.cycle.kind == "bootstrap":
            chosen = unique(train, earlier)[: max(0, left)]
            reasons = {}
        else:
            fresh = {r.id for r in unique(train, earlier)}
            numbers, xyz = [numbers_of(r.numbers) for r in train], [xyz_of(r.coordinates) for r in train]
            if q.strategy == "qbc" and q.measure == "forces":
                score, threshold, below = _force_spread(ctx, numbers, xyz), q.force_hat, "forces <= force_hat"
            else:
                score, threshold, below = ([r.rho if r.rho is not None else math.nan for r in train], ctx.cycle.rho_hat,
                                           "rho <= rho_hat")
            result = selection.select(
                score, numbers, xyz, threshold, max(0, min(q.max_per_cycle, left)), q.upper_bound, q.min_rmsd,
                [r.id not in fresh for r in train], "random" if q.strategy == "random" else q.order,
                np.random.default_rng(seed_of(ctx.seed, cycle, "select")), q.spread, below=below)
            chosen = [train[i] for i in result.selected]
            reasons = {train[i].id: why for i, why in result.reasons.items()}
        seq = ledger.next_seq()
        for k, r in enumerate(unique(tests, earlier) + chosen):
            ledger.mark_selected(r.id)
            ledger.insert_label(LabelRecord(
                key=r.key, cycle=cycle, candidate=r.id, role=r.role, status="pending", origin="oracle",
                sampler=sampler_name(r.sampler), source=r.source, name=r.name, rho=r.rho, numbers=r.numbers,
                coordinates=r.coordinates, seq=seq + k))
        for cid, why in reasons.items():
            ledger.set_candidate_reason(cid, why)
    log.info("selected %d of %d candidates for labelling", len(chosen), len(train))


def _force_spread(ctx: StageContext, numbers: list, coordinates: list) -> np.ndarray:
    """The last ensemble's force disagreement (kcal/mol/A) on each candidate, in float64."""
    from ...models import load_model, score_force_spread
    from ...structures import Structure

    if not numbers:
        return np.zeros(0)
    model = load_model(ctx.previous_model()).double()
    return score_force_spread(model, [Structure(z, x) for z, x in zip(numbers, coordinates)], progress=ctx.progress)
