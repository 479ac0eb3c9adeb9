"""Old name of :mod:`anif.simulation.potential`."""
import sys

from ..simulation import potential

sys.modules[__name__] = potential
