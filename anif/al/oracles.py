"""The campaign's oracle (:mod:`anif.labeling.oracles`), as its config names it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from ..labeling.oracles import ModelMinimaOracle, Oracle, PySCFOracle, TeacherOracle
from ..labeling.reference import check_level, resolve_device
from .config import Config

#: The campaign folder's converged orbitals (SCF initial guesses shared by the workers).
DENSITIES = "densities"


def make_oracle(config: Config, threads: Optional[int] = None, folder: Optional[str | Path] = None) -> Oracle:
    """The oracle a config names (``[campaign] oracle``), its PySCF level from ``[oracle]``, with
    minima from a model when ``[oracle] minima`` names one; ``folder``: the campaign folder, whose
    ``densities/`` the PySCF oracle's workers share."""
    spec, o = config.campaign.oracle, config.oracle
    if spec.startswith("model:"):
        oracle = TeacherOracle(spec[len("model:"):])
    else:
        level = replace(check_level(o.level), device=resolve_device(o.device))  # one-line error for cuda without one
        oracle = PySCFOracle(level, o.threads or threads, o.convergence, o.max_steps,
                             True if folder is None else str(Path(folder) / DENSITIES))
    if o.minima == "oracle":
        return oracle
    return ModelMinimaOracle(oracle, TeacherOracle(o.minima[len("model:"):]))
