"""Writing outputs so that a failed or killed run never damages an earlier good one.

- :func:`atomic_write_text`: a file written beside its destination, flushed to disk, then renamed
  over it (readers see the old or the new file, never a torn one).
- :func:`staged_directory`: a run folder built in a hidden sibling and swapped into place only
  when the run ends; an exception leaves any earlier folder untouched and removes the partial one.
  Creating the sibling first also checks that the destination is writable before any work.
- :func:`check_output_folder`: ``--out`` is never a licence to delete: only a new or empty folder,
  or an earlier run of the same command (it holds a marker file), may become a run folder.
- :func:`strict_json`: JSON every parser reads (NaN and infinities as null).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import InputError


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """``write(file)`` into a temporary file beside ``path``, flushed to disk, then renamed over it."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False) as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(fh.name, path)
    _fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and durably."""
    return atomic_write_bytes(path, text.encode())


def _is_run(folder: Path, markers: tuple[str, ...]) -> bool:
    return any((folder / m).exists() for m in markers)


def check_output_folder(out: str | Path, markers: tuple[str, ...] = (), what: str = "a run") -> Path:
    """Before any work: ``out`` may become (or be replaced by) a run folder only if it does not exist,
    is empty, or is an earlier run (it holds one of ``markers``). A user's folder, a file, the
    current folder or one above it are refused with one line: ``--out`` is never a licence to delete.
    Returns ``out`` made absolute (``--out .`` has a name then)."""
    out = Path(os.path.abspath(out))
    cwd = Path.cwd().resolve()
    resolved = out.resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InputError(f"--out {out}: the current folder (or one above it) cannot be replaced by {what}; "
                         "name a new folder, e.g. --out run1")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and not os.access(out, os.R_OK | os.X_OK):
        raise InputError(f"cannot write to {out} (permission denied)")
    if out.is_dir() and any(out.iterdir()) and not _is_run(out, markers):
        raise InputError(f"--out {out}: a folder that is not {what} (no {' or '.join(markers) or 'run marker'}) "
                         "and not empty; it is left alone: name a new or empty folder")
    return out


class _Staging:
    """See :func:`staged_directory`; ``destination`` may be changed inside the ``with`` block."""

    def __init__(self, out: Path, markers: tuple[str, ...], what: str):
        if markers:
            out = check_output_folder(out, markers, what)
        elif not Path(out).name:
            out = Path(os.path.abspath(out))
        self.destination = Path(out)
        self.markers = markers
        self.stage: Path | None = None

    def __enter__(self) -> Path:
        out = self.destination
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: exists and is not a folder")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
            umask = os.umask(0)
            os.umask(umask)
            stage.chmod(0o777 & ~umask)  # mkdtemp's 0700 would outlive the swap
        except OSError as exc:
            raise InputError(f"cannot write to {out} ({exc.strerror or exc})") from None
        self.stage = stage
        return stage

    def __exit__(self, kind, exc, tb) -> bool:
        stage = self.stage
        if kind is not None:
            shutil.rmtree(stage, ignore_errors=True)
            return False
        out = self.destination
        try:
            if self.markers and out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_run(out, self.markers))):
                raise InputError(f"{out}: appeared during the run and is not a run folder; left alone")
            old = None
            if out.exists():
                old = out.parent / f".{out.name}.old-{os.getpid()}"
                os.replace(out, old)
            os.replace(stage, out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _fsync_directory(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False


def staged_directory(out: str | Path, markers: tuple[str, ...] = (), what: str = "a run") -> _Staging:
    """``with staged_directory(out) as stage``: a fresh folder to write a run into; on success it
    replaces ``out`` (an earlier run there is removed only then), on an exception (or SIGINT/SIGTERM,
    which the CLI turns into exceptions) it is deleted and ``out`` stays as it was. With ``markers``
    (files that mark an earlier run of the same command) a folder that is not such a run and not
    empty is refused before any work (:func:`check_output_folder`). Set ``.destination`` on the
    returned object inside the block to put the finished folder elsewhere."""
    return _Staging(Path(out), tuple(markers), what)


def _plain_finite(value):
    """``value`` with NaN/inf floats (numpy ones too) as None, numpy scalars/arrays as Python."""
    import math

    if isinstance(value, dict):
        return {str(k): _plain_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_finite(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return _plain_finite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def strict_json(obj, indent: int | None = 2, **kwargs) -> str:
    """JSON that every parser reads: NaN and infinities (undefined numbers) become null."""
    return json.dumps(_plain_finite(obj), indent=indent, allow_nan=False, **kwargs)
