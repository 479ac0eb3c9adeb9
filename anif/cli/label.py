"""``anif label``: reference energies and forces with PySCF (:mod:`anif.labeling`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..distributed import DASHBOARD_ADDRESS
from ..errors import AnifError, InputError
from ..labeling.settings import Level

_DEFAULT = Level()


def _parse_grid(text: str) -> tuple[int, int]:
    try:
        radial, angular = (int(x) for x in text.split(","))
    except ValueError:
        raise InputError(f"--grid must be RADIAL,ANGULAR (e.g. 75,302), got {text!r}") from None
    if radial < 1 or angular < 1:
        raise InputError(f"--grid must be two positive numbers RADIAL,ANGULAR (e.g. 75,302), got {text!r}")
    return radial, angular


def label_command(
    input: Annotated[Path, typer.Option("--input", help="Structures: XYZ (multi-frame), SDF, PDB or ANI-format HDF5.")],
    out: Annotated[Path, typer.Option("--out", help="Output ANI-format HDF5 (appended to; reruns resume).")],
    method: Annotated[str, typer.Option(help="Functional (libxc name) or hf.")] = _DEFAULT.method,
    basis: Annotated[str, typer.Option(help="Basis set (Pople sets use Cartesian d, as Gaussian).")] = _DEFAULT.basis,
    charge: Annotated[Optional[int], typer.Option(help="Total charge (default: from the input, else 0).")] = None,
    multiplicity: Annotated[Optional[int], typer.Option(min=1, help="Spin multiplicity (default: from the input, else 1).")] = None,
    workers: Annotated[Optional[int], typer.Option(min=0, help="Local worker processes (default: sized to the machine).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="Address of an existing Dask scheduler.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="PySCF (OpenMP) threads per labelling worker process (default: cores / workers).")] = None,
    density_fit: Annotated[bool, typer.Option("--density-fit", help="Density fitting (faster, ~0.01-0.04 kcal/mol off; recorded per label, a store never mixes).")] = _DEFAULT.density_fit,
    device: Annotated[str, typer.Option(help="auto (CUDA when present and gpu4pyscf imports), cpu or cuda (gpu4pyscf).")] = _DEFAULT.device,
    grid: Annotated[str, typer.Option(help="DFT grid per atom: RADIAL,ANGULAR.")] = ",".join(map(str, _DEFAULT.grid)),
    max_cycle: Annotated[int, typer.Option(min=1, help="SCF iterations per retry rung.")] = _DEFAULT.max_cycle,
    spherical: Annotated[bool, typer.Option("--spherical", help="Spherical d/f functions even for Pople bases.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Recompute structures recorded as failed.")] = False,
    dashboard: Annotated[str, typer.Option(help="HOST:PORT of the local Dask dashboard (0.0.0.0:8787 shows it to the network).")] = DASHBOARD_ADDRESS,
) -> None:
    """Reference energies and forces (default wB97X/6-31G(d)) with PySCF on a Dask pool."""
    from ..labeling.batch import failures_path, label_file
    from .common import check_not_input

    check_not_input([out, failures_path(out)], [input])
    if input.suffix.lower() in (".sdf", ".mol") and input.is_file():  # hydrogens the reader adds are said
        import sys

        from ..structures import read_structures

        for note in dict.fromkeys(n for s in read_structures(input) for n in s.notes):
            print(f"note: {note}", file=sys.stderr)
    level = Level(method=method, basis=basis, cartesian=False if spherical else None, grid=_parse_grid(grid),
                  density_fit=density_fit, max_cycle=max_cycle, device=device)
    summary = label_file(input, out, level, charge, multiplicity, workers, scheduler, threads, retry_failed, dashboard)
    print(summary.line(out))
    if summary.failed:
        print(f"failed structures and reasons: {failures_path(out)}")
    if summary.all_failed:
        hint = "" if summary.failed else "; --retry-failed computes them again"
        raise AnifError(f"no structure could be labelled (reasons in {failures_path(out)}){hint}")
