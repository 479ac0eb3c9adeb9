"""What the commands share: option validators, the options spelled alike in every command, and
the early check that outputs can be written.

Flag vocabulary (old spellings stay accepted as aliases): ``--json`` is a switch (JSON on
stdout), ``--json-out PATH`` writes a JSON file (``--json PATH`` in bench/qbc/data info);
``--rho-hat`` is the QBC threshold (``--rho-threshold`` in md); ``--workers`` counts parallel
processes (``--jobs`` in train); ``--threads`` counts threads inside one process (its help says
whose); structures come as ``--smiles``/``--input`` (positional in dimers/search too); MD length
is ``--time-ps`` (md also takes ``--steps``; rts's ``--ramp-ps`` is an alias)."""

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


def json_out_option(what: str):
    """``--json-out PATH`` (old spelling ``--json PATH``): write ``what`` as JSON to a file."""
    return typer.Option(None, "--json-out", "--json", metavar="PATH", help=f"write {what} as JSON to PATH (--json PATH: old spelling)")


def load_model(spec: str):
    """:func:`anif.models.load_model` on one torch thread: reading an ensemble is thousands of tiny
    tensor operations, which more threads only slow down (about 0.5 s on 2 busy cores)."""
    import torch

    from ..models import load_model as load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load(spec)
    finally:
        torch.set_num_threads(threads)


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
