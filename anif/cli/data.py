"""``anif data info|merge|split|import|export``: ANI-format HDF5 datasets (:mod:`anif.datasets`), and
extended XYZ in and out (:mod:`anif.datasets.extxyz`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import check_not_input, check_writable_file, fraction as _fraction, json_out_option, seed_option

data_app = typer.Typer(help="ANI-format HDF5 datasets: summary, merge, split, extended XYZ import/export.",
                       no_args_is_help=True)
#: `data info` prints this many warnings about implausible labels.
SHOWN_WARNINGS = 10


@data_app.command("info")
def info_command(
    path: Path = typer.Argument(..., help="ANI-format .h5 file"),
    json_out: Optional[Path] = json_out_option("the summary"),
) -> None:
    """Molecules, conformers, atoms per molecule, energy range, elements, provenance."""
    from rich.console import Console
    from rich.table import Table

    from ..datasets.store import summary

    check_not_input([json_out], [path])
    check_writable_file(json_out)
    s = summary(path)
    table = Table(title=str(path), show_header=False)
    if s["kind"]:
        table.add_row("kind", s["kind"])
    table.add_row("molecules", f"{s['molecules']:,}")
    table.add_row("conformers", f"{s['conformers']:,}")
    table.add_row("atoms per molecule", f"{s['atoms_min']} - {s['atoms_max']} (mean {s['atoms_mean']:.1f})")
    if s["energy_min_hartree"] is not None:
        table.add_row("energies (Ha)", f"{s['energy_min_hartree']:.6f} .. {s['energy_max_hartree']:.6f}")
    table.add_row("elements (atoms in all conformers)", ", ".join(f"{k} {v:,}" for k, v in s["elements"].items()))
    table.add_row("properties", ", ".join(s["properties"]))
    for key, counts in s["provenance"].items():
        shown = sorted(counts.items(), key=lambda kv: -kv[1])[:8]
        table.add_row(key, ", ".join(f"{k or '(unset)'}: {v:,}" for k, v in shown) + (" ..." if len(counts) > 8 else ""))
    Console().print(table)
    for warning in s["warnings"][:SHOWN_WARNINGS]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(s["warnings"]) > SHOWN_WARNINGS:
        print(f"warning: ... {len(s['warnings']) - SHOWN_WARNINGS} more (all in --json-out)", file=sys.stderr)
    if json_out is not None:
        from ..outputs import atomic_write_text, strict_json

        atomic_write_text(json_out, strict_json(s))


@data_app.command("merge")
def merge_command(
    output: Path = typer.Argument(..., help="destination .h5 (created or appended to)"),
    inputs: list[Path] = typer.Argument(..., help="ANI-format .h5 files to merge"),
) -> None:
    """Append the molecules of INPUTS to OUTPUT (one atomic commit; conformers OUTPUT holds are skipped)."""
    from ..datasets.store import DatasetStore, merge

    check_not_input([output], inputs)
    check_writable_file(output)
    before = DatasetStore(output, "r").num_conformers() if output.exists() else 0
    store = merge(inputs, output)
    added = store.num_conformers() - before
    print(f"{output}: {len(store)} molecules, {store.num_conformers()} conformers ({added} added)")


@data_app.command("split")
def split_command(
    path: Path = typer.Argument(..., help="ANI-format .h5 file"),
    out: list[Path] = typer.Option(..., "--out", help="output .h5; repeat once per part"),
    fraction: list[float] = typer.Option(..., "--fraction", help="share of conformers per --out, in order"),
    seed: Optional[int] = seed_option(None, "seed of the split (default: anif.datasets.store.SPLIT_SEED, the same split every run)"),
) -> None:
    """Split by molecule: whole molecules go to each --out in proportion to --fraction."""
    from ..datasets.store import split

    for f in fraction:
        try:
            _fraction(f)
        except typer.BadParameter as exc:
            raise typer.BadParameter(str(exc), param_hint="'--fraction'") from None
    if len(fraction) == len(out) and abs(sum(fraction) - 1.0) > 1e-6:
        raise typer.BadParameter(f"the fractions must add up to 1 (they add up to {sum(fraction):g})",
                                 param_hint="'--fraction'")
    check_not_input(out, [path])
    check_writable_file(*out)
    counts = split(path, out, fraction, *([] if seed is None else [seed]))
    for p, n in zip(out, counts):
        print(f"{p}: {n} conformers")


_ENERGY_KEY = typer.Option("energy", "--energy-key", help="the frames' energy key (ASE's calculator result or info)")
_FORCES_KEY = typer.Option("forces", "--forces-key", help="the frames' per-atom forces key")
_UNITS = typer.Option("ev", "--units", help="energy units of the file: ev (ASE's: eV, eV/A) or hartree (Ha, Ha/A)")


@data_app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="extended XYZ file (.extxyz / .xyz), read with ASE"),
    out: Path = typer.Option(..., "--out", help="label store (.h5) to create or append to"),
    energy_key: str = _ENERGY_KEY,
    forces_key: str = _FORCES_KEY,
    units: str = _UNITS,
    method: Optional[str] = typer.Option(None, "--method",
                                         help="level of theory of frames whose comment line gives none"),
) -> None:
    """Extended XYZ frames (energies required, forces if present) into an ANI-format label store."""
    from ..datasets.extxyz import import_extxyz

    frames, added = import_extxyz(path, out, energy_key, forces_key, units, method)
    print(f"{out}: {added} of {frames} conformers added")


@data_app.command("export")
def export_command(
    path: Path = typer.Argument(..., help="ANI-format .h5 file"),
    out: Path = typer.Option(..., "--out", help="extended XYZ file to write (replaced whole)"),
    energy_key: str = _ENERGY_KEY,
    forces_key: str = _FORCES_KEY,
    units: str = _UNITS,
) -> None:
    """Every conformer of a store as extended XYZ (ASE's writer), provenance in the comment lines."""
    from ..datasets.extxyz import export_extxyz

    n = export_extxyz(path, out, energy_key, forces_key, units)
    print(f"{out}: {n} conformers written")
