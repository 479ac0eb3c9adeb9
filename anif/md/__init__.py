"""Simulations with an ensemble (``anif energy``, ``anif md``, ``anif analyze``): single points, MD
and its mdtraj analysis (:mod:`.dynamics`), their defaults (:mod:`.settings`) and ML/MM systems
(:mod:`.mlmm`). The OpenMM pieces they assemble (the force, integrator, reporters) live in
:mod:`anif.openmm_plugin`. Names load their submodule on first use."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "settings": ("MD_DEFAULTS", "MDSettings"),
    "dynamics": ("MD_JSON", "EnsembleCalculator", "analyze", "load_inputs", "molecule_system", "run_md"),
    "mlmm": ("mixed_system", "prepared_system", "solvated_md_system"),
})
