"""Settings of a training run (:class:`TrainSettings`) and the constants their defaults refer
to; torch-free, so the command line can show them without importing torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..errors import InputError

#: Elements of every anif architecture (the ANI-1x set).
SYMBOLS = ("H", "C", "N", "O")

#: Ways to split the conformers into folds (the first is the default).
SPLITS = ("conformer", "molecule")

#: Atomic network shapes; 384 = length of the ANI-1x AEV for 4 elements.
ARCHITECTURES = {
    "ani1x": {
        "H": [384, 160, 128, 96, 1],
        "C": [384, 144, 112, 96, 1],
        "N": [384, 128, 112, 96, 1],
        "O": [384, 128, 112, 96, 1],
    },
    "small": {s: [384, 64, 32, 1] for s in SYMBOLS},
}

#: Initial learning rate per start: from scratch, from the released ANI-1x, from an anif ensemble.
INITIAL_LR = {"scratch": 1e-3, "ani1x": 3e-5, "model": 3e-5}

#: Without an explicit ``min_lr``, a member stops once its learning rate has fallen below
#: its initial learning rate times this (about 7 halvings).
MIN_LR_FRACTION = 0.01

#: Force weight (Angstrom^2) when the data hold forces and none is given.
DEFAULT_FORCE_WEIGHT = 0.1


@dataclass
class TrainSettings:
    """Everything that defines a training run (a resumed run must match it, except the fields
    in :data:`RESUMABLE`). ``None`` means "chosen from the data or the start": ``arch`` from
    ``init`` (else ani1x), ``forces`` :data:`DEFAULT_FORCE_WEIGHT` when every conformer has
    forces (else 0), ``lr`` :data:`INITIAL_LR` of the start, ``min_lr`` that times
    :data:`MIN_LR_FRACTION`."""

    members: int = 5
    folds: int = 5
    split: str = "conformer"
    arch: Optional[str] = None
    forces: Optional[float] = None
    init: Optional[str] = None
    max_epochs: int = 300
    seed: int = 0
    batch_size: int = 32
    lr: Optional[float] = None
    patience: int = 100
    lr_patience: int = 10
    min_lr: Optional[float] = None
    allow_unlabelled: bool = False
    checkpoint_seconds: float = 10.0

    @property
    def start(self) -> str:
        """'scratch', 'ani1x' or 'model' (an anif ensemble directory)."""
        return "scratch" if self.init is None else "ani1x" if self.init == "ani1x" else "model"

    def check(self) -> None:
        """Raise InputError for values that cannot be right (before any data is read)."""
        positive_ints = ("members", "max_epochs", "batch_size", "patience", "lr_patience")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")
        if self.folds < 2:
            raise InputError(f"--folds must be at least 2 (got {self.folds})")
        if self.members > self.folds:
            raise InputError(
                f"--members {self.members} > --folds {self.folds}: member i validates on fold i, "
                "so extra members would repeat a validation fold; raise --folds"
            )
        for name in ("lr", "min_lr"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise InputError(f"--{name.replace('_', '-')} must be a positive number (got {value})")
        if self.forces is not None and not (self.forces >= 0 and math.isfinite(self.forces)):
            raise InputError(f"--forces must be >= 0 (got {self.forces})")
        if not self.checkpoint_seconds >= 0:
            raise InputError(f"--checkpoint-every must be >= 0 seconds (got {self.checkpoint_seconds})")
        if self.split not in SPLITS:
            raise InputError(f"unknown --split {self.split!r} (use {' or '.join(SPLITS)})")
        if self.arch is not None and self.arch not in ARCHITECTURES:
            raise InputError(f"unknown --arch {self.arch!r} (use {' or '.join(ARCHITECTURES)})")
