"""The one place the campaign calls training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from ..training import TrainSettings, train_ensemble


def train_cycle_model(data_files: Sequence[Path], out: Path, settings: TrainSettings, init: Optional[str],
                      jobs: int, progress: bool) -> str:
    """Train (or resume) the ensemble in ``out``, warm-started from ``init`` (a model folder or
    "ani1x": its members at epoch 0, the fine-tuning learning rate) or from scratch when None.

    Returns a note for the ledger: the training's warnings (members that did not improve on their
    start or are worse than the self-energy fit), empty when there are none.
    """
    result = train_ensemble([str(f) for f in data_files], out, replace(settings, init=init), jobs=jobs,
                            progress=progress)
    return "; ".join(result.warnings)
