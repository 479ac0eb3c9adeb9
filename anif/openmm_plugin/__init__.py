"""ANI ensembles in OpenMM: forces that emit the ensemble's disagreement, and reporters."""

from .force import (
    ATOMS_PARAMETER,
    SIGMA_PARAMETER,
    create_force,
    create_system,
    ensemble_atom_count,
    find_ensemble_force,
    read_qbc,
    sigma_from_state,
)
from .guard import DomainGuard, LeftModelDomain
from .integrators import QBCLangevinIntegrator
from .reporters import QBC_CSV_HEADER, QBCReporter, RhoThresholdExceeded
from .builder import langevin_simulation, to_topology

__all__ = [
    "ATOMS_PARAMETER",
    "SIGMA_PARAMETER",
    "QBC_CSV_HEADER",
    "QBCLangevinIntegrator",
    "QBCReporter",
    "DomainGuard",
    "LeftModelDomain",
    "RhoThresholdExceeded",
    "create_force",
    "create_system",
    "ensemble_atom_count",
    "find_ensemble_force",
    "langevin_simulation",
    "to_topology",
    "read_qbc",
    "sigma_from_state",
]
