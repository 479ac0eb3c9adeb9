"""``anif train``: k-fold ANI ensembles (anif.training); defaults come from TrainSettings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import check_distinct, check_not_input, check_writable_folder, non_negative, seed_option
from ..training.settings import DEFAULT_FORCE_WEIGHT, INITIAL_LR, MIN_LR_FRACTION, TrainSettings

_D = TrainSettings()


def _say_on_stdout(logger: str) -> None:
    """Show a library logger's INFO messages as plain lines on stdout."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger(logger)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
_LR = ", ".join(f"{k} {v:g}" for k, v in INITIAL_LR.items())


def train_command(
    data: list[Path] = typer.Option(..., "--data", metavar="FILE", help="ANI-format HDF5 training file(s)."),
    more_data: Optional[list[Path]] = typer.Argument(None, metavar="FILE", help="More training files (--data a.h5 b.h5).", show_default=False),
    out: Path = typer.Option(..., "--out", help="Model directory to write (and resume from)."),
    members: int = typer.Option(_D.members, help="Ensemble members (L)."),
    folds: int = typer.Option(_D.folds, help="Cross-validation folds; member i validates on fold i."),
    split: str = typer.Option(_D.split, help="conformer (the paper's k-fold CV) or molecule (whole molecules held out)."),
    arch: Optional[str] = typer.Option(_D.arch, help="Network shapes: ani1x or small (default: those of --init, else ani1x)."),
    forces: Optional[float] = typer.Option(
        _D.forces, metavar="WEIGHT",
        help=f"Weight of the force term; 0: energies only (default: {DEFAULT_FORCE_WEIGHT:g} when every conformer has forces, else 0).",
    ),
    init: Optional[str] = typer.Option(_D.init, help="Start from 'ani1x' (the released networks) or an anif model directory."),
    max_epochs: int = typer.Option(_D.max_epochs, help="Maximum epochs per member (raise it to continue a finished run)."),
    seed: int = seed_option(_D.seed, "Seed of the split, initial weights and shuffling"),
    batch_size: int = typer.Option(_D.batch_size, help="Conformers per mini-batch."),
    lr: Optional[float] = typer.Option(_D.lr, help=f"Initial AdamW learning rate (default per start: {_LR})."),
    patience: int = typer.Option(_D.patience, help="Stop after this many epochs without a better validation RMSE."),
    lr_patience: int = typer.Option(_D.lr_patience, help="Halve the learning rate after this many epochs without a 1% fall of the training loss."),
    min_lr: Optional[float] = typer.Option(_D.min_lr, help=f"Stop when the learning rate falls below this (default: {MIN_LR_FRACTION:g} x the initial one)."),
    allow_unlabelled: bool = typer.Option(
        _D.allow_unlabelled, "--allow-unlabelled",
        help="Also train on sampler candidates (their energies are the ensemble mean, not reference labels).",
    ),
    checkpoint_every: float = typer.Option(_D.checkpoint_seconds, metavar="SECONDS", callback=non_negative, help="Checkpoint each member at most this often."),
    workers: int = typer.Option(0, "--workers", min=0,
                                help="Parallel processes, each training one member (1: one after another; 0: min(members, cores))."),
) -> None:
    """Train an ANI ensemble on a k-fold split (by conformer); rerun the same command to resume."""
    from ..training.trainer import train_ensemble

    settings = TrainSettings(
        members=members, folds=folds, split=split, arch=arch, forces=forces, init=init, max_epochs=max_epochs,
        seed=seed, batch_size=batch_size, lr=lr, patience=patience, lr_patience=lr_patience, min_lr=min_lr,
        allow_unlabelled=allow_unlabelled, checkpoint_seconds=checkpoint_every,
    )
    settings.check()
    from ..outputs import check_output_folder

    files = list(data) + list(more_data or [])
    check_distinct(files, "--data")
    # a model folder is written into (and resumed from): refuse a user's folder that is not one
    check_output_folder(out, ("model.json", "checkpoints/run.json"), "an `anif train` model folder")
    check_not_input([out], files + ([Path(init)] if init and Path(init).exists() else []), replaces=True)
    check_writable_folder(out)
    _say_on_stdout("anif.training")  # e.g. "member 0: resuming after epoch 12"
    result = train_ensemble(files, out, settings, jobs=workers)
    rmse = ", ".join(f"{x:.3f}" for x in result.valid_rmse_kcal_mol)
    terms = f"energies + forces (weight {result.force_weight:g})" if result.force_weight else "energies only"
    print(f"saved {len(result.members)}-member ensemble to {out} ({terms}, learning rate {result.lr:g}); "
          f"validation RMSE (kcal/mol): {rmse}; self-energy fit {result.self_energy_rmse_kcal_mol:.3f}")
    for line in result.warnings:
        print(f"warning: {line}")
