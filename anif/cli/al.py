"""``anif al run|status|report``: the active-learning campaign."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

al_app = typer.Typer(help="Active-learning campaigns: run (or resume), status, report.", no_args_is_help=True)


@al_app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="campaign config (TOML; see data/al_quickstart.toml)"),
    out: Path = typer.Option(..., "--out", help="campaign folder (created, or resumed)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="local Dask worker processes (default: one per core; 0: no Dask)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="address of a running Dask scheduler"),
) -> None:
    """Start the campaign in OUT, or resume it where it stopped (same config; only the stop section may change)."""
    from rich.console import Console
    from rich.logging import RichHandler

    from ..al import load_config, run_campaign
    from ..al.ledger import LEDGER
    from ..al.report import write_report
    from ..outputs import check_output_folder
    from .common import check_not_input, check_writable_folder

    campaign_config = load_config(config)
    # a campaign folder is written into and resumed: a user's folder that is not one is refused
    check_output_folder(out, (LEDGER,), "an `anif al` campaign folder")
    check_not_input([out], [config])
    check_writable_folder(out)

    handler = RichHandler(console=Console(stderr=True), show_path=False, show_level=False, markup=False)
    logging.getLogger("anif.al").addHandler(handler)
    logging.getLogger("anif.al").setLevel(logging.INFO)
    result = run_campaign(campaign_config, out, workers=workers, scheduler=scheduler)
    write_report(out)
    _print_table(result, out)


@al_app.command("status")
def status_command(
    folder: Path = typer.Argument(..., help="campaign folder"),
    json_out: bool = typer.Option(False, "--json", help="print the status as one JSON object"),
) -> None:
    """One row per cycle: stage, candidates, selected, labelled, failed, training-set size, test errors, wall time."""
    from ..al import status

    result = status(folder)
    if json_out:
        from ..outputs import strict_json

        print(strict_json(result))
    else:
        _print_table(result, folder)


@al_app.command("report")
def report_command(
    folders: list[Path] = typer.Argument(..., metavar="DIR...", help="campaign folder(s); several: their learning curves overlaid"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder of the comparison's figures (default: FOLDER_A/plots)"),
) -> None:
    """One folder: figures (PNG) and their numbers (JSON) in FOLDER/plots. Several (same test sets):
    E, dE and F RMSE against labels overlaid, one PNG per quantity, comparison.json and a table."""
    from ..al import compare, write_report

    if len(folders) == 1 and out is None:
        for path in write_report(folders[0]):
            print(path)
        return
    data, paths = compare(folders, out)
    _print_comparison(data)
    for path in paths:
        print(path)


def _print_comparison(data: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Test errors against labels (E, dE RMSE in kcal/mol; F RMSE in kcal/mol/Å)")
    for head in ("campaign", "strategy", "test set", "cycle", "labels", "E RMSE", "dE RMSE", "F RMSE"):
        table.add_column(head, justify="left" if head in ("campaign", "strategy", "test set") else "right")
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for c in data["campaigns"]:
        for name in data["test_sets"]:
            for p in c["test_sets"].get(name, []):
                table.add_row(c["label"], c["strategy"], name, str(p["cycle"]), str(p["labels"]), fmt(p["e_rmse"]),
                              fmt(p["de_rmse"]), fmt(p["f_rmse"]))
    Console(width=140).print(table)


def _print_table(result: dict, folder: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    sets = sorted({k for c in result["cycles"] for k in c["test_rmse_kcal_mol"]})
    table = Table(title=f"{folder}: {'finished' if result['finished'] else 'not finished'}, "
                        f"{result['labels_total']} labels (cand.: candidates, sel.: selected, lab.: labelled, "
                        "data: training-set size; RMSE in kcal/mol; ρ~err, F~err: Spearman correlation of rho, "
                        "of the members' force disagreement, with the error per sqrt(atom))")
    for head in ("cycle", "kind", "stage", "cand.", "sel.", "lab.", "fail", "data"):
        table.add_column(head, justify="left" if head in ("kind", "stage") else "right")
    for s in sets:
        table.add_column(f"{s} E RMSE", justify="right")
        table.add_column(f"{s} ρ~err", justify="right")
        table.add_column(f"{s} F~err", justify="right")
    table.add_column("wall s", justify="right")
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    for c in result["cycles"]:
        cells = [fmt(c[key].get(s)) for s in sets for key in ("test_rmse_kcal_mol", "rho_spearman", "force_spearman")]
        table.add_row(str(c["cycle"]), c["kind"], c["stage"], str(c["n_candidates"]), str(c["n_selected"]),
                      str(c["n_labelled"]), str(c["n_failed"]), str(c["dataset_size"]), *cells, f"{c['wall_s']:.0f}")
    Console().print(table)
