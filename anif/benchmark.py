"""Old name of :mod:`anif.accuracy` ("benchmark" now means the speed scripts in scripts/)."""
import sys

from . import accuracy

sys.modules[__name__] = accuracy
