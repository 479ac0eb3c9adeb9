"""``anif qbc calibrate``: the QBC threshold rho_hat from labelled data (paper Fig. 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..accuracy.settings import CAPTURE, PAPER_ERROR_BOUND
from .common import model_inputs, check_not_input, check_writable_file, json_out_option, load_model, positive

qbc_app = typer.Typer(help="Query-by-committee threshold tools.", no_args_is_help=True)


def _fraction(value: float) -> float:
    if not 0 < value < 1:  # also NaN
        raise typer.BadParameter(f"must be between 0 and 1 (got {value})")
    return value


@qbc_app.command("calibrate")
def qbc_calibrate_command(
    model: str = typer.Option(..., "--model", help="'ani1x' or an anif model directory"),
    data: Path = typer.Option(..., "--data", help="ANI-format .h5 with reference energies (e.g. a COMP6 file)"),
    error: float = typer.Option(PAPER_ERROR_BOUND, "--error", callback=positive, help="error bound, kcal/mol per sqrt(atom)"),
    capture: float = typer.Option(CAPTURE, "--capture", callback=_fraction,
                                  help="fraction of bad structures rho_hat must flag"),
    json_out: Optional[Path] = json_out_option("the calibration"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="error-vs-rho density plot (PNG) with rho_hat"),
) -> None:
    """Find rho_hat catching --capture of the structures whose worst member error exceeds --error."""
    from dataclasses import asdict

    import numpy as np

    from ..accuracy.calibration import calibrate
    from ..accuracy.metrics import plot_error_vs_rho, predict
    from ..datasets.comp6 import read_comp6
    from ..outputs import atomic_write_text, strict_json

    check_not_input([json_out, plot], [data] + model_inputs(model))
    check_writable_file(json_out, plot)
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
        atomic_write_text(json_out, strict_json(asdict(cal)))
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot_error_vs_rho(rho, worst, cal.rho_hat, error, plot, f"{model}: rho_hat calibration on {data.name}")
        print(f"plot: {plot}")
