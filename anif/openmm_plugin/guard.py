"""Old name of :mod:`anif.simulation.guard`."""
import sys

from ..simulation import guard

sys.modules[__name__] = guard
