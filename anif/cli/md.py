"""``anif energy``, ``anif md`` and ``anif analyze``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from ..md.settings import MD_DEFAULTS
from ..accuracy.settings import RHO_HAT
from ..units import FS_PER_PS
from .common import check_not_input, load_model, non_negative, positive, seed_option
from .common import temperature as temperature_check


_MODEL = typer.Option("ani1x", "--model", help="'ani1x' or an anif model directory")
_PLATFORM = typer.Option("CPU", "--platform", help="OpenMM platform: CPU, CUDA or Reference")
_SMILES = typer.Option(None, "--smiles", help="molecule as SMILES (RDKit + UFF embedding)")


def energy_command(
    input: Optional[Path] = typer.Option(None, "--input", help="XYZ (multi-frame), SDF, PDB or ANI-format HDF5 file"),
    smiles: Optional[str] = _SMILES,
    model: str = _MODEL,
    json_output: bool = typer.Option(False, "--json", help="print a JSON list, one object per structure"),
    platform: str = _PLATFORM,
    backend: str = typer.Option("python", "--backend",
                                help="python (PythonForce: no TorchScript compilation, the quickest start) or torch "
                                     "(TorchForce, as `anif md` by default); the same numbers"),
):
    """Single-point energies, forces and ensemble disagreement of every structure in a file (or of --smiles)."""
    import numpy as np

    from ..md.dynamics import EnsembleCalculator, load_inputs
    from ..outputs import strict_json

    ensemble = load_model(model)
    structures = load_inputs(ensemble, smiles, input)
    for note in dict.fromkeys(n for s in structures for n in s.notes):
        print(f"note: {note}", file=sys.stderr)
    calculator = EnsembleCalculator(ensemble, platform, backend)
    results = [calculator.compute(s) for s in structures]
    if json_output:
        print(strict_json(results, indent=None))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("structure", "atoms", "energy (Ha)", "sigma (kcal/mol)", "rho (kcal/mol)", "max |F| (Ha/A)")
    for s, r in zip(structures, results):
        fmax = float(np.linalg.norm(np.array(r["forces_hartree_per_angstrom"]), axis=1).max())
        table.add_row(s.name, str(r["n_atoms"]), f"{r['energy_hartree']:.6f}", f"{r['sigma_kcal_mol']:.3f}",
                      f"{r['rho_kcal_mol']:.3f}", f"{fmax:.4f}")
    Console().print(table)


def md_command(
    ctx: typer.Context,
    steps: Optional[int] = typer.Option(None, "--steps", min=1, max=2**31 - 1, help="number of MD steps (or --time-ps)"),
    time_ps: Optional[float] = typer.Option(None, "--time-ps", callback=positive,
                                            help="MD length (ps), instead of --steps: steps = time / timestep"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    smiles: Optional[str] = _SMILES,
    input: Optional[Path] = typer.Option(None, "--input", help="XYZ, SDF, PDB or ANI-format HDF5 file (first structure is used)"),
    prmtop: Optional[Path] = typer.Option(None, "--prmtop", help="Amber topology of a prepared system (ML/MM)"),
    inpcrd: Optional[Path] = typer.Option(None, "--inpcrd", help="Amber coordinates (and box) for --prmtop"),
    system_xml: Optional[Path] = typer.Option(None, "--system-xml", help="OpenMM System XML of a prepared system"),
    pdb: Optional[Path] = typer.Option(None, "--pdb", help="PDB with topology and positions for --system-xml"),
    ml_atoms: Optional[str] = typer.Option(None, "--ml-atoms",
                                           help="mdtraj selection of the ML atoms of a prepared system, e.g. 'resname LIG'"),
    solvent: Optional[str] = typer.Option(None, "--solvent", help="'water': the molecule in a TIP3P box (ML/MM)"),
    box: Optional[float] = typer.Option(None, "--box", callback=positive, help="edge of the cubic water box (nm)"),
    mm_solute: Optional[str] = typer.Option(None, "--mm-solute",
                                            help="the solute's MM terms with --solvent: gaff-2.11 (default; AM1-BCC "
                                                 "charges, or an SDF's own) or mmff-uff (RDKit approximation)"),
    mm_only: bool = typer.Option(False, "--mm-only",
                                 help="the same system with the ML atoms in MM too (classical reference run; "
                                      "qbc.csv still reports the ensemble on them)"),
    temperature: float = typer.Option(MD_DEFAULTS.temperature, "--temperature", callback=temperature_check, help="K"),
    timestep: float = typer.Option(MD_DEFAULTS.timestep_fs, "--timestep", callback=positive, help="fs"),
    friction: float = typer.Option(MD_DEFAULTS.friction, "--friction", callback=non_negative, help="ps^-1"),
    report_every: int = typer.Option(MD_DEFAULTS.report_every, "--report-every", min=1, max=2**31 - 1,
                                     help="steps between DCD frames and qbc.csv rows (the default shrinks to a shorter run's length)"),
    model: str = _MODEL,
    platform: str = _PLATFORM,
    seed: int = seed_option(0, "seed for embedding, velocities and the thermostat"),
    rho_hat: Optional[float] = typer.Option(None, "--rho-hat", callback=non_negative,
                                                  help="flag steps with rho above this (kcal/mol)"),
    stop_on_rho: bool = typer.Option(False, "--stop-on-rho", help="stop at the first step above --rho-hat"),
    backend: str = typer.Option("torch", "--backend", help="torch (TorchForce) or python (PythonForce)"),
):
    """Langevin MD with the ensemble force, logging its disagreement (qbc.csv).

    A molecule (--smiles / --input) runs in vacuum, or with --solvent water --box NM in a TIP3P box
    (ANI on the solute, mechanical embedding). A prepared system (--prmtop/--inpcrd or
    --system-xml/--pdb) runs ML/MM with ANI on --ml-atoms and the rest MM.
    """
    from ..md.dynamics import MD_JSON, RHO_LIMIT, load_inputs, molecule_system, run_md
    from ..outputs import atomic_write_text, staged_directory, strict_json

    if (steps is None) == (time_ps is None):
        # a usage mistake, exit 2 as when --steps was a required option
        raise typer.BadParameter("give the MD length as --steps N or --time-ps PS (one of them)",
                                 param_hint="'--steps' / '--time-ps'")
    steps = steps if steps is not None else max(1, round(time_ps * FS_PER_PS / timestep))
    if steps > 2**31 - 1:
        raise typer.BadParameter(f"{time_ps:g} ps is {steps} steps, beyond OpenMM's 2**31 - 1", param_hint="'--time-ps'")
    if report_every > steps and ctx.get_parameter_source("report_every").name == "DEFAULT":
        report_every = steps  # the default, not the user's choice: a short run still writes its frames
    if report_every > steps:
        raise typer.BadParameter(f"{report_every} is longer than the run ({steps} steps): no frame would be written",
                                 param_hint="'--report-every'")
    if stop_on_rho and rho_hat is None:
        raise typer.BadParameter("--stop-on-rho needs --rho-hat KCAL (the threshold to stop at)", param_hint="'--stop-on-rho'")
    prepared = any(x is not None for x in (prmtop, inpcrd, system_xml, pdb))
    if prepared and (smiles is not None or input is not None):
        raise InputError("give a molecule (--smiles/--input) or a prepared system (--prmtop/--system-xml), not both")
    if (solvent is None) != (box is None):
        raise InputError("--solvent and --box go together")
    if solvent is not None and solvent != "water":
        raise InputError(f"unknown --solvent {solvent!r} (only 'water')")
    if prepared and ml_atoms is None:
        raise InputError("a prepared system needs --ml-atoms SELECTION (mdtraj syntax, e.g. 'resname LIG')")
    if not prepared and ml_atoms is not None:
        raise InputError("--ml-atoms selects atoms of a prepared system (--prmtop or --system-xml)")
    if mm_solute is not None and solvent is None:
        raise InputError("--mm-solute goes with --solvent water (a prepared system brings its own MM terms)")
    if mm_only and solvent is None and not prepared:
        raise InputError("--mm-only needs an ML/MM system (--solvent water, or a prepared system with --ml-atoms)")
    if (prepared or solvent is not None) and ctx.get_parameter_source("backend").name != "DEFAULT":
        raise typer.BadParameter("applies to a molecule in vacuum only (ML/MM systems use the TorchForce)",
                                 param_hint="'--backend'")
    check_not_input([out], [input, prmtop, inpcrd, system_xml, pdb], replaces=True)
    # refuses a folder that is not an earlier `anif md` run (nothing of a user's is ever deleted);
    # an earlier run there stays until this one completes
    staging = staged_directory(out, markers=(MD_JSON,), what="an `anif md` run")
    out = staging_out = staging.destination
    earlier = _complete_run(out)
    notes: list[str] = []
    with staging as stage:
        record: dict = {"model": model}
        if prepared:
            from ..md.mlmm import mixed_system, mm_only_system, prepared_system, select_atoms

            topology, mm_system, positions = prepared_system(prmtop, inpcrd, system_xml, pdb)
            atoms = select_atoms(topology, ml_atoms)
            system = (mm_only_system if mm_only else mixed_system)(topology, mm_system, atoms, model)
            record.update(ml_atoms=atoms, ml_selection=ml_atoms, solute_in="mm" if mm_only else "ml")
        elif solvent is not None:
            from ..md.mlmm import DEFAULT_MM_SOLUTE, solvated_md_system

            topology, system, positions, atoms, mm_record = solvated_md_system(
                model, box, smiles, input, seed, mm_solute or DEFAULT_MM_SOLUTE, mm_only)
            record.update(ml_atoms=atoms, solvent=solvent, box_nm=box, **mm_record)
        else:
            ensemble = load_model(model)
            structure = load_inputs(ensemble, smiles, input, seed)[0]
            notes = list(structure.notes)
            for note in notes:  # said now, and kept in md.json's warnings
                print(f"note: {note}", file=sys.stderr)
            topology, system, positions = molecule_system(structure, ensemble, backend)
        summary = run_md(topology, system, positions, stage, steps, temperature, timestep, friction, report_every,
                         platform, seed, rho_hat, stop_on_rho, ml_atoms=record.get("ml_atoms"),
                         rho_limit=None if mm_only else RHO_LIMIT)
        if summary["outcome"] == "left_model_domain" and earlier:
            # an unfinished run never replaces an earlier complete one: it goes beside it
            staging.destination = out = _beside(out, "left-domain")
        atomic_write_text(stage / MD_JSON, strict_json({**summary, **record, "warnings": [*summary["warnings"], *notes]}))
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if summary["outcome"] == "left_model_domain":
        kept = f" (beside the earlier complete run in {staging_out}, which is kept)" if out != staging_out else ""
        print(f"error: MD left the model's domain at step {summary['stopped_at_step']} ({summary['reason']}); "
              f"the frames before are in {out}{kept} (md.json: outcome left_model_domain)", file=sys.stderr)
        raise typer.Exit(3)
    stop = f", stopped at step {summary['stopped_at_step']}" if summary["stopped_at_step"] is not None else ""
    print(f"{summary['steps']} steps ({summary['time_ps']:.3f} ps) written to {out}{stop}")


def _complete_run(folder: Path) -> bool:
    """Whether ``folder`` holds an `anif md` run that did not stop outside the model's domain."""
    from ..md.dynamics import MD_JSON

    try:
        record = json.loads((folder / MD_JSON).read_text())
    except (OSError, ValueError):
        return (folder / MD_JSON).exists()
    return not (isinstance(record, dict) and record.get("outcome") == "left_model_domain")


def _beside(out: Path, tag: str) -> Path:
    """A free sibling name ``OUT.TAG`` (or ``OUT.TAG-2`` ...) that holds nothing of a user's."""
    from ..md.dynamics import MD_JSON

    for k in range(1, 1000):
        candidate = out.with_name(f"{out.name}.{tag}" + ("" if k == 1 else f"-{k}"))
        if not candidate.exists() or (candidate / MD_JSON).is_file():
            return candidate
    raise InputError(f"no free name beside {out} for the unfinished run")


def analyze_command(
    folder: Path = typer.Argument(..., help="an `anif md` output folder"),
    rho_hat: float = typer.Option(RHO_HAT, "--rho-hat", callback=non_negative, help="threshold drawn on the rho plot (kcal/mol)"),
):
    """RMSD, radius of gyration and rho over time (mdtraj); writes analysis.json and PNG plots."""
    from ..md.dynamics import analyze
    from .common import check_writable_folder

    if folder.is_dir():
        check_writable_folder(folder)  # analysis.json and the plots go beside md's files (nothing else is touched)
    summary = analyze(folder, rho_hat)["summary"]
    for key, value in summary.items():
        print(f"{key:36s} {value:.4f}")
    print(f"wrote {folder / 'analysis.json'} and rmsd.png, radius_of_gyration.png, rho.png, overview.png")
