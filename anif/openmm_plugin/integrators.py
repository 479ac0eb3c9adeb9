"""Old name of :mod:`anif.simulation.integrators`."""
import sys

from ..simulation import integrators

sys.modules[__name__] = integrators
