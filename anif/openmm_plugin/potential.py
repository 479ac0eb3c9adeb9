"""openmmml entry points: ``MLPotential('ani1x')`` and ``MLPotential('anif', model=PATH)``.

Registered in setup.py under the ``openmmml.potentials`` entry-point group, like
``openmmml.models.anipotential``. The classes implement openmmml's ``MLPotentialImplFactory`` and
``MLPotentialImpl`` interfaces without importing openmmml: importing ``openmmml.mlpotential`` loads
every entry point, this module included, so importing it from here would be circular.
"""

from __future__ import annotations

from typing import Iterable, Optional

import openmm

from ..errors import AnifError


class AnifPotentialImplFactory:
    """Creates :class:`AnifPotentialImpl` for 'ani1x' (released ensemble) or 'anif' (a model directory)."""

    def createImpl(self, name: str, model: Optional[str] = None, implementation: Optional[str] = None,
                   **args) -> "AnifPotentialImpl":
        if name == "ani1x":
            spec = model or "ani1x"
        elif model is None:
            raise AnifError("MLPotential('anif') needs model=PATH (an anif model directory)")
        else:
            spec = str(model)
        return AnifPotentialImpl(spec, implementation)


class AnifPotentialImpl:
    """An ANI ensemble added to a System as an anif ensemble force (sigma via anif_sigma)."""

    def __init__(self, spec: str, implementation: Optional[str]):
        self.spec = spec
        self.implementation = implementation

    def addForces(self, topology: openmm.app.Topology, system: openmm.System, atoms: Optional[Iterable[int]],
                  forceGroup: int, backend: str = "torch", **args):
        from ..models.ensemble import load_model
        from .force import create_force

        kwargs = {} if self.implementation is None else {"implementation": self.implementation}
        model = load_model(self.spec, **kwargs)
        included = list(topology.atoms())
        if atoms is not None:
            atoms = list(atoms)
            included = [included[i] for i in atoms]
        periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
        force = create_force(model, [a.element.atomic_number for a in included], atoms, periodic, backend)
        force.setForceGroup(forceGroup)
        system.addForce(force)

    def getMLLongRange(self) -> bool | None:
        return False
