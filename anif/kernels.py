"""Compiled CPU kernels of the fused ensemble (``anif/csrc/ani_kernels.cpp``).

:func:`load` builds them on first use with torch's C++ extension tooling (g++, ninja) into
torch's extension cache, tuned for the CPU at hand (``-march=native``; the cache entry is named
for the CPU's instruction sets, so a shared home on mixed hardware keeps one build per kind, and
for the source's content, which is built from a copy in the cache entry: checkouts of the same
source share one build, different sources never rebuild each other's), and registers the
TorchScript operators ``torch.ops.anif.aev`` and ``torch.ops.anif.networks`` (the fused
ensemble) and ``torch.ops.anif.aev_vjp`` / ``aev_jvp`` (force training, see :func:`aev_arguments`).
Set ``ANIF_KERNELS=0`` to do without them (the TorchScript path of :mod:`anif.fused`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
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


def load() -> bool:
    """Build (once per machine kind) and load the kernels; False, with a warning, when that fails."""
    if "ok" in _state:
        return _state["ok"]
    if os.environ.get("ANIF_KERNELS", "1") == "0":
        _state["ok"] = False
        return False
    try:
        if not hasattr(torch.ops.anif, "networks"):
            # its import logs a CUDA_HOME notice, noise for a CPU build
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            from torch.utils.cpp_extension import _get_build_directory, load as build

            code = SOURCE.read_bytes()
            name = f"anif_kernels_{_cpu_tag()}_{hashlib.sha1(code).hexdigest()[:8]}"
            source = Path(_get_build_directory(name, verbose=False)) / SOURCE.name
            if not source.is_file() or source.read_bytes() != code:
                tmp = source.with_name(f".{source.name}.{os.getpid()}")
                tmp.write_bytes(code)
                os.replace(tmp, source)
            build(name=name, sources=[str(source)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                  is_python_module=False, verbose=False)
        _state["ok"] = True
    except Exception as exc:  # no compiler, no ninja, a broken cache: fall back to TorchScript
        warnings.warn(f"anif: compiled kernels unavailable ({type(exc).__name__}: {exc}); "
                      "using the slower TorchScript path", RuntimeWarning, stacklevel=2)
        _state["ok"] = False
    return _state["ok"]


def aev_arguments(aev_computer) -> tuple:
    """The descriptor settings of torchani's ANI-1x-style ``AEVComputer`` as the trailing
    arguments of ``torch.ops.anif.aev`` / ``aev_vjp`` / ``aev_jvp``."""
    radial, angular = aev_computer.radial, aev_computer.angular
    return (radial.shifts, float(radial.eta), float(radial.cutoff), angular.shifts, angular.sections,
            float(angular.eta), float(angular.zeta), float(angular.cutoff), aev_computer.triu_index)
