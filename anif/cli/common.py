"""What the commands share: option validators, the options spelled alike in every command, and
the early check that outputs can be written.

Flag vocabulary, one spelling each: ``--json`` is a switch (JSON on stdout), ``--json-out PATH``
writes a JSON file; ``--rho-hat`` is the QBC threshold; ``--workers`` counts parallel processes;
``--threads`` counts threads inside one process (its help says whose); structures come as
``--smiles``/``--input`` (positional in dimers/search too); MD length is ``--time-ps`` (md also
takes ``--steps``)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import typer


#: Seeds go to numpy, torch, RDKit and OpenMM; OpenMM's (a C int) is the narrowest.
SEED_MAX = 2**31 - 1


def _finite(value):
    if value is not None and isinstance(value, float) and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number (got {value})")
    return value


def finite(value):
    """typer callback: the value, if None or a finite number."""
    return _finite(value)


def positive(value):
    """typer callback: the value, if None or a finite number > 0."""
    _finite(value)
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be > 0 (got {value})")
    return value


def non_negative(value):
    """typer callback: the value, if None or a finite number >= 0."""
    _finite(value)
    if value is not None and not value >= 0:
        raise typer.BadParameter(f"must be >= 0 (got {value})")
    return value


#: Hotter than any molecule survives; beyond it velocities overflow and MD is nonsense.
MAX_TEMPERATURE = 20000.0


def temperature(value):
    """typer callback: a temperature (K), finite, > 0 and at most :data:`MAX_TEMPERATURE`."""
    positive(value)
    if value is not None and value > MAX_TEMPERATURE:
        raise typer.BadParameter(f"must be at most {MAX_TEMPERATURE:g} K (got {value:g})")
    return value


def fraction(value):
    """typer callback: the value, if None or in (0, 1]."""
    _finite(value)
    if value is not None and not 0 < value <= 1:
        raise typer.BadParameter(f"must be in (0, 1] (got {value})")
    return value


def seed(value):
    """typer callback: a seed every random number generator here accepts, 0 .. 2**31-1."""
    if value is not None and not 0 <= value <= SEED_MAX:
        raise typer.BadParameter(f"must be between 0 and {SEED_MAX} (got {value})")
    return value


def seed_option(default, help: str = "random seed"):
    return typer.Option(default, "--seed", callback=seed, help=f"{help} (0 .. {SEED_MAX})")


def json_out_option(what: str):
    """``--json-out PATH``: write ``what`` as JSON to a file."""
    return typer.Option(None, "--json-out", metavar="PATH", help=f"write {what} as JSON to PATH")


def load_model(spec: str):
    """:func:`anif.models.load_model` on one torch thread: reading an ensemble is thousands of tiny
    tensor operations, which more threads only slow down (about 0.5 s on 2 busy cores)."""
    import torch

    from ..models.ensemble import load_model as load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load(spec)
    finally:
        torch.set_num_threads(threads)


def _probe(folder: Path, path: Path) -> None:
    """Create and remove a file in ``folder`` (or its nearest existing parent, if it is still to be
    made): the only sure test (read-only mounts, /proc, root)."""
    import tempfile

    from ..errors import InputError

    folder = Path(os.path.abspath(folder))
    existing = folder
    while not existing.exists() and existing != existing.parent:  # nothing is created here
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{path}: cannot write there ({existing} is not a folder)")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".anif-probe-"):
            pass
    except OSError as exc:
        raise InputError(f"{path}: cannot write there ({exc.strerror or exc})") from None


def check_writable_file(*paths: Optional[Path]) -> None:
    """Before any work: each output file can be written (its folder exists or can be made and takes
    a file; the path itself is not a folder)."""
    from ..errors import InputError

    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path}: is a folder, expected a file")
        if path.exists() and not path.is_file():
            raise InputError(f"{path}: is not a regular file")
        if path.exists() and not os.access(path, os.W_OK):
            raise InputError(f"{path}: cannot write there (permission denied)")
        if path.parent.exists() and not path.parent.is_dir():
            raise InputError(f"{path}: cannot write there ({path.parent} is not a folder)")
        _probe(path.parent, path)


def check_writable_folder(*paths: Optional[Path]) -> None:
    """Before any work: each output folder exists or can be made, and takes files."""
    from ..errors import InputError

    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: exists and is not a folder")
        _probe(path, path)


def check_writable(*paths: Optional[Path]) -> None:
    """Before any work: each output file's folder (a folder itself for a path ending in a folder
    name without suffix that exists or will be made) can be created and written."""
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if path.is_dir() or not path.suffix:
            check_writable_folder(path)
        else:
            check_writable_file(path)


def _resolved(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except OSError:
        return Path(os.path.abspath(path))


def check_not_input(outputs, inputs, replaces: bool = False) -> None:
    """Before any work: no output is (or links to) an input; with ``replaces`` (an output folder a
    finished run replaces) no output folder holds an input either. ``outputs``/``inputs``: paths or None."""
    from ..errors import InputError

    ins = [(p, _resolved(Path(p))) for p in inputs if p is not None]
    for out in outputs:
        if out is None:
            continue
        o = _resolved(Path(out))
        for given, r in ins:
            same = r == o
            if not same and Path(out).exists() and Path(given).exists():
                try:
                    same = os.path.samefile(out, given)
                except OSError:
                    same = False
            if same:
                raise InputError(f"{out}: is also an input ({given}); write the output elsewhere")
            if replaces and o in r.parents:
                raise InputError(f"{out}: the output folder holds the input {given}; write the output elsewhere")


def check_distinct(paths, what: str = "input") -> None:
    """The same file given twice (by any spelling or link) would be counted twice: refused."""
    from ..errors import InputError

    seen: dict[Path, Path] = {}
    for p in paths:
        if p is None:
            continue
        key = _resolved(Path(p))
        if key in seen:
            raise InputError(f"{p}: given twice as {what} (also as {seen[key]}); each file counts once")
        seen[key] = Path(p)


def model_inputs(model: str) -> list[Path]:
    """The files a ``--model`` folder is read from (none for 'ani1x'), for :func:`check_not_input`."""
    path = Path(model)
    if not path.is_dir():
        return []
    return [path, path / "model.json", path / "weights.pt"]
