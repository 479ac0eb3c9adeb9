"""The old name of :mod:`anif.simulation` (it was never an OpenMM plugin in OpenMM's sense).

Kept so that scripts, pickled PythonForce callables and installed openmmml entry points that
name ``anif.openmm_plugin[.module]`` keep working: each submodule here *is* the new module."""

from ..simulation import *  # noqa: F401,F403
from ..simulation import __all__  # noqa: F401
