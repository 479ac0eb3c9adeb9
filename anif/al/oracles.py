"""Oracles: the reference method of a campaign behind one interface.

An oracle labels structures (energy in Hartree, forces in Hartree/Angstrom), optimises
molecules and gives Hessians (Ha/A^2) for normal modes:

- :class:`PySCFOracle`: wB97X/6-31G(d) (or any :class:`anif.labeling.Level`) with PySCF (or
  gpu4pyscf on a CUDA device), geomeTRIC optimisations with tight criteria, analytic Hessians;
  each label's SCF starts from the nearest labelled conformer's orbitals kept in ``guesses``
  (a folder shared by the workers; the campaign's ``densities/``);
- :class:`TeacherOracle`: any ensemble (``model:ani1x``, ``model:PATH``) as the reference, in
  float64, for cheap experiments and tests: L-BFGS minimum and finite-difference Hessian of the
  teacher's energy.

Oracles are small picklable objects: :func:`label_task` and :func:`prepare_task` run them on
the Dask pool (or in this process). Neither raises for a structure the oracle cannot handle;
they return ``{"ok": False, "reason": ...}`` so that the failure is recorded and the batch goes on.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import AnifError
from ..labeling import Level, check_level, hessian, label_structure, optimize, resolve_device
from ..structures import Structure
from .config import Config


#: The campaign folder's converged orbitals (SCF initial guesses shared by the workers).
DENSITIES = "densities"


class Oracle:
    """Interface: ``label``, ``optimize`` and ``hessian`` of one structure; ``method`` names the level
    of the labels, ``minima_method`` the level of the minima (and their energies)."""

    method: str = ""

    @property
    def minima_method(self) -> str:
        return self.method

    def label(self, structure: Structure) -> dict:
        """``{"ok", "energy", "forces", "reason", "wall_time_s", "host"}`` (see labeling.label_structure)."""
        raise NotImplementedError

    def optimize(self, structure: Structure) -> tuple[Structure, float, bool]:
        """(minimum, its energy in Hartree, converged); raises AnifError when the oracle cannot."""
        raise NotImplementedError

    def hessian(self, structure: Structure) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class PySCFOracle(Oracle):
    level: Level = Level()
    threads: Optional[int] = None
    convergence: str = "GAU_TIGHT"
    max_steps: int = 200
    guesses: Optional[str] = None  # folder of converged orbitals (labeling.Guesses); None: this process only
    preoptimize: bool = True  # start geomeTRIC at the ANI-1x minimum (H, C, N, O singlets): fewer DFT gradients

    @property
    def method(self) -> str:
        """The level as labels record it: ``wb97x/6-31g*``, ``wb97x/6-31g*/df`` with density fitting."""
        return self.level.name + ("/df" if self.level.density_fit else "")

    def label(self, structure: Structure) -> dict:
        return label_structure(structure, self.level, self.threads, guesses=self.guesses or True)

    def optimize(self, structure: Structure) -> tuple[Structure, float, bool]:
        start = ani1x_minimum(structure) if self.preoptimize else structure
        result = optimize(start, self.level, self.convergence, self.max_steps, self.threads)
        return result.structure, result.energy, result.converged

    def hessian(self, structure: Structure) -> np.ndarray:
        return hessian(structure, self.level, threads=self.threads)


@functools.lru_cache(maxsize=2)
def _teacher(spec: str):
    from ..models import load_model

    return load_model(spec).double()


@dataclass(frozen=True)
class TeacherOracle(Oracle):
    spec: str = "ani1x"  # a load_model spec

    @property
    def method(self) -> str:
        return f"teacher:{self.spec}"

    def label(self, structure: Structure) -> dict:
        from ..labeling import structure_key
        from ..models import evaluate

        start = time.perf_counter()
        record = {"key": structure_key(structure), "name": structure.name, "host": f"{socket.gethostname()}:{os.getpid()}"}
        try:
            r = evaluate(_teacher(self.spec), structure.numbers, structure.coordinates)
        except AnifError as exc:
            return {**record, "ok": False, "reason": str(exc), "wall_time_s": time.perf_counter() - start}
        return {**record, "ok": True, "energy": float(r.energy[0]), "forces": r.forces[0],
                "wall_time_s": time.perf_counter() - start}

    def optimize(self, structure: Structure) -> tuple[Structure, float, bool]:
        from ..models import evaluate
        from ..sampling.dnms import optimize

        model = _teacher(self.spec)
        minimum = optimize(model, structure)
        r = evaluate(model, minimum.numbers, minimum.coordinates)
        minimum.name = structure.name
        return minimum, float(r.energy[0]), bool(np.abs(r.forces).max() < 1e-3)

    def hessian(self, structure: Structure) -> np.ndarray:
        from ..sampling.dnms import ensemble_hessian

        return ensemble_hessian(_teacher(self.spec), structure)


@dataclass(frozen=True)
class ModelMinimaOracle(Oracle):
    """Labels from ``labels``; minima and Hessians from an ensemble (``[oracle] minima = "model:..."``):
    a fine-tuning campaign samples around its starting ensemble's minima instead of paying for
    reference optimisations and Hessians."""

    labels: Oracle = PySCFOracle()
    minima: TeacherOracle = TeacherOracle()

    @property
    def method(self) -> str:
        return self.labels.method

    @property
    def minima_method(self) -> str:
        return self.minima.method

    def label(self, structure: Structure) -> dict:
        return self.labels.label(structure)

    def optimize(self, structure: Structure) -> tuple[Structure, float, bool]:
        return self.minima.optimize(structure)

    def hessian(self, structure: Structure) -> np.ndarray:
        return self.minima.hessian(structure)


def ani1x_minimum(structure: Structure) -> Structure:
    """``structure`` relaxed by ANI-1x (trained on wB97X/6-31G(d)), where ANI-1x applies (neutral
    H, C, N, O singlets), else unchanged: a start that saves the oracle's optimisation about one
    gradient of its 4-5 on the quickstart's molecules (README). The oracle's own criteria still
    decide the minimum."""
    if structure.n_atoms < 2 or structure.charge != 0 or structure.multiplicity != 1 \
            or not set(int(z) for z in structure.numbers) <= {1, 6, 7, 8}:
        return structure
    from ..sampling.dnms import optimize as relax

    try:
        minimum = relax(_teacher("ani1x"), structure)
    except (AnifError, OSError, RuntimeError, ValueError):  # ANI-1x not available offline: no head start
        return structure
    if not np.isfinite(minimum.coordinates).all():
        return structure
    return Structure(structure.numbers, minimum.coordinates, name=structure.name, charge=structure.charge,
                     multiplicity=structure.multiplicity, bonds=structure.bonds)


def make_oracle(config: Config, threads: Optional[int] = None, folder: Optional[str | Path] = None) -> Oracle:
    """The oracle a config names (``[campaign] oracle``), its PySCF level from ``[oracle]``, with
    minima from a model when ``[oracle] minima`` names one; ``folder``: the campaign folder, whose
    ``densities/`` the PySCF oracle's workers share."""
    spec, o = config.campaign.oracle, config.oracle
    if spec.startswith("model:"):
        oracle = TeacherOracle(spec[len("model:"):])
    else:
        level = check_level(Level(method=o.method, basis=o.basis, density_fit=o.density_fit,
                                  max_cycle=o.max_scf_cycles, device=o.device))
        level = replace(level, device=resolve_device(level.device))  # one-line error for cuda without one
        oracle = PySCFOracle(level, o.threads or threads, o.convergence, o.max_steps,
                             None if folder is None else str(Path(folder) / DENSITIES))
    if o.minima == "oracle":
        return oracle
    return ModelMinimaOracle(oracle, TeacherOracle(o.minima[len("model:"):]))


def label_task(structure: Structure, oracle: Oracle) -> dict:
    """One label on a worker; oracle trouble becomes ``ok: False`` with the reason."""
    try:
        result = oracle.label(structure)
    except AnifError as exc:
        return {"ok": False, "reason": str(exc), "wall_time_s": float("nan"), "host": ""}
    if result["ok"] and not (np.isfinite(result["energy"]) and np.isfinite(result["forces"]).all()):
        return {**result, "ok": False, "reason": "oracle returned a non-finite energy or forces"}
    return result


def prepare_task(structure: Structure, oracle: Oracle, with_hessian: bool) -> dict:
    """Optimise a molecule (and its Hessian at the minimum) for the conformer sampling set. A minimum
    whose bonds differ from the molecule's (e.g. H2O2 relaxed into two OH at 2.2 A) is a failure: it is
    another molecule, and MD from it flies apart."""
    from ..openmm_plugin.guard import bond_changes, bond_graph

    start = time.perf_counter()
    try:
        minimum, energy, converged = oracle.optimize(structure)
        change = bond_changes(structure.numbers, bond_graph(structure.numbers, structure.coordinates),
                              minimum.coordinates)
        if change:
            raise AnifError(f"the optimisation changed the molecule ({change})")
        h = oracle.hessian(minimum) if with_hessian else None
    except (AnifError, np.linalg.LinAlgError, ValueError, RuntimeError) as exc:
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}", "wall_time_s": time.perf_counter() - start}
    return {"ok": True, "coordinates": minimum.coordinates, "energy": energy, "converged": converged,
            "hessian": h, "wall_time_s": time.perf_counter() - start}
