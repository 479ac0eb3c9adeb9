"""Old name of :mod:`anif.simulation.force`."""
import sys

from ..simulation import force

sys.modules[__name__] = force
