"""Train (Fig. 2, "train ensemble"): the cycle's ensemble on the training set so far, warm-started
from the last cycle's members unless [training] warm_start = false; a cycle without new labels
keeps the last model."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Optional

from ..training import train_cycle_model
from .context import DATASET, StageContext, model_dir

log = logging.getLogger("anif.al")


def train_model(ctx: StageContext, out: Path, init: Optional[str]) -> str:
    """Train ``out`` from ``init`` (an earlier model of this campaign), else from the campaign's
    start ([campaign] init, or scratch). Every training of a campaign runs at the learning rate
    of its start (:data:`anif.training.INITIAL_LR`, unless [training] lr says otherwise): a
    cycle continues the campaign's training, it does not fine-tune a finished ensemble."""
    from ...training import INITIAL_LR

    ctx.pool.close()  # training forks its member processes: no Dask threads alive meanwhile
    t, start = ctx.config.training, ctx.config.campaign.init or None
    lr = t.train.lr or INITIAL_LR[replace(t.train, init=start).start]
    settings = replace(t.train, seed=ctx.seed, lr=lr)
    return train_cycle_model([ctx.folder / DATASET], out, settings, init or start, t.jobs, ctx.progress)


def run(ctx: StageContext) -> None:
    cycle = ctx.cycle.cycle
    out = model_dir(ctx.folder, cycle)
    new = ctx.ledger.count_train_labels(cycle, "ok")
    if cycle > 0 and not new:
        previous = Path(ctx.previous_model())
        if not (out / "model.json").is_file():
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(previous, tmp)
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
        note = f"no new labels: the model of cycle {cycle - 1} is kept"
    else:
        init = ctx.previous_model() if cycle > 0 and ctx.config.training.warm_start else None
        note = train_model(ctx, out, init)
        if note:
            log.warning("cycle %d training: %s", cycle, note)
    with ctx.ledger.transaction():
        ctx.ledger.set_model(cycle, str(out), note)
