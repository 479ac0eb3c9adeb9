"""A Langevin integrator that records the ensemble's disagreement as it integrates.

Reading sigma through ``Context.getState`` makes OpenMM evaluate the force a second time,
which doubles the cost of a QBC test at every step (RTS). :class:`QBCLangevinIntegrator`
is OpenMM's LangevinMiddle scheme written as a ``CustomIntegrator`` that also stores
``deriv(energy, anif_sigma)`` (= sigma) and the potential energy in global variables after
each step. OpenMM computes them with the forces the next step needs, so they come for free;
:class:`anif.openmm_plugin.QBCReporter` reads them from there.
"""

from __future__ import annotations

import math

import openmm
from openmm import unit

from .force import SIGMA_PARAMETER

_R = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def _value(quantity, unit_):
    return quantity.value_in_unit(unit_) if unit.is_quantity(quantity) else float(quantity)


class QBCLangevinIntegrator(openmm.CustomIntegrator):
    """LangevinMiddle dynamics (kick, drift, thermostat, drift) that records sigma each step.

    Parameters
    ----------
    temperature : float or Quantity (K)
    friction : float or Quantity (1/ps)
    timestep : float or Quantity (ps)

    After each step ``sigma_kj_mol`` and ``potential_kj_mol`` hold the ensemble disagreement
    and the potential energy at the new positions. The System needs an ensemble force from
    :func:`anif.openmm_plugin.create_force` with the TorchForce backend.
    """

    def __init__(self, temperature, friction, timestep):
        dt = _value(timestep, unit.picosecond)
        super().__init__(dt)
        gamma = _value(friction, unit.picosecond**-1)
        self.addGlobalVariable("a", math.exp(-gamma * dt))
        self.addGlobalVariable("b", math.sqrt(1 - math.exp(-2 * gamma * dt)))
        self.addGlobalVariable("kT", 0.0)
        self.addGlobalVariable("sigma", 0.0)
        self.addGlobalVariable("epot", 0.0)
        self.addPerDofVariable("x1", 0.0)
        self.addUpdateContextState()
        self.addComputePerDof("v", "v + dt*f/m")
        self.addConstrainVelocities()
        self.addComputePerDof("x", "x + 0.5*dt*v")
        self.addComputePerDof("v", "a*v + b*sqrt(kT/m)*gaussian")
        self.addComputePerDof("x", "x + 0.5*dt*v")
        self.addComputePerDof("x1", "x")
        self.addConstrainPositions()
        self.addComputePerDof("v", "v + (x-x1)/dt")
        self.addComputeGlobal("sigma", f"deriv(energy, {SIGMA_PARAMETER})")
        self.addComputeGlobal("epot", "energy")
        self.setTemperature(temperature)

    def setTemperature(self, temperature) -> None:
        """Thermostat target (K); heating reporters call this every step."""
        self.setGlobalVariableByName("kT", _R * _value(temperature, unit.kelvin))

    def getTemperature(self) -> unit.Quantity:
        return self.getGlobalVariableByName("kT") / _R * unit.kelvin

    @property
    def sigma_kj_mol(self) -> float:
        return self.getGlobalVariableByName("sigma")

    @property
    def potential_kj_mol(self) -> float:
        return self.getGlobalVariableByName("epot")
