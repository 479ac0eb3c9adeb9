"""Unit conversions, with torchani's constants so numbers match the ANI/COMP6 data."""

from torchani.units import hartree2kcalmol, hartree2kjoulemol

HARTREE_TO_KCAL_MOL = float(hartree2kcalmol(1.0))
HARTREE_TO_KJ_MOL = float(hartree2kjoulemol(1.0))
KJ_MOL_TO_KCAL_MOL = 1.0 / 4.184
NM_TO_ANGSTROM = 10.0
