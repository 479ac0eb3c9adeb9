"""Old name of :mod:`anif.simulation.reporters`."""
import sys

from ..simulation import reporters

sys.modules[__name__] = reporters
