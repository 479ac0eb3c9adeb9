"""anif.units: torchani's Hartree conversions, openmm.unit's exact ones, and a light import."""

import subprocess
import sys

import pytest
from openmm import unit

from anif import units


def test_importing_units_loads_neither_torch_nor_openmm():
    code = "import sys, anif.units; print('torch' in sys.modules, 'openmm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == [
        "False", "False"]


def test_hartree_conversions_are_torchanis():
    from torchani.units import hartree2kcalmol, hartree2kjoulemol

    assert units.HARTREE_TO_KCAL_MOL == float(hartree2kcalmol(1.0))
    assert units.HARTREE_TO_KJ_MOL == float(hartree2kjoulemol(1.0))
    with pytest.raises(AttributeError):
        units.NO_SUCH_CONSTANT


def test_exact_conversions_are_openmms():
    assert units.NM_TO_ANGSTROM == unit.nanometer.conversion_factor_to(unit.angstrom)
    assert units.ANGSTROM_TO_NM == unit.angstrom.conversion_factor_to(unit.nanometer)
    assert units.FS_PER_PS == unit.picosecond.conversion_factor_to(unit.femtosecond)
    assert units.KJ_PER_KCAL == unit.kilocalorie.conversion_factor_to(unit.kilojoule)
    assert units.KJ_MOL_TO_KCAL_MOL == pytest.approx(unit.kilojoule.conversion_factor_to(unit.kilocalorie), rel=1e-15)


def test_hartree_to_ev_is_ases_and_torchanis():
    """extended XYZ energies (eV) -> Hartree: ASE's constant, the same CODATA 2014 value as torchani's."""
    import ase.units
    from torchani.units import HARTREE_TO_EV

    assert units.HARTREE_TO_EV == ase.units.Hartree
    assert units.HARTREE_TO_EV == pytest.approx(float(HARTREE_TO_EV), rel=1e-12)
