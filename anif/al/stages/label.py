"""Label (Fig. 2, "reference calculation"): the oracle's energy and forces for every pending
label of the cycle (:func:`anif.labeling.oracles.label_task`, as ``anif label``), committed one by
one with their provenance (a resumed run computes only what is missing); then
``dataset.h5``, the generated test sets and ``sampling_set.h5`` catch up with the ledger."""

from __future__ import annotations

import logging

from ...distributed import as_completed_with_progress
from ...errors import AnifError
from ...labeling.oracles import label_task, stamped
from .context import DATASET, StageContext, kill_point

log = logging.getLogger("anif.al")


def run(ctx: StageContext) -> None:
    cycle, ledger, method = ctx.cycle.cycle, ctx.ledger, ctx.oracle.method
    pending = ledger.pending_labels(cycle)
    log.info("label: %d structures to label (%d of this cycle labelled or failed before)", len(pending),
             ledger.count_settled(cycle))
    if pending:
        structures = [r.structure() for r in pending]
        for i, label in as_completed_with_progress(ctx.pool.client(), label_task, structures, f"label ({method})",
                                                   oracle=ctx.oracle):
            if isinstance(label, BaseException):
                label = stamped(structures[i], ctx.oracle, ok=False,
                                reason=f"worker error: {type(label).__name__}: {label}")
            with ledger.transaction():
                ledger.settle_label(pending[i].key, label)
            kill_point("label")
    counts = ledger.oracle_label_counts(cycle)
    if counts.get("failed") and not counts.get("ok"):
        raise AnifError(f"the oracle failed all {counts['failed']} labels of cycle {cycle} (e.g. {ledger.a_failure(cycle)}); "
                        f"the failures are recorded in {ledger.path}, earlier labels are kept in {DATASET}")
    for t in ctx.config.test_sets:
        if t.smiles and not ledger.count_ok(f"test:{t.name}"):
            raise AnifError(f"test set {t.name}: the oracle labelled none of its conformers")
    size = ctx.sync_stores()
    with ledger.transaction():
        ledger.set_dataset_size(cycle, size)
