"""Calibrating the QBC threshold rho_hat as in the paper's Fig. 1.

A structure is "bad" when its worst ensemble member misses the reference energy by more than
``error_bound`` kcal/mol per sqrt(atom). rho_hat is the largest threshold that still flags
(rho > rho_hat) at least a fraction ``capture`` of the bad structures: with the bad
structures' rho sorted high to low and k = ceil(capture * n_bad), rho_hat is the midpoint of
the k-th and (k+1)-th values (just below the k-th when k = n_bad). The paper finds
rho_hat = 0.23 kcal/mol for 1.5 kcal/mol and 98%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import InputError
from .settings import CAPTURE, PAPER_ERROR_BOUND


@dataclass
class Calibration:
    rho_hat: float  # kcal/mol
    error_bound: float  # kcal/mol per sqrt(atom)
    capture: float  # requested fraction of bad structures to flag
    captured: float  # achieved fraction
    n_structures: int
    n_bad: int
    selected_fraction: float  # fraction of all structures with rho > rho_hat
    rmse_above: Optional[float]  # ensemble energy RMSE (kcal/mol) where rho > rho_hat
    rmse_below: Optional[float]  # ... where rho <= rho_hat


def _rmse(x: np.ndarray) -> Optional[float]:
    return float(np.sqrt(np.mean(x**2))) if x.size else None


def calibrate(
    rho: np.ndarray,
    worst_error: np.ndarray,
    energy_error: np.ndarray,
    error_bound: float = PAPER_ERROR_BOUND,
    capture: float = CAPTURE,
) -> Calibration:
    """rho_hat from rho (kcal/mol), worst member error per sqrt(atom) and ensemble energy error (kcal/mol)."""
    rho, worst_error, energy_error = (np.asarray(a, dtype=float).ravel() for a in (rho, worst_error, energy_error))
    if not (rho.shape == worst_error.shape == energy_error.shape) or rho.size == 0:
        raise InputError("calibration needs one rho, worst error and energy error per structure")
    if not (np.isfinite(rho).all() and np.isfinite(worst_error).all() and np.isfinite(energy_error).all()):
        raise InputError("calibration needs finite rho and errors (the data hold NaN or infinite values)")
    if not 0.0 < capture <= 1.0:
        raise InputError(f"capture must be in (0, 1], got {capture}")
    bad = np.sort(rho[worst_error > error_bound])[::-1]
    if bad.size == 0:
        raise InputError(
            f"no structure has a worst member error above {error_bound:g} kcal/mol per sqrt(atom): nothing to calibrate on"
        )
    k = math.ceil(capture * bad.size - 1e-9)
    below = bad[k] if k < bad.size else max(0.0, bad[-1] - 1e-6 * max(abs(bad[-1]), 1e-12))
    rho_hat = 0.5 * (bad[k - 1] + below)
    above = rho > rho_hat
    return Calibration(
        rho_hat=float(rho_hat),
        error_bound=error_bound,
        capture=capture,
        captured=float(np.mean(bad > rho_hat)),
        n_structures=int(rho.size),
        n_bad=int(bad.size),
        selected_fraction=float(np.mean(above)),
        rmse_above=_rmse(energy_error[above]),
        rmse_below=_rmse(energy_error[~above]),
    )
