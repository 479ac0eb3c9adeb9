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
from .integrators import QBCLangevinIntegrator, langevin_integrator
from .reporters import QBC_CSV_HEADER, QBCReporter, RhoThresholdExceeded

__all__ = [
    "ATOMS_PARAMETER",
    "SIGMA_PARAMETER",
    "QBC_CSV_HEADER",
    "QBCLangevinIntegrator",
    "QBCReporter",
    "RhoThresholdExceeded",
    "create_force",
    "create_system",
    "ensemble_atom_count",
    "find_ensemble_force",
    "langevin_integrator",
    "read_qbc",
    "sigma_from_state",
]
