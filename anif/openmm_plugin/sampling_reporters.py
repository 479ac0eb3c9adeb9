"""Reporters that turn an OpenMM simulation into a sampler (paper's RTS and dimer sampling).

- :class:`TemperatureRampReporter` heats: it sets the integrator's target temperature to a
  linear ramp every ``reportInterval`` steps (RTS: 300 K -> 1000 K over 4 ps). Paired with
  :class:`anif.openmm_plugin.QBCReporter` (``stop=True``), which raises
  :class:`RhoThresholdExceeded` at the first step with rho > rho_hat, it is the RTS sampler.
- :class:`DimerReporter` cuts a periodic box of molecules into dimer pairs within a contact
  cutoff every ``reportInterval`` steps, QBC-tests all pairs in one batched ensemble
  evaluation and keeps the failing ones (each molecule pair once).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from openmm import unit

from ..geometry import dimer_pairs, make_whole
from ..models.ensemble import evaluate, pad_structures
from ..structures import Structure

RAMP_CSV_HEADER = "step,time_ps,target_temperature_k"


class TemperatureRampReporter:
    """Set the integrator's target temperature to a linear ramp (needs ``integrator.setTemperature``).

    Parameters
    ----------
    reportInterval : int
        Steps between temperature updates (1: every step).
    start, end : float
        Target temperatures in K at time 0 and from ``duration`` on.
    duration : float
        Ramp length in ps.
    file : str or file-like, optional
        CSV log ``step,time_ps,target_temperature_k``; rows are also kept in :attr:`log`.
    """

    def __init__(self, reportInterval: int = 1, start: float = 300.0, end: float = 1000.0, duration: float = 4.0,
                 file=None):
        self._interval = int(reportInterval)
        self.start, self.end, self.duration = float(start), float(end), float(duration)
        self._own = isinstance(file, str) or hasattr(file, "__fspath__")
        self._out = open(file, "w") if self._own else file
        if self._out is not None:
            self._out.write(RAMP_CSV_HEADER + "\n")
        self.log: list[tuple[int, float, float]] = []

    def temperature(self, time_ps: float) -> float:
        """Target temperature (K) at ``time_ps``."""
        fraction = min(max(time_ps / self.duration, 0.0), 1.0) if self.duration > 0 else 1.0
        return self.start + (self.end - self.start) * fraction

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": None, "include": []}

    def report(self, simulation, state):
        time_ps = state.getTime().value_in_unit(unit.picosecond)
        target = self.temperature(time_ps)
        simulation.integrator.setTemperature(target * unit.kelvin)
        self.log.append((simulation.currentStep, time_ps, target))
        if self._out is not None:
            self._out.write(f"{simulation.currentStep},{time_ps:.6f},{target:.4f}\n")

    def close(self):
        if self._own and self._out is not None:
            self._out.close()


class DimerReporter:
    """Every ``reportInterval`` steps: cut the box into close dimer pairs and QBC-test them in one batch.

    Parameters
    ----------
    reportInterval : int
        Steps between cuts (paper: 50).
    model : an anif.models.Ensemble
        Ensemble for the batched QBC evaluation of the isolated pairs (no periodicity).
    numbers : (M,) atomic numbers of the box's atoms.
    molecules : list of atom-index arrays, one per molecule.
    rho_hat : float
        QBC threshold in kcal/mol; pairs with rho > rho_hat are kept.
    cutoff : float
        Largest closest-contact distance (A, minimum image) for a pair to count as a dimer.
    keep_frames : bool
        Also keep the (whole-molecule) positions of every cut in :attr:`frames` (step -> (M, 3) A).

    Attributes
    ----------
    failures : list of dict(step, time_ps, i, j, structure, rho_kcal_mol, energy), the first
        failing occurrence of each molecule pair (i < j).
    tested : number of pair evaluations so far.
    """

    def __init__(self, reportInterval: int, model, numbers: Sequence[int], molecules: Sequence[np.ndarray],
                 rho_hat: float, cutoff: float = 4.0, keep_frames: bool = False):
        self._interval = int(reportInterval)
        self._model = model
        self._numbers = np.asarray(numbers)
        self._molecules = [np.asarray(m) for m in molecules]
        self.rho_hat, self.cutoff = float(rho_hat), float(cutoff)
        self.frames: dict[int, np.ndarray] | None = {} if keep_frames else None
        self.failures: list[dict] = []
        self.tested = 0
        self._seen: set[tuple[int, int]] = set()

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": False, "include": ["positions"]}

    def report(self, simulation, state):
        box = np.diag(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom))
        positions = make_whole(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom), box,
                               molecules=self._molecules)
        if self.frames is not None:
            self.frames[simulation.currentStep] = positions
        pairs = [p for p in dimer_pairs(positions, self._molecules, box, self.cutoff) if p[:2] not in self._seen]
        if not pairs:
            return
        structures = [
            Structure(np.concatenate([self._numbers[self._molecules[i]], self._numbers[self._molecules[j]]]), x,
                      name=f"{i}+{j}")
            for i, j, x in pairs
        ]
        result = evaluate(self._model, *pad_structures(structures), forces=False)
        self.tested += len(pairs)
        time_ps = state.getTime().value_in_unit(unit.picosecond)
        for (i, j, _), s, rho, energy in zip(pairs, structures, result.rho_kcal_mol, result.energy):
            if rho > self.rho_hat:
                self._seen.add((i, j))
                self.failures.append({"step": simulation.currentStep, "time_ps": time_ps, "i": i, "j": j,
                                      "structure": s, "rho_kcal_mol": float(rho), "energy": float(energy)})
