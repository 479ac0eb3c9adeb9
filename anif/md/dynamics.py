"""Single points and MD with an ANI ensemble in OpenMM, and mdtraj analysis of the result.

Backs the ``anif energy``, ``anif md`` and ``anif analyze`` commands. An MD output folder holds
``topology.pdb``, ``trajectory.dcd``, ``qbc.csv`` (the :class:`QBCReporter` log) and ``md.json``
(the run's summary; for ML/MM runs the ML atoms, whose RMSD and radius of gyration the analysis
reports after imaging molecules into the box).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from .settings import MD_DEFAULTS
from ..accuracy.settings import RHO_HAT
from ..openmm_plugin.builder import get_platform, to_topology
from ..plausibility import require_angstrom
from ..structures import Structure, from_smiles
from ..units import FS_PER_PS, HARTREE_TO_KJ_MOL, NM_TO_ANGSTROM

#: The run's summary in an MD output folder.
MD_JSON = "md.json"
#: rho (kcal/mol) that, held for 50 reports in a row, ends MD as outside the model's domain.
RHO_LIMIT = 10 * RHO_HAT

__all__ = ["EnsembleCalculator", "MD_JSON", "analyze", "image_around", "load_inputs", "molecule_system", "run_md"]


def load_inputs(model, smiles: Optional[str], input_file: Optional[Path], seed: int = 0) -> list[Structure]:
    """Structures from exactly one of a SMILES string or a file (XYZ, SDF, PDB or ANI-format HDF5),
    checked for the model."""
    from ..models.ensemble import supported_numbers

    if (smiles is None) == (input_file is None):
        raise InputError("give exactly one of --smiles or --input")
    if smiles is not None:
        structures = [from_smiles(smiles, seed=seed)]
    else:
        from ..datasets.store import read_any

        structures = [s for s, _ in read_any(input_file)]
    for s in structures:
        require_angstrom(s.validate(supported_numbers(model))).require_neutral_closed_shell()
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
            from ..openmm_plugin import create_system

            system, force = create_system(self.model, key, backend=self.backend, remove_cm_motion=False)
            context = openmm.Context(system, openmm.VerletIntegrator(0.001), get_platform(self.platform))
            self._contexts[key] = (context, force)
        return self._contexts[key]

    def compute(self, structure: Structure) -> dict:
        """Energy, forces (OpenMM), member energies (same model), sigma and rho of one structure."""
        from openmm import unit

        from ..models.ensemble import evaluate
        from ..openmm_plugin import read_qbc

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


def molecule_system(structure: Structure, model, backend: str = "torch"):
    """(topology, System driven by the ensemble alone, positions in nm) of one molecule in vacuum."""
    from ..openmm_plugin import create_system

    system, _ = create_system(model, structure.numbers, backend=backend)
    return to_topology(structure), system, structure.coordinates / NM_TO_ANGSTROM


def run_md(
    topology,
    system,
    positions_nm,
    out: Path,
    steps: int,
    temperature: float = MD_DEFAULTS.temperature,
    timestep_fs: float = MD_DEFAULTS.timestep_fs,
    friction: float = MD_DEFAULTS.friction,
    report_every: int = MD_DEFAULTS.report_every,
    platform: str = "CPU",
    seed: int = 0,
    rho_hat: Optional[float] = None,
    stop_on_rho: bool = False,
    minimize: bool = True,
    progress: bool = True,
    ml_atoms: Optional[list[int]] = None,
    rho_limit: Optional[float] = RHO_LIMIT,
) -> dict:
    """Langevin MD of a System holding one ensemble force (alone, or openmmml's ML/MM mix); writes
    topology.pdb, trajectory.dcd and qbc.csv (sigma/rho of the ensemble's atoms, ``ml_atoms``; all
    particles if None) into ``out`` and returns the run's summary.

    A :class:`~anif.openmm_plugin.guard.DomainGuard` watches the ML atoms every report: bonds
    broken or formed, atoms flung beyond the cutoff, NaN energies, rho above ``rho_limit`` for 50
    reports in a row stop the run (``outcome`` 'left_model_domain', with the reason); the frames
    so far are kept. A minimisation that changes the bond graph is undone (MD starts from the input
    geometry) and said so in ``warnings``.
    """
    from openmm import app, unit

    from ..openmm_plugin import QBCReporter, RhoThresholdExceeded
    from ..openmm_plugin.guard import DomainGuard, LeftModelDomain, bond_changes
    from ..openmm_plugin.builder import langevin_simulation, openmm_seed
    from ..progress import step_progress

    if steps < 0 or report_every < 1:
        raise InputError("--steps must be >= 0 and --report-every >= 1")
    out.mkdir(parents=True, exist_ok=True)
    simulation = langevin_simulation(topology, system, positions_nm, temperature, friction, timestep_fs, platform,
                                     seed, velocities=False)
    atoms = list(range(system.getNumParticles())) if ml_atoms is None else list(ml_atoms)
    every_atom = list(topology.atoms())
    numbers = [every_atom[i].element.atomic_number for i in atoms]
    start = np.asarray(positions_nm)[atoms] * NM_TO_ANGSTROM
    guard = DomainGuard(report_every, atoms, numbers, start, rho_limit)
    warnings = []
    if minimize:
        simulation.minimizeEnergy(maxIterations=500)
        minimized = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        change = bond_changes(numbers, guard.bonds, minimized.value_in_unit(unit.angstrom)[atoms])
        if change:
            warnings.append(f"energy minimisation changed the bond graph ({change}); it was undone and MD "
                            "starts from the input geometry")
            simulation.context.setPositions(np.asarray(positions_nm))
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, openmm_seed(seed))
    periodic = system.usesPeriodicBoundaryConditions()
    state = simulation.context.getState(getPositions=True, enforcePeriodicBox=periodic)
    with open(out / "topology.pdb", "w") as fh:
        app.PDBFile.writeFile(topology, state.getPositions(), fh)
    qbc = QBCReporter(str(out / "qbc.csv"), report_every, rho_hat=rho_hat, stop=stop_on_rho)
    simulation.reporters += [app.DCDReporter(str(out / "trajectory.dcd"), report_every), qbc, guard]
    outcome, stopped_at, reason = "completed", None, None
    try:
        with step_progress("MD", steps, enabled=progress) as advance:
            done = 0
            while done < steps:
                chunk = min(report_every * 10, steps - done)
                simulation.step(chunk)
                done += chunk
                advance(done)
    except RhoThresholdExceeded as exc:
        outcome, stopped_at = "rho_threshold", exc.step
    except LeftModelDomain as exc:
        outcome, stopped_at, reason = "left_model_domain", exc.step, exc.reason
    except Exception as exc:  # OpenMM: "Particle coordinate is NaN" and kin (a blown-up integration)
        if "nan" not in str(exc).lower():
            raise
        outcome, stopped_at = "left_model_domain", simulation.currentStep
        reason = f"the integration blew up ({str(exc).strip().splitlines()[0]})"
    finally:
        qbc.close()
        simulation.reporters.clear()  # DCDReporter closes its file when released
    return {
        "steps": simulation.currentStep,
        "time_ps": simulation.currentStep * timestep_fs / FS_PER_PS,
        "flagged_steps": [s for s, _ in qbc.flagged],
        "stopped_at_step": stopped_at,
        "outcome": outcome,
        "reason": reason,
        "warnings": warnings,
    }


def analyze(folder: Path, rho_hat: float = RHO_HAT) -> dict:
    """RMSD to the first frame, radius of gyration (of the ML atoms in an ML/MM run, molecules made
    whole) and rho over time; JSON + PNG plots in ``folder``."""
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
    bad = np.flatnonzero(~np.isfinite(traj.xyz).all(axis=(1, 2)))
    if bad.size:
        raise InputError(f"{files['trajectory.dcd']}: frame {int(bad[0]) + 1} has NaN or infinite coordinates")
    bad = np.flatnonzero(~(np.isfinite(rho) & np.isfinite(time_ps)))
    if bad.size:
        raise InputError(f"{files['qbc.csv']}: row {int(bad[0]) + 1} has a time or rho_kcal_mol that is not a finite number")
    ml_atoms = _ml_atoms(folder)
    if ml_atoms is not None:
        traj = image_around(traj, ml_atoms).atom_slice(ml_atoms)
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
    from ..outputs import atomic_write_text, strict_json

    atomic_write_text(folder / "analysis.json", strict_json(result))
    _plot_analysis(folder, frame_time, rmsd, rg, time_ps, rho, rho_hat)
    return result


def image_around(traj, atoms):
    """The trajectory imaged around the molecules holding ``atoms`` (mdtraj's ``image_molecules``
    with those as anchors: molecules whole, the anchors centred); unchanged without a periodic box.
    On coordinate arrays, :func:`anif.geometry.make_whole` does the same for the samplers."""
    if traj.unitcell_vectors is None:
        return traj
    chosen = set(int(i) for i in atoms)
    anchors = [m for m in traj.topology.find_molecules() if any(a.index in chosen for a in m)]
    return traj.image_molecules(inplace=False, anchor_molecules=anchors)


def _ml_atoms(folder: Path) -> Optional[list[int]]:
    """The ML atoms recorded in md.json by an ML/MM run (None: the whole System is ML)."""
    path = folder / MD_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("ml_atoms")
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None


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
