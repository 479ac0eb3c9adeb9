"""Oracles: a reference method behind one interface, for ``anif label`` and the campaign alike.

An oracle labels structures (:class:`~anif.labeling.record.Label`: energy in Hartree, forces in
Hartree/Angstrom, provenance), optimises molecules and gives Hessians (Ha/A^2) for normal modes:

- :class:`PySCFOracle`: wB97X/6-31G(d) (or any :class:`~anif.labeling.settings.Level`) with PySCF
  (or gpu4pyscf on a CUDA device), geomeTRIC optimisations with tight criteria, analytic Hessians;
  each label's SCF starts from the nearest labelled conformer's orbitals kept in ``guesses``
  (a folder shared by the workers: ``anif label``'s ``OUT.dm/``, the campaign's ``densities/``);
- :class:`TeacherOracle`: any ensemble (``model:ani1x``, ``model:PATH``) as the reference, in
  float64, for cheap experiments and tests: L-BFGS minimum and finite-difference Hessian of the
  teacher's energy;
- :class:`ModelMinimaOracle`: one oracle's labels, a teacher's minima and Hessians.

Oracles are small picklable objects: :func:`label_task` runs one on the Dask pool (or in this
process) and never raises for a structure the oracle cannot handle; it returns a failed
:class:`Label` so that the failure is recorded and the batch goes on.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from ..errors import AnifError
from ..structures import Structure
from .record import Label
from .reference import hessian, identity, label_structure, optimize, provenance
from .settings import Level


class Oracle:
    """Interface: ``label``, ``optimize`` and ``hessian`` of one structure; ``method`` names the level
    of the labels, ``minima_method`` the level of the minima (and their energies)."""

    method: str = ""

    @property
    def minima_method(self) -> str:
        return self.method

    def provenance(self) -> dict:
        """The columns every label of this oracle carries (``method``, ``program``, the level's settings)."""
        return {"method": self.method}

    def label(self, structure: Structure) -> Label:
        """Energy and forces of ``structure``, or a failed label with the reason."""
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
    guesses: str | bool = True  # folder of converged orbitals (reference.Guesses); True: this process's; False: none
    preoptimize: bool = True  # start geomeTRIC at the ANI-1x minimum (H, C, N, O singlets): fewer DFT gradients

    @property
    def method(self) -> str:
        return self.level.tag

    def provenance(self) -> dict:
        return provenance(self.level)

    def label(self, structure: Structure) -> Label:
        return label_structure(structure, self.level, self.threads, self.guesses)

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

    def provenance(self) -> dict:
        from importlib.metadata import version

        return {"method": self.method, "program": f"torchani {version('torchani')}"}

    def label(self, structure: Structure) -> Label:
        from ..models import evaluate

        start = time.perf_counter()
        try:
            r = evaluate(_teacher(self.spec), structure.numbers, structure.coordinates)
        except AnifError as exc:
            return stamped(structure, self, ok=False, reason=str(exc), wall_time_s=time.perf_counter() - start)
        return stamped(structure, self, ok=True, energy=float(r.energy[0]), forces=r.forces[0],
                       wall_time_s=time.perf_counter() - start)

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

    def provenance(self) -> dict:
        return self.labels.provenance()

    def label(self, structure: Structure) -> Label:
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


def stamped(structure: Structure, oracle: Oracle, **fields) -> Label:
    """A label of ``structure`` (``fields``: ok, energy, forces or reason, ...) with ``oracle``'s provenance
    and this worker's name (a failure the oracle raised, a worker's error, a teacher's label)."""
    return Label(**identity(structure), **oracle.provenance(), **fields)


def label_task(structure: Structure, oracle: Oracle) -> Label:
    """One label on a worker (``anif label`` and the campaign): the oracle's, its trouble a failed label."""
    try:
        label = oracle.label(structure)
    except AnifError as exc:
        return stamped(structure, oracle, ok=False, reason=str(exc))
    if label.ok and not (np.isfinite(label.energy) and np.isfinite(label.forces).all()):
        return replace(label, ok=False, reason="oracle returned a non-finite energy or forces")
    return label
