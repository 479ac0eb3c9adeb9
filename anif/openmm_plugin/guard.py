"""Watching that a simulation stays inside the model's domain.

ANI-1x is trained on intact, neutral, closed-shell molecules near equilibrium. MD that breaks or
forms covalent bonds, flings atoms beyond the descriptor's cutoff, produces NaN or runaway
energies, or sits far above the QBC threshold for long stretches is physically meaningless.
:class:`DomainGuard` checks this every ``reportInterval`` steps and raises
:class:`LeftModelDomain` out of ``Simulation.step`` with the reason; the frames written so far stay.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from openmm import unit
from rdkit import Chem

from ..geometry import make_whole
from .reporters import SigmaReader

#: A pair is bonded below BOND_FACTOR x the sum of covalent radii; a bond counts as broken above
#: BREAK_FACTOR x that sum and a new one as formed below FORM_FACTOR x it (hysteresis: vibrations
#: at high temperature neither break nor form bonds).
BOND_FACTOR, BREAK_FACTOR, FORM_FACTOR = 1.25, 1.6, 1.0
#: ANI-1x's radial cutoff (A): an atom without any neighbour inside it has left its molecule.
NEIGHBOUR_CUTOFF = 5.2


class LeftModelDomain(Exception):
    """Raised out of ``Simulation.step`` when the simulation leaves the model's domain."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"step {step}: {reason}")
        self.step = step
        self.reason = reason


def _radii(numbers) -> np.ndarray:
    table = Chem.GetPeriodicTable()
    return np.array([table.GetRcovalent(int(z)) for z in numbers])


def bond_graph(numbers, positions_angstrom, factor: float = BOND_FACTOR) -> set[tuple[int, int]]:
    """Covalent bonds (i < j) by distance: below ``factor`` x the sum of covalent radii."""
    x = np.asarray(positions_angstrom, dtype=float)
    radii = _radii(numbers)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.nonzero(np.triu(d < factor * (radii[:, None] + radii[None]), 1))
    return set(zip(i.tolist(), j.tolist()))


def _label(numbers, i: int, j: int) -> str:
    table = Chem.GetPeriodicTable()
    return f"{table.GetElementSymbol(int(numbers[i]))}{i}-{table.GetElementSymbol(int(numbers[j]))}{j}"


def bond_changes(numbers, reference: set[tuple[int, int]], positions_angstrom) -> Optional[str]:
    """A description of bonds broken or formed against ``reference`` (None if the graph holds)."""
    x = np.asarray(positions_angstrom, dtype=float)
    radii = _radii(numbers)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    limit = radii[:, None] + radii[None]
    broken = [(i, j) for i, j in sorted(reference) if d[i, j] > BREAK_FACTOR * limit[i, j]]
    formed = [(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(d < FORM_FACTOR * limit, 1)))
              if (int(i), int(j)) not in reference]
    parts = []
    if broken:
        parts.append("bond(s) broken: " + ", ".join(f"{_label(numbers, i, j)} {d[i, j]:.2f} A" for i, j in broken[:4]))
    if formed:
        parts.append("bond(s) formed: " + ", ".join(f"{_label(numbers, i, j)} {d[i, j]:.2f} A" for i, j in formed[:4]))
    return "; ".join(parts) or None


def isolated_atoms(positions_angstrom, cutoff: float = NEIGHBOUR_CUTOFF) -> list[int]:
    """Atoms without another atom within ``cutoff`` (A)."""
    x = np.asarray(positions_angstrom, dtype=float)
    if len(x) < 2:
        return []
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return np.flatnonzero(d.min(1) > cutoff).tolist()


class DomainGuard:
    """Stop a simulation that leaves the model's domain (see the module docstring).

    Parameters
    ----------
    reportInterval : int
        Steps between checks.
    atoms : sequence of int
        Particle indices of the ensemble's atoms (the ML region).
    numbers : sequence of int
        Their atomic numbers.
    reference_angstrom : (N, 3) array
        Their starting positions (A); the bond graph there is the one that must hold. Molecules
        in a periodic box are made whole with the box before checking (minimum image per bond).
    rho_limit : float, optional
        rho (kcal/mol) counted as far above rho_hat; the run stops after ``rho_patience``
        consecutive checks above it. sigma comes from the integrator when it is a
        :class:`QBCLangevinIntegrator`, else from the State (one extra force evaluation per check).
    force : openmm.Force, optional
        Any handle of the ensemble force (default: the System's only one), for the rho check.
    """

    def __init__(self, reportInterval: int, atoms: Sequence[int], numbers: Sequence[int], reference_angstrom,
                 rho_limit: Optional[float] = None, rho_patience: int = 50, force=None):
        self._interval = int(reportInterval)
        self._atoms = np.asarray(atoms, dtype=np.int64)
        self._numbers = np.asarray(numbers)
        self._bonds = bond_graph(self._numbers, reference_angstrom)
        self._rho_limit, self._rho_patience = rho_limit, int(rho_patience)
        self._above = 0
        self._sigma = SigmaReader(force)

    @property
    def bonds(self) -> set[tuple[int, int]]:
        return set(self._bonds)

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        rho = SigmaReader.include(simulation) if self._rho_limit is not None else []
        return {"steps": steps, "periodic": False, "include": sorted({"positions", "energy", *rho})}

    def report(self, simulation, state):
        step = simulation.currentStep
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        x = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[self._atoms]
        if not np.isfinite(energy) or not np.all(np.isfinite(x)):
            raise LeftModelDomain(step, "the energy or the positions are no longer finite (the integration blew up)")
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
        x = make_whole(x, np.asarray(box), bonds=self._bonds) if simulation.system.usesPeriodicBoundaryConditions() else x
        change = bond_changes(self._numbers, self._bonds, x)
        if change:
            raise LeftModelDomain(step, change)
        if not simulation.system.usesPeriodicBoundaryConditions():
            lonely = isolated_atoms(x)
            if lonely:
                raise LeftModelDomain(step, f"atom(s) {', '.join(map(str, lonely[:6]))} have no neighbour within "
                                            f"{NEIGHBOUR_CUTOFF} A (the molecule fell apart)")
        if self._rho_limit is not None:
            rho = self._sigma(simulation, state) / np.sqrt(self._sigma.n_atoms(simulation))
            self._above = self._above + 1 if rho > self._rho_limit else 0
            if self._above >= self._rho_patience:
                raise LeftModelDomain(step, f"rho stayed above {self._rho_limit:.2f} kcal/mol for {self._above} "
                                            "checks in a row (far outside the model's training data)")
