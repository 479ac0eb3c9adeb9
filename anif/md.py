"""Single points and MD with an ANI ensemble in OpenMM, and mdtraj analysis of the result.

Backs the ``anif energy``, ``anif md`` and ``anif analyze`` commands. An MD output folder
holds ``topology.pdb``, ``trajectory.dcd`` and ``qbc.csv`` (the :class:`QBCReporter` log).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from .errors import AnifError, InputError
from .structures import Structure, from_smiles, read_structures, symbol
from .units import HARTREE_TO_KJ_MOL, NM_TO_ANGSTROM

#: The paper's calibrated QBC threshold (kcal/mol), drawn on rho plots.
RHO_HAT = 0.23


def to_topology(structure: Structure):
    """An OpenMM Topology (one residue 'MOL') for a structure, with its bonds if known."""
    from openmm.app import Element, Topology

    top = Topology()
    chain = top.addChain()
    residue = top.addResidue("MOL", chain)
    counts: dict[str, int] = {}
    atoms = []
    for z in structure.numbers:
        sym = symbol(z)
        counts[sym] = counts.get(sym, 0) + 1
        atoms.append(top.addAtom(f"{sym}{counts[sym]}", Element.getByAtomicNumber(int(z)), residue))
    for i, j in structure.bonds:
        top.addBond(atoms[i], atoms[j])
    return top


def _load_inputs(model, smiles: Optional[str], input_file: Optional[Path], seed: int = 0) -> list[Structure]:
    from .models import supported_numbers

    if (smiles is None) == (input_file is None):
        raise InputError("give exactly one of --smiles or --input")
    structures = [from_smiles(smiles, seed=seed)] if smiles is not None else read_structures(input_file)
    for s in structures:
        s.validate(supported_numbers(model)).require_neutral_closed_shell()
    return structures


class EnsembleCalculator:
    """Single points through the OpenMM System that MD uses (one Context per atom list)."""

    def __init__(self, model, platform: str = "CPU", backend: str = "torch"):
        self.model, self.platform, self.backend = model, platform, backend
        self._contexts: dict[tuple, tuple] = {}

    def _context(self, numbers):
        import openmm

        key = tuple(int(z) for z in numbers)
        if key not in self._contexts:
            from .openmm_plugin import create_system

            system, force = create_system(key, self.model, backend=self.backend, remove_cm_motion=False)
            context = openmm.Context(system, openmm.VerletIntegrator(0.001), _platform(self.platform))
            self._contexts[key] = (context, force)
        return self._contexts[key]

    def compute(self, structure: Structure) -> dict:
        """Energy, forces (OpenMM), member energies (same model), sigma and rho of one structure."""
        from openmm import unit

        from .models import evaluate
        from .openmm_plugin import read_qbc

        context, force = self._context(structure.numbers)
        context.setPositions(structure.coordinates / NM_TO_ANGSTROM)
        state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / HARTREE_TO_KJ_MOL
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        sigma, rho = read_qbc(state, force)
        members = evaluate(self.model, structure.numbers, structure.coordinates, forces=False).member_energies[:, 0]
        return {
            "n_atoms": structure.n_atoms,
            "energy_hartree": float(energy),
            "forces_hartree_per_angstrom": (forces / HARTREE_TO_KJ_MOL / NM_TO_ANGSTROM).tolist(),
            "member_energies_hartree": members.tolist(),
            "sigma_kcal_mol": float(sigma),
            "rho_kcal_mol": float(rho),
        }


def _platform(name: str):
    import openmm

    try:
        return openmm.Platform.getPlatformByName(name)
    except Exception:
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        raise AnifError(f"OpenMM platform {name!r} not available (available: {', '.join(names)})") from None


def energy_command(
    input: Path = typer.Option(..., "--input", help="XYZ (multi-frame), SDF or PDB file"),
    model: str = typer.Option("ani1x", "--model", help="'ani1x' or an anif model directory"),
    json_output: bool = typer.Option(False, "--json", help="print a JSON list, one object per structure"),
    platform: str = typer.Option("CPU", "--platform", help="OpenMM platform: CPU, CUDA or Reference"),
):
    """Single-point energies, forces and ensemble disagreement of every structure in a file."""
    from .models import load_model

    ensemble = load_model(model)
    structures = _load_inputs(ensemble, None, input)
    calculator = EnsembleCalculator(ensemble, platform)
    results = [calculator.compute(s) for s in structures]
    if json_output:
        print(json.dumps(results))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("structure", "atoms", "energy (Ha)", "sigma (kcal/mol)", "rho (kcal/mol)", "max |F| (Ha/A)")
    for s, r in zip(structures, results):
        fmax = float(np.linalg.norm(np.array(r["forces_hartree_per_angstrom"]), axis=1).max())
        table.add_row(s.name, str(r["n_atoms"]), f"{r['energy_hartree']:.6f}", f"{r['sigma_kcal_mol']:.3f}",
                      f"{r['rho_kcal_mol']:.3f}", f"{fmax:.4f}")
    Console().print(table)


def run_md(
    structure: Structure,
    model,
    out: Path,
    steps: int,
    temperature: float = 300.0,
    timestep_fs: float = 0.5,
    friction: float = 1.0,
    report_every: int = 10,
    platform: str = "CPU",
    backend: str = "torch",
    seed: int = 0,
    rho_threshold: Optional[float] = None,
    stop_on_rho: bool = False,
    minimize: bool = True,
    progress: bool = True,
) -> dict:
    """Langevin MD of one molecule; writes topology.pdb, trajectory.dcd and qbc.csv into ``out``."""
    from openmm import app, unit

    from .openmm_plugin import QBCReporter, RhoThresholdExceeded, create_system, langevin_integrator

    if steps < 0 or report_every < 1:
        raise InputError("--steps must be >= 0 and --report-every >= 1")
    out.mkdir(parents=True, exist_ok=True)
    system, force = create_system(structure.numbers, model, backend=backend)
    integrator = langevin_integrator(
        force, temperature * unit.kelvin, friction / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed)
    topology = to_topology(structure)
    simulation = app.Simulation(topology, system, integrator, _platform(platform))
    simulation.context.setPositions(structure.coordinates / NM_TO_ANGSTROM)
    if minimize:
        simulation.minimizeEnergy(maxIterations=500)
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    state = simulation.context.getState(getPositions=True)
    with open(out / "topology.pdb", "w") as fh:
        app.PDBFile.writeFile(topology, state.getPositions(), fh)
    qbc = QBCReporter(str(out / "qbc.csv"), report_every, force, rho_threshold, stop=stop_on_rho)
    simulation.reporters += [app.DCDReporter(str(out / "trajectory.dcd"), report_every), qbc]
    stopped_at = None
    try:
        if progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            columns = [TextColumn("MD"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                       TimeRemainingColumn()]
            with Progress(*columns, transient=True) as bar:
                task = bar.add_task("md", total=steps)
                done = 0
                while done < steps:
                    chunk = min(report_every * 10, steps - done)
                    simulation.step(chunk)
                    done += chunk
                    bar.update(task, completed=done)
        else:
            simulation.step(steps)
    except RhoThresholdExceeded as exc:
        stopped_at = exc.step
    finally:
        qbc.close()
        simulation.reporters.clear()  # DCDReporter closes its file when released
    summary = {
        "steps": simulation.currentStep,
        "time_ps": simulation.currentStep * timestep_fs / 1000.0,
        "flagged_steps": [s for s, _ in qbc.flagged],
        "stopped_at_step": stopped_at,
    }
    return summary


def md_command(
    steps: int = typer.Option(..., "--steps", help="number of MD steps"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    smiles: Optional[str] = typer.Option(None, "--smiles", help="molecule as SMILES (RDKit + UFF embedding)"),
    input: Optional[Path] = typer.Option(None, "--input", help="XYZ, SDF or PDB file (first structure is used)"),
    temperature: float = typer.Option(300.0, "--temperature", help="K"),
    timestep: float = typer.Option(0.5, "--timestep", help="fs"),
    friction: float = typer.Option(1.0, "--friction", help="ps^-1"),
    report_every: int = typer.Option(10, "--report-every", help="steps between DCD frames and qbc.csv rows"),
    model: str = typer.Option("ani1x", "--model", help="'ani1x' or an anif model directory"),
    platform: str = typer.Option("CPU", "--platform", help="OpenMM platform: CPU, CUDA or Reference"),
    seed: int = typer.Option(0, "--seed", help="seed for embedding, velocities and the thermostat"),
    rho_threshold: Optional[float] = typer.Option(None, "--rho-threshold", help="flag steps with rho above (kcal/mol)"),
    stop_on_rho: bool = typer.Option(False, "--stop-on-rho", help="stop at the first step above --rho-threshold"),
    backend: str = typer.Option("torch", "--backend", help="torch (TorchForce) or python (PythonForce)"),
):
    """Langevin MD with the ensemble force, logging its disagreement (qbc.csv)."""
    from .models import load_model

    ensemble = load_model(model)
    structure = _load_inputs(ensemble, smiles, input, seed)[0]
    summary = run_md(structure, ensemble, out, steps, temperature, timestep, friction, report_every, platform,
                     backend, seed, rho_threshold, stop_on_rho)
    (out / "md.json").write_text(json.dumps(summary, indent=2))
    stop = f", stopped at step {summary['stopped_at_step']}" if summary["stopped_at_step"] is not None else ""
    print(f"{summary['steps']} steps ({summary['time_ps']:.3f} ps) written to {out}{stop}")


def analyze(folder: Path, rho_hat: float = RHO_HAT) -> dict:
    """RMSD to the first frame, radius of gyration and rho over time; JSON + PNG plots in ``folder``."""
    import mdtraj

    files = {name: folder / name for name in ("topology.pdb", "trajectory.dcd", "qbc.csv")}
    for path in files.values():
        if not path.is_file():
            raise InputError(f"{path}: missing (run `anif md --out {folder}` first)")
    try:
        traj = mdtraj.load_dcd(str(files["trajectory.dcd"]), top=str(files["topology.pdb"]))
    except Exception as exc:
        raise InputError(f"{files['trajectory.dcd']}: unreadable trajectory ({exc})") from None
    try:
        qbc = np.genfromtxt(files["qbc.csv"], delimiter=",", names=True)
        qbc = np.atleast_1d(qbc)
        time_ps, rho = qbc["time_ps"], qbc["rho_kcal_mol"]
    except Exception as exc:
        raise InputError(f"{files['qbc.csv']}: unreadable QBC log ({exc})") from None
    if traj.n_frames == 0 or len(rho) == 0:
        raise InputError(f"{folder}: the trajectory is empty")
    rmsd = mdtraj.rmsd(traj, traj, 0) * NM_TO_ANGSTROM
    rg = mdtraj.compute_rg(traj) * NM_TO_ANGSTROM
    frame_time = np.arange(traj.n_frames) * (time_ps[1] - time_ps[0] if len(time_ps) > 1 else 0.0) + time_ps[0]
    result = {
        "n_frames": int(traj.n_frames),
        "n_atoms": int(traj.n_atoms),
        "time_ps": frame_time.tolist(),
        "rmsd_angstrom": rmsd.tolist(),
        "radius_of_gyration_angstrom": rg.tolist(),
        "rho_time_ps": time_ps.tolist(),
        "rho_kcal_mol": rho.tolist(),
        "summary": {
            "rmsd_mean_angstrom": float(rmsd.mean()),
            "rmsd_max_angstrom": float(rmsd.max()),
            "radius_of_gyration_mean_angstrom": float(rg.mean()),
            "rho_mean_kcal_mol": float(rho.mean()),
            "rho_max_kcal_mol": float(rho.max()),
            "rho_hat_kcal_mol": rho_hat,
            "fraction_rho_above_hat": float((rho > rho_hat).mean()),
        },
    }
    (folder / "analysis.json").write_text(json.dumps(result, indent=2))
    _plot_analysis(folder, frame_time, rmsd, rg, time_ps, rho, rho_hat)
    return result


def _plot_analysis(folder: Path, t, rmsd, rg, t_rho, rho, rho_hat) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("rmsd.png", t, rmsd, "RMSD to first frame (Å)", None),
        ("radius_of_gyration.png", t, rg, "radius of gyration (Å)", None),
        ("rho.png", t_rho, rho, "ρ = σ/√N (kcal/mol)", rho_hat),
    ]
    fig_all, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    for ax_all, (name, x, y, label, hat) in zip(axes, panels):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for a in (ax, ax_all):
            a.plot(x, y, lw=1)
            a.set_ylabel(label)
            if hat is not None:
                a.axhline(hat, color="tab:red", ls="--", lw=1, label=f"ρ̂ = {hat} kcal/mol")
                a.legend(loc="upper left", frameon=False)
        ax.set_xlabel("time (ps)")
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
    axes[-1].set_xlabel("time (ps)")
    fig_all.tight_layout()
    fig_all.savefig(folder / "overview.png", dpi=120)
    plt.close(fig_all)


def analyze_command(
    folder: Path = typer.Argument(..., help="an `anif md` output folder"),
    rho_hat: float = typer.Option(RHO_HAT, "--rho-hat", help="threshold drawn on the rho plot (kcal/mol)"),
):
    """RMSD, radius of gyration and rho over time (mdtraj); writes analysis.json and PNG plots."""
    summary = analyze(folder, rho_hat)["summary"]
    for key, value in summary.items():
        print(f"{key:36s} {value:.4f}")
    print(f"wrote {folder / 'analysis.json'} and rmsd.png, radius_of_gyration.png, rho.png, overview.png")
