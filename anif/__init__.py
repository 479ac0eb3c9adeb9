"""anif: the ANI-1x active-learning method on top of OpenMM.

Datasets keep ANI units (Angstrom, Hartree, Hartree/Angstrom); OpenMM code uses nm and
kJ/mol; reports use kcal/mol and kcal/mol/A (see :mod:`anif.units`).
"""

__version__ = "0.1.0"

import os as _os

# torchani warns at import about optional CUDA extensions anif does not use
_os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
