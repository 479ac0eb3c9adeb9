"""Old name of :mod:`anif.simulation.sampling_reporters`."""
import sys

from ..simulation import sampling_reporters

sys.modules[__name__] = sampling_reporters
