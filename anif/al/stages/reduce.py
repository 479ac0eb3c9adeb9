"""Reduce (Fig. 2a, dataset reduction): bootstrap from a labelled set ([bootstrap] dataset): train
on a random 2%, add a random 2% of the fail cases of the rest, repeat until few fail
(:mod:`anif.al.selection`); every round is committed, so a kill resumes at the next round."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ...labeling import structure_key
from ...seeds import seed_of
from ...structures import Structure
from .. import selection
from ..ledger import LabelRecord, pack
from .context import MODELS, StageContext, kill_point
from .train import train_model

log = logging.getLogger("anif.al")


def run(ctx: StageContext) -> None:
    from ...accuracy import predict
    from ...datasets.comp6 import read_comp6_file
    from ...models import load_model
    from ...units import HARTREE_TO_KCAL_MOL

    b = ctx.config.bootstrap
    molecules = read_comp6_file(b.dataset, subset="bootstrap")
    flat = [(m, c) for m in molecules for c in range(m.n_conformers)]
    n_atoms = np.array([m.species.shape[0] for m, _ in flat])
    energies = np.concatenate([m.energies for m in molecules])
    method = f"dataset:{Path(b.dataset).name}"
    while True:
        rounds = ctx.ledger.reduction_rounds()
        if not rounds:
            start = selection.reduction_start(len(flat), b.start_fraction, np.random.default_rng(seed_of(ctx.seed, "reduce", 0)))
            _round(ctx, 0, start, len(flat) - len(start), None, False, flat, method)
            continue
        last = rounds[-1]
        if last.finished:
            break
        included = np.sort(np.concatenate([r.indices() for r in rounds]))
        rest = np.setdiff1d(np.arange(len(flat)), included)
        if last.round + 1 >= b.max_rounds:
            log.info("dataset reduction: max_rounds %d reached", b.max_rounds)
            _round(ctx, last.round + 1, np.zeros(0, dtype=np.int64), len(rest), None, True, flat, method)
            break
        ctx.sync_stores()
        out = ctx.folder / MODELS / "reduction" / f"round_{last.round:02d}"
        previous = ctx.folder / MODELS / "reduction" / f"round_{last.round - 1:02d}"
        train_model(ctx, out, str(previous) if ctx.config.training.warm_start and last.round > 0 else None)
        predictions = predict(load_model(str(out)).double(), molecules, forces=False, progress=ctx.progress)
        error = (np.concatenate([p.energy for p in predictions]) - energies) * HARTREE_TO_KCAL_MOL
        failing = selection.fail_cases(error[rest], n_atoms[rest], b.fail_threshold)
        rng = np.random.default_rng(seed_of(ctx.seed, "reduce", last.round + 1))
        added, finished = selection.reduction_step(rest, failing, b.add_fraction, b.stop_fraction, rng)
        log.info("dataset reduction round %d: %d of %d remaining fail; adding %d%s", last.round + 1,
                 int(failing.sum()), len(rest), len(added), " (last round)" if finished else "")
        _round(ctx, last.round + 1, added, len(rest) - len(added), int(failing.sum()), finished, flat, method)
        kill_point("reduce")
    ctx.sync_stores()


def _round(ctx: StageContext, index: int, added: np.ndarray, n_rest: int, n_fail: Optional[int], finished: bool,
           flat: list, method: str) -> None:
    """Commit one round and the labels (taken from the dataset) of the conformers it adds."""
    with ctx.ledger.transaction():
        ctx.ledger.add_reduction_round(index, added, n_rest, n_fail, finished)
        seq = ctx.ledger.next_seq()
        source = Path(ctx.config.bootstrap.dataset).stem
        for k, i in enumerate(added):
            m, c = flat[int(i)]
            s = Structure(m.species, m.coordinates[c], name=f"{m.name}/{c}")
            forces = None if m.forces is None or not np.isfinite(m.forces[c]).all() else pack(m.forces[c])
            ctx.ledger.insert_label(LabelRecord(
                key=structure_key(s), cycle=0, candidate=None, role="train", status="ok", origin="dataset",
                sampler="reduction", source=source, name=s.name, rho=None, numbers=pack(s.numbers),
                coordinates=pack(s.coordinates), seq=seq + k, energy=float(m.energies[c]), forces=forces, method=method))
