"""Old name of :mod:`anif.simulation.builder`."""
import sys

from ..simulation import builder

sys.modules[__name__] = builder
