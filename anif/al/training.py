"""The one place the campaign calls training (issue 12 changes training; adapt here only)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

from ..errors import InputError
from ..training import TrainSettings, train_ensemble

log = logging.getLogger("anif.al")


def train_cycle_model(data_files: Sequence[Path], out: Path, settings: TrainSettings, init: Optional[Path],
                      jobs: int, progress: bool) -> str:
    """Train (or resume) the ensemble in ``out``, warm-started from the model folder ``init``.

    Returns a note for the ledger: empty, or why the warm start fell back to a cold start (a
    training that does not accept ``init=MODEL_DIR`` refuses it before writing anything).
    """
    files = [str(f) for f in data_files]
    if init is not None:
        try:
            train_ensemble(files, out, replace(settings, init=str(init)), jobs=jobs, progress=progress)
            return ""
        except InputError as exc:
            if "init" not in str(exc):
                raise
            note = f"warm start from {init} unavailable ({exc}); trained from scratch"
            log.info(note)
    else:
        note = ""
    train_ensemble(files, out, replace(settings, init=None), jobs=jobs, progress=progress)
    return note
