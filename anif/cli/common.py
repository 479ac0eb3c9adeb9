"""What the commands share: option validators and the early check that outputs can be written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def positive(value):
    """typer callback: the value, if None or > 0."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be > 0 (got {value})")
    return value


def non_negative(value):
    """typer callback: the value, if None or >= 0."""
    if value is not None and not value >= 0:
        raise typer.BadParameter(f"must be >= 0 (got {value})")
    return value


def check_writable(*paths: Optional[Path]) -> None:
    """Before any work: each output file's folder (a folder itself for a path ending in a folder
    name without suffix that exists or will be made) can be created and written."""
    from ..errors import InputError

    for path in paths:
        if path is None:
            continue
        folder = path if (path.is_dir() or not path.suffix) else path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot write to {path} ({exc.strerror or exc})") from None
        if not os.access(folder, os.W_OK):
            raise InputError(f"cannot write to {path} (permission denied)")
        if path.exists() and path.is_dir() and path.suffix:
            raise InputError(f"{path}: is a folder, expected a file")
