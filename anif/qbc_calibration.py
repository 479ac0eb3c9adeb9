"""Calibrating the QBC threshold rho_hat as in the paper's Fig. 1.

A structure is "bad" when its worst ensemble member misses the reference energy by more than
``error_bound`` kcal/mol per sqrt(atom). rho_hat is the largest threshold that still flags
(rho > rho_hat) at least a fraction ``capture`` of the bad structures: with the bad
structures' rho sorted high to low and k = ceil(capture * n_bad), rho_hat is the midpoint of
the k-th and (k+1)-th values (just below the k-th when k = n_bad). The paper finds
rho_hat = 0.23 kcal/mol for 1.5 kcal/mol and 98%.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from .errors import InputError


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
    error_bound: float = 1.5,
    capture: float = 0.98,
) -> Calibration:
    """rho_hat from rho (kcal/mol), worst member error per sqrt(atom) and ensemble energy error (kcal/mol)."""
    rho, worst_error, energy_error = (np.asarray(a, dtype=float).ravel() for a in (rho, worst_error, energy_error))
    if not (rho.shape == worst_error.shape == energy_error.shape) or rho.size == 0:
        raise InputError("calibration needs one rho, worst error and energy error per structure")
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


def qbc_calibrate_command(
    model: str = typer.Option(..., "--model", help="'ani1x' or an anif model directory"),
    data: Path = typer.Option(..., "--data", help="ANI-format .h5 with reference energies (e.g. a COMP6 file)"),
    error: float = typer.Option(1.5, "--error", help="error bound, kcal/mol per sqrt(atom)"),
    capture: float = typer.Option(0.98, "--capture", help="fraction of bad structures rho_hat must flag"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the calibration as JSON here"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="error-vs-rho density plot (PNG) with rho_hat"),
) -> None:
    """Find rho_hat catching --capture of the structures whose worst member error exceeds --error."""
    from .benchmark import plot_error_vs_rho, predict
    from .comp6 import read_comp6
    from .models import load_model

    predictions = predict(load_model(model).double(), read_comp6([data]), forces=False)
    rho = np.concatenate([p.rho_kcal_mol for p in predictions])
    worst = np.concatenate([p.worst_member_error_per_sqrt_atom for p in predictions])
    energy_error = np.concatenate([p.energy_error_kcal for p in predictions])
    cal = calibrate(rho, worst, energy_error, error, capture)
    above = "-" if cal.rmse_above is None else f"{cal.rmse_above:.2f}"
    below = "-" if cal.rmse_below is None else f"{cal.rmse_below:.2f}"
    print(f"rho_hat = {cal.rho_hat:.4f} kcal/mol (catches {cal.captured:.1%} of {cal.n_bad} structures with "
          f"worst member error > {error:g} kcal/mol/sqrt(atom))")
    print(f"selected: {cal.selected_fraction:.1%} of {cal.n_structures} structures")
    print(f"ensemble energy RMSE above rho_hat: {above} kcal/mol; below: {below} kcal/mol")
    if json_out is not None:
        json_out.write_text(json.dumps(asdict(cal), indent=2))
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_error_vs_rho(rho, worst, cal.rho_hat, error, plot, f"{model}: rho_hat calibration on {data.name}")
        print(f"plot: {plot}")


qbc_app = typer.Typer(help="Query-by-committee threshold tools.", no_args_is_help=True)
qbc_app.command("calibrate")(qbc_calibrate_command)
