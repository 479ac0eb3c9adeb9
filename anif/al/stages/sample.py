"""Sample (Fig. 2c, conformational search): run the samplers of [conformational] samplers
(:mod:`anif.sampling.registry`: DNMS, RTS, MD, dimer boxes) with the last ensemble on this cycle's
new molecules (configurational cycle) or on the conformer sampling set (conformational cycle);
every candidate, its rho and provenance is committed per work item. In the bootstrap: normal
modes at the oracle's minima (no ensemble yet) and the generated test sets' conformers.

DNMS draws normal modes at the oracle's minimum from the oracle's Hessian when ``[oracle]
hessian = true``, else from the last ensemble's finite-difference Hessian at that minimum; the
candidates' provenance says which (the sampler's registered provenance).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence, Union

import numpy as np

from ...distributed import as_completed_with_progress
from ...labeling import structure_key
from ...sampling.candidates import Candidate
from ...sampling.dnms import dnms_conformers
from ...sampling.registry import get
from ...sampling.settings import FrameSettings
from ...seeds import seed_of
from ..ledger import CandidateRecord, WorkItem, pack
from .context import StageContext, kill_point

log = logging.getLogger("anif.al")

#: Samplers that only ever read the oracle (no ensemble): bootstrap and test-set conformers.
NMS = "nms"


def nms_task(item, settings, source_label: str = "oracle") -> list[Candidate]:
    """Normal-mode conformers around an oracle minimum (no ensemble involved): bootstrap and test sets."""
    seed, (structure, hessian) = item
    return dnms_conformers(structure, hessian, settings, np.random.default_rng(seed), source_label, seed)


def md_frames_task(item, settings) -> list[Candidate]:
    """MD frames of a test molecule with the test set's model (:func:`anif.sampling.frames.md_frames`)."""
    from ...models import load_model
    from ...sampling.frames import md_frames

    seed, (structure, spec) = item
    return md_frames(load_model(spec), structure, seed, settings)


@dataclass(frozen=True)
class Run:
    """One sampler's work in a cycle: its work items, settings, and a model spec (a registered
    sampler on the ensemble) or a task (a function of ``(seed, payload)`` and settings: no QBC)."""

    sampler: str
    payloads: list
    settings: Any
    model: Union[str, Callable]
    rho_hat: float


def _bootstrap_plan(ctx: StageContext) -> list[Run]:
    cycle, c, plan = ctx.cycle.cycle, ctx.config, []
    dnms = c.samplers[get("dnms").section]  # bootstrap and test conformers: normal modes at the oracle's minima
    for t in c.test_sets:
        mols = ctx.ledger.molecules(cycle=cycle, role=f"test:{t.name}", status="ok")
        if t.sampler == "md":
            settings = FrameSettings(temperature=t.temperature, n=t.conformers)
            plan.append(Run(f"test:{t.name}", [(m.minimum(), t.model) for m in mols], settings, md_frames_task, -math.inf))
            continue
        settings = replace(dnms, temperature=t.temperature, keep=t.conformers, pool=max(dnms.pool, 4 * t.conformers))
        plan.append(Run(f"test:{t.name}", [(m.minimum(), m.hessian_matrix()) for m in mols], settings, nms_task,
                        -math.inf))
    if not c.bootstrap.dataset:
        mols = ctx.ledger.molecules(cycle=cycle, role="train", status="ok")
        settings = replace(dnms, keep=c.bootstrap.conformers, pool=max(dnms.pool, 4 * c.bootstrap.conformers))
        plan.append(Run(NMS, [(m.minimum(), m.hessian_matrix()) for m in mols], settings, nms_task, -math.inf))
    return plan


def plan(ctx: StageContext) -> list[Run]:
    """The runs of this cycle, in a fixed order."""
    if ctx.cycle.kind == "bootstrap":
        return _bootstrap_plan(ctx)
    cycle, c = ctx.cycle.cycle, ctx.config
    if ctx.cycle.kind == "configurational":
        mols = ctx.ledger.molecules(cycle=cycle, role="train", status="ok")
    else:
        mols = ctx.ledger.molecules(before=cycle, role="train", status="ok")
        n = c.conformational.molecules_per_cycle
        if n and n < len(mols):
            pick = np.random.default_rng(seed_of(ctx.seed, cycle, "molecules")).choice(len(mols), n, replace=False)
            mols = [mols[i] for i in sorted(pick)]
    if not mols:
        return []
    rho_hat = ctx.cycle.rho_hat
    # random, or QBC on the force disagreement: the samplers keep all (the selection scores them)
    keep_above = rho_hat if c.qbc.prefilter and c.qbc.strategy == "qbc" and c.qbc.measure == "rho" else -math.inf
    structures = [m.minimum() for m in mols]
    hessians = [m.hessian_matrix() if c.oracle.hessian else None for m in mols]
    runs = []
    for name in c.conformational.samplers:
        s = get(name)
        settings = replace(c.samplers[s.section], **s.at_minimum)
        runs.append(Run(name, s.work_items(structures, hessians, c.conformational.dimer_boxes), settings,
                        ctx.previous_model(), s.threshold(rho_hat, keep_above)))
    return runs


def run(ctx: StageContext) -> None:
    from ...sampling.parallel import sampler_items

    cycle, ledger = ctx.cycle.cycle, ctx.ledger
    for r in plan(ctx):
        done = ledger.done_items(cycle, r.sampler)
        todo = [i for i in range(len(r.payloads)) if i not in done]
        log.info("sample %s: %d work items to run (%d done before)", r.sampler, len(todo), len(done))
        if not todo:
            continue
        seed = seed_of(ctx.seed, cycle, r.sampler)
        if callable(r.model):
            items = [(seed_of(seed, i), r.payloads[i]) for i in todo]
            results = ((todo[j], x) for j, x in as_completed_with_progress(
                ctx.pool.client(), r.model, items, f"sample {r.sampler}", settings=r.settings))
        else:
            results = sampler_items(ctx.pool.client(), r.sampler, r.model, [r.payloads[i] for i in todo], r.rho_hat,
                                    seed, r.settings, indices=todo)
        role = r.sampler if r.sampler.startswith("test:") else "train"
        sources = {m.name: m.source for m in ledger.molecules(role=role)}
        provenance = get(r.sampler).provenance if not callable(r.model) else (lambda payload: {})
        for item, result in results:
            with ledger.transaction():
                if isinstance(result, BaseException):
                    ledger.record_item(WorkItem(cycle, r.sampler, item, "failed", 0, f"{type(result).__name__}: {result}"))
                else:
                    _insert_candidates(ctx, r.sampler, item, role, result, provenance(r.payloads[item]), sources)
                    ledger.record_item(WorkItem(cycle, r.sampler, item, "done", len(result)))
            kill_point("sample")


def _insert_candidates(ctx: StageContext, sampler: str, item: int, role: str, candidates: Sequence[Candidate],
                       extra: dict, sources: dict[str, str]) -> None:
    """Candidates of one work item; ``extra``: provenance the sampler adds for this item; ``sources``:
    molecule name -> source (a dimer names two)."""
    for k, c in enumerate(candidates):
        prov = dict(c.provenance)
        prov.update(extra)
        name = c.structure.name or str(prov.get("source", ""))
        ctx.ledger.insert_candidate(CandidateRecord(
            cycle=ctx.cycle.cycle, sampler=sampler, item=int(item), k=k, role=role,
            source="+".join(sorted({sources.get(p, "") for p in name.split("+")})), name=name,
            numbers=pack(c.structure.numbers), coordinates=pack(c.structure.coordinates), rho=_finite(c.rho_kcal_mol),
            energy=_finite(c.energy), key=structure_key(c.structure), provenance=json.dumps(prov, sort_keys=True, default=str)))


def _finite(x):
    return float(x) if x is not None and np.isfinite(x) else None
