"""Unit conversions. Importing this module imports neither torch nor the OpenMM library.

Hartree conversions are torchani's (:mod:`torchani.units`, CODATA 2014), so numbers match the
ANI/COMP6 data; they are read from torchani on first use (which imports torch). The others are
exact by definition and equal to openmm.unit's (tests/test_units.py checks both).
"""

NM_TO_ANGSTROM = 10.0
ANGSTROM_TO_NM = 0.1
FS_PER_PS = 1000.0
#: Thermochemical calorie: kJ per kcal.
KJ_PER_KCAL = 4.184
KJ_MOL_TO_KCAL_MOL = 1.0 / KJ_PER_KCAL

#: Names here -> torchani.units names, read on first use.
_FROM_TORCHANI = {"HARTREE_TO_KCAL_MOL": "HARTREE_TO_KCALPERMOL", "HARTREE_TO_KJ_MOL": "HARTREE_TO_KJOULEPERMOL"}
#: Names here -> ase.units names, read on first use: eV per Hartree for extended XYZ files in ASE's
#: units (ASE's default CODATA 2014 value, the same as torchani's HARTREE_TO_EV).
_FROM_ASE = {"HARTREE_TO_EV": "Hartree"}


def __getattr__(name: str) -> float:
    if name in _FROM_ASE:
        from ase import units as ase_units

        value = globals()[name] = float(getattr(ase_units, _FROM_ASE[name]))
        return value
    if name not in _FROM_TORCHANI:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from torchani import units

    value = globals()[name] = float(getattr(units, _FROM_TORCHANI[name]))
    return value
