"""Compiled CPU kernels of the fused ensemble (``anif/models/csrc/ani_kernels.cpp``).

:func:`load` builds them on first use with torch's C++ extension tooling (g++, ninja) into
torch's extension cache, tuned for the CPU at hand (``-march=native``; the cache entry is named
for the CPU's instruction sets, so a shared home on mixed hardware keeps one build per kind, and
for the source's content, which is built from a copy in the cache entry: checkouts of the same
source share one build, different sources never rebuild each other's), and registers the
TorchScript operators ``torch.ops.anif.aev`` and ``torch.ops.anif.networks`` (the fused
ensemble) and ``torch.ops.anif.aev_vjp`` / ``aev_jvp`` (force training, see :func:`aev_arguments`).
Set ``ANIF_KERNELS=0`` to do without them (the TorchScript path of :mod:`anif.models.kernels`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import sys
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).parent / "csrc" / "ani_kernels.cpp"
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-std=c++17"]

_state: dict = {}


def _cpu_tag() -> str:
    """Short hash of the CPU's instruction-set flags (the build is -march=native)."""
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def _build_directory(name: str) -> Path:
    """torch's extension cache entry for ``name`` (as ``cpp_extension._get_build_directory``,
    without importing cpp_extension, which costs about 0.3 s of setuptools)."""
    from torch import _appdirs

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        cuda = "cpu" if torch.version.cuda is None else f"cu{torch.version.cuda.replace('.', '')}"
        tag = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}_{cuda}"
        root = os.path.join(os.path.realpath(_appdirs.user_cache_dir(appname="torch_extensions")), tag)
    return Path(root) / name


def _record(name: str) -> tuple[Path, dict]:
    """Where a finished build is recorded, and what the record must say to be reused."""
    return _build_directory(name) / "anif_build.json", {"flags": FLAGS, "torch": torch.__version__}


def _load_built(name: str) -> bool:
    """Load an earlier build of ``name`` straight from its record (no compiler, no ninja)."""
    try:
        path, expected = _record(name)
        record = json.loads(path.read_text())
        if any(record.get(k) != v for k, v in expected.items()) or not Path(record["library"]).is_file():
            return False
        torch.ops.load_library(record["library"])
    except Exception:  # no record, an old one, a cache moved away: build as before
        return False
    return hasattr(torch.ops.anif, "networks")


def load() -> bool:
    """Build (once per machine kind) and load the kernels; False, with a warning, when that fails."""
    if "ok" in _state:
        return _state["ok"]
    if os.environ.get("ANIF_KERNELS", "1") == "0":
        _state["ok"] = False
        return False
    try:
        code = SOURCE.read_bytes()
        name = f"anif_kernels_{_cpu_tag()}_{hashlib.sha1(code).hexdigest()[:8]}"
        if not hasattr(torch.ops.anif, "networks") and not _load_built(name):
            # its import logs a CUDA_HOME notice, noise for a CPU build
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            from torch.utils.cpp_extension import _get_build_directory, load as build

            source = Path(_get_build_directory(name, verbose=False)) / SOURCE.name
            if not source.is_file() or source.read_bytes() != code:
                tmp = source.with_name(f".{source.name}.{os.getpid()}")
                tmp.write_bytes(code)
                os.replace(tmp, source)
            before = set(torch.ops.loaded_libraries)
            build(name=name, sources=[str(source)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                  is_python_module=False, verbose=False)
            _write_record(name, set(torch.ops.loaded_libraries) - before)
        _state["ok"] = True
    except Exception as exc:  # no compiler, no ninja, a broken cache: fall back to TorchScript
        warnings.warn(f"anif: compiled kernels unavailable ({type(exc).__name__}: {exc}); "
                      "using the slower TorchScript path", RuntimeWarning, stacklevel=2)
        _state["ok"] = False
    return _state["ok"]


def _write_record(name: str, loaded: set) -> None:
    """Record the library just built, so that later processes load it directly."""
    if len(loaded) != 1:
        return
    path, record = _record(name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps({**record, "library": str(next(iter(loaded)))}))
        os.replace(tmp, path)
    except OSError:
        pass


def aev_arguments(aev_computer) -> tuple:
    """The descriptor settings of torchani's ANI-1x-style ``AEVComputer`` as the trailing
    arguments of ``torch.ops.anif.aev`` / ``aev_vjp`` / ``aev_jvp``."""
    radial, angular = aev_computer.radial, aev_computer.angular
    return (radial.shifts, float(radial.eta), float(radial.cutoff), angular.shifts, angular.sections,
            float(angular.eta), float(angular.zeta), float(angular.cutoff), aev_computer.triu_index)
