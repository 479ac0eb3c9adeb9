"""The one place the campaign calls training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from ..training import TrainSettings, train_ensemble


def train_cycle_model(data_files: Sequence[Path], out: Path, settings: TrainSettings, init: Optional[Path],
                      jobs: int, progress: bool) -> str:
    """Train (or resume) the ensemble in ``out``, warm-started from the model folder ``init``
    (its members at epoch 0, the fine-tuning learning rate) or from scratch when None.

    Returns a note for the ledger: the training's warnings (members that did not improve on their
    start or are worse than the self-energy fit), empty when there are none. Members trained from
    scratch that all stayed at epoch 0 are identical (the self-energy fit): they never disagree, so
    the next QBC test selects nothing; the note says so.
    """
    result = train_ensemble([str(f) for f in data_files], out, replace(settings, init=None if init is None else str(init)),
                            jobs=jobs, progress=progress)
    notes = list(result.warnings)
    if init is None and all(m.best_epoch == 0 for m in result.members):
        notes.append("every member is still the self-energy fit, so the members agree exactly (rho = 0) and QBC "
                     "will select nothing: the training data are too few (add bootstrap molecules or conformers)")
    return "; ".join(notes)
