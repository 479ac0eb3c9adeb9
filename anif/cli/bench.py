"""``anif bench comp6``: an ensemble's errors on COMP6 (or any ANI-format reference set)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..accuracy.settings import RHO_HAT
from .common import model_inputs, check_distinct, check_not_input, check_writable_file, check_writable_folder, json_out_option, load_model, non_negative, positive

bench_app = typer.Typer(help="Benchmarks of an ensemble against reference data.", no_args_is_help=True)


def metrics_table(metrics: dict[str, dict], title: str):
    from rich.table import Table

    from ..accuracy.metrics import METRIC_KEYS

    table = Table(title=title)
    table.add_column("subset")
    for head in ("E MAE", "E RMSE", "dE MAE", "dE RMSE", "F MAE", "F RMSE", "conformers"):
        table.add_column(head, justify="right")
    for name, row in metrics.items():
        cells = ["-" if row[k] is None else f"{row[k]:.2f}" for k in METRIC_KEYS[:-1]]
        table.add_row(name, *cells, str(row["n_conformers"]), style="bold" if name == "overall" else None)
    return table


@bench_app.command("comp6")
def bench_comp6_command(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", help="'ani1x' or an anif model directory"),
    data: list[Path] = typer.Option(..., "--data", help="COMP6 (or any ANI-format) .h5 file or folder; repeatable"),
    more_data: Optional[list[Path]] = typer.Argument(None, help="more files/folders after --data", show_default=False),
    json_out: Optional[Path] = json_out_option("the metrics"),
    plots: Optional[Path] = typer.Option(None, "--plots", help="folder for the PNG figures"),
    max_energy: Optional[float] = typer.Option(
        None, "--max-energy", callback=positive, help="only conformers within KCAL kcal/mol of their molecule's minimum"
    ),
    rho_hat: float = typer.Option(RHO_HAT, "--rho-hat", callback=non_negative,
                                  help="QBC threshold drawn on the error-vs-rho plot"),
    float32: bool = typer.Option(False, "--float32", help="evaluate in float32 (default float64)"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch intra-op CPU threads of this process for the ensemble evaluation (default: torch's choice)"),
) -> None:
    """E, dE and F errors (MAE/RMSE, kcal/mol, kcal/mol/A) per COMP6 subset and overall."""
    import numpy as np
    from rich.console import Console

    from ..accuracy.metrics import (energy_window, error_samples, metrics_from_samples, plot_error_vs_rho,
                                    plot_force_parity, plot_subset_bars, predict)
    from ..accuracy.settings import PAPER_ERROR_BOUND
    from ..datasets.comp6 import read_comp6
    from ..errors import InputError
    from ..outputs import atomic_write_text, strict_json

    console = Console(stderr=True)
    if plots is None and ctx.get_parameter_source("rho_hat").name != "DEFAULT":
        raise typer.BadParameter("is drawn on the --plots figures; give --plots DIR", param_hint="'--rho-hat'")
    inputs = list(data) + list(more_data or [])
    check_distinct(inputs, "--data")
    check_not_input([json_out, plots], inputs + model_inputs(model))
    check_writable_file(json_out)
    check_writable_folder(plots)
    if threads:
        import torch

        torch.set_num_threads(threads)
    molecules = read_comp6(list(data) + list(more_data or []))
    ensemble = load_model(model)
    if not float32:
        ensemble = ensemble.double()
    start = time.perf_counter()
    predictions = predict(ensemble, molecules)
    seconds = time.perf_counter() - start
    n_conf = sum(m.n_conformers for m in molecules)
    samples = error_samples(predictions, max_energy)
    metrics = metrics_from_samples(samples)
    if any(v is not None and not np.isfinite(v) for row in metrics.values() for k, v in row.items() if k != "n_conformers"):
        raise InputError("the metrics are not finite: the reference data hold NaN or infinite energies or forces")
    window = "all conformers" if max_energy is None else f"within {max_energy:g} kcal/mol of each minimum"
    Console().print(metrics_table(metrics, f"{model} on COMP6 ({window}); kcal/mol, kcal/mol/Å"))
    console.print(f"throughput: {n_conf / seconds:.1f} conformers/s ({n_conf} conformers, energies + forces, {seconds:.1f} s)")
    if json_out is not None:
        atomic_write_text(json_out, strict_json(metrics))
        console.print(f"metrics: {json_out}")
    if plots is not None:
        name = Path(model).name if model.lower() != "ani1x" else "ANI-1x"
        keep = [energy_window(p.molecule.energies, max_energy) for p in predictions]
        rho = np.concatenate([p.rho_kcal_mol[k] for p, k in zip(predictions, keep)])
        worst = np.concatenate([p.worst_member_error_per_sqrt_atom[k] for p, k in zip(predictions, keep)])
        plots.mkdir(parents=True, exist_ok=True)
        paths = []
        if any(s["F_ref"].size for s in samples.values()):
            paths.append(plot_force_parity(samples, plots / "force_parity.png", name))
        paths.append(plot_error_vs_rho(rho, worst, rho_hat, PAPER_ERROR_BOUND, plots / "error_vs_rho.png",
                                       f"{name}: QBC disagreement vs worst member error"))
        paths.append(plot_subset_bars(metrics, plots / "subset_errors.png", f"{name} on COMP6 ({window})"))
        for p in paths:
            console.print(f"plot: {p}")
