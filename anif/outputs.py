"""Writing outputs so that a failed or killed run never damages an earlier good one.

- :func:`atomic_write_text`: a file written beside its destination, flushed to disk, then renamed
  over it (readers see the old or the new file, never a torn one).
- :func:`staged_directory`: a run folder built in a hidden sibling and swapped into place only
  when the run ends; an exception leaves any earlier folder untouched and removes the partial one.
  Creating the sibling first also checks that the destination is writable before any work.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

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


@contextmanager
def staged_directory(out: str | Path) -> Iterator[Path]:
    """Yield a fresh folder to write a run into; on success it replaces ``out`` (an earlier run
    there is removed only then), on an exception it is deleted and ``out`` stays as it was."""
    out = Path(out)
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
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(stage, out)
    _fsync_directory(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
