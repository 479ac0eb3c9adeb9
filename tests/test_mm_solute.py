"""The MM side of `anif md --solvent water`: GAFF-2.11/AM1-BCC terms of the solute from openmmforcefields
on an OpenFF Molecule, checked against a System that openmmforcefields' SystemGenerator builds
directly; the ML/MM and MM-only Systems built on it; the template cache; bad input."""

import os
import time

import numpy as np
import openmm
import pytest
from openmm import app, unit

from conftest import require_shared

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARACETAMOL = "CC(=O)Nc1ccc(O)cc1"
BOX_NM = 2.4


def _need_openff():
    """openff-toolkit and openmmforcefields are install requirements: missing under CI is a failure."""
    try:
        import openff.toolkit  # noqa: F401
        import openmmforcefields  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"openff-toolkit/openmmforcefields missing: {exc}")
        pytest.skip(f"openff-toolkit/openmmforcefields missing: {exc}")


def _energy_kj(system, positions_nm) -> float:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def _nonbonded(system):
    return next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))


def _particles(system, atoms):
    force = _nonbonded(system)
    return np.array([[p._value for p in force.getParticleParameters(i)] for i in atoms])


@pytest.fixture(scope="module")
def gaff_box(tmp_path_factory):
    """Paracetamol in a 2.4 nm TIP3P box through anif (fresh template cache, then again from it), and
    the same topology by SystemGenerator (no cache: its own AM1-BCC charges)."""
    _need_openff()
    from anif.md.mlmm import solvated_system
    from anif.structures import from_smiles

    cache = tmp_path_factory.mktemp("cache") / "gaff.json"
    structure = from_smiles(PARACETAMOL)
    start = time.perf_counter()
    first = solvated_system(structure, BOX_NM, smiles=PARACETAMOL, cache=cache)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = solvated_system(structure, BOX_NM, smiles=PARACETAMOL, cache=cache)
    second_s = time.perf_counter() - start

    from openff.toolkit import Molecule
    from openmmforcefields.generators import SystemGenerator

    generator = SystemGenerator(
        forcefields=["amber14/tip3p.xml"], small_molecule_forcefield="gaff-2.11",
        molecules=[Molecule.from_smiles(PARACETAMOL)],
        forcefield_kwargs={"constraints": None, "rigidWater": True},
        periodic_forcefield_kwargs={"nonbondedMethod": app.PME, "nonbondedCutoff": 0.9 * unit.nanometer})
    reference = generator.create_system(first.topology)
    return structure, first, second, first_s, second_s, reference


def test_gaff_solute_matches_system_generator(gaff_box):
    structure, built, _, _, _, reference = gaff_box
    assert built.mm["solute"] == "gaff-2.11" and built.mm["charges"] == "am1bcc"
    assert built.mm["versions"]["openmmforcefields"] and built.mm["versions"]["ambertools"]
    solute = built.solute_atoms
    assert solute == list(range(20)) and built.system.getNumParticles() == reference.getNumParticles()
    ours, theirs = _particles(built.system, solute), _particles(reference, solute)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)  # charge, sigma, epsilon per solute atom
    assert ours[:, 0].sum() == pytest.approx(0.0, abs=1e-6)  # AM1-BCC charges sum to the formal charge
    assert np.abs(ours[:, 0]).max() > 0.3  # real charges, not zeros
    # the whole solvated system's MM energy, same positions, same platform
    assert _energy_kj(built.system, built.positions) == pytest.approx(_energy_kj(reference, built.positions),
                                                                      rel=1e-7, abs=1e-3)
    # and the solute's bonded terms are GAFF's: as many bonds/angles/torsions as SystemGenerator gives
    for kind in (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce):
        count = [sum(f.getNumBonds() if kind is openmm.HarmonicBondForce else f.getNumAngles()
                     if kind is openmm.HarmonicAngleForce else f.getNumTorsions()
                     for f in s.getForces() if isinstance(f, kind)) for s in (built.system, reference)]
        assert count[0] == count[1] > 0


def test_gaff_templates_served_from_cache(gaff_box):
    _, first, second, first_s, second_s, _ = gaff_box
    assert first.mm["from_cache"] is False and second.mm["from_cache"] is True
    assert second_s < first_s / 3, (first_s, second_s)  # antechamber + sqm are not run again
    np.testing.assert_array_equal(_particles(first.system, first.solute_atoms),
                                  _particles(second.system, second.solute_atoms))


def test_mixed_and_mm_only_systems_on_gaff(gaff_box):
    require_shared("torchani/Neurochem/ani-1x_8x.info")
    from anif.md.mlmm import mixed_system, mm_only_system

    _, built, _, _, _, reference = gaff_box
    ml = set(built.solute_atoms)
    mixed = mixed_system(built.topology, built.system, built.solute_atoms)
    # the ML atoms' intramolecular MM terms are gone...
    for force in mixed.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            terms = [force.getBondParameters(i)[:2] for i in range(force.getNumBonds())]
        elif isinstance(force, openmm.HarmonicAngleForce):
            terms = [force.getAngleParameters(i)[:3] for i in range(force.getNumAngles())]
        elif isinstance(force, openmm.PeriodicTorsionForce):
            terms = [force.getTorsionParameters(i)[:4] for i in range(force.getNumTorsions())]
        else:
            continue
        assert not any(set(t) <= ml for t in terms)
    nonbonded = _nonbonded(mixed)
    exceptions = [nonbonded.getExceptionParameters(i) for i in range(nonbonded.getNumExceptions())]
    pairs = {(min(e[0], e[1]), max(e[0], e[1])): e for e in exceptions if e[0] in ml and e[1] in ml}
    assert len(pairs) == len(ml) * (len(ml) - 1) // 2  # every ML pair excluded from MM
    assert all(e[2]._value == 0 and e[4]._value == 0 for e in pairs.values())
    # ... and their nonbonded terms with the water stay: the GAFF parameters of SystemGenerator's System
    np.testing.assert_allclose(_particles(mixed, built.solute_atoms), _particles(reference, built.solute_atoms),
                               atol=1e-6)
    # MM only: the interpolating mix at lambda 0 is SystemGenerator's System, energy for energy
    mm_only = mm_only_system(built.topology, built.system, built.solute_atoms)
    assert _energy_kj(mm_only, built.positions) == pytest.approx(_energy_kj(reference, built.positions),
                                                                 rel=1e-6, abs=1e-2)


def test_antechamber_failure_is_one_line(tmp_path, monkeypatch, capfd):
    """An antechamber that cannot type the molecule (a stand-in that fails as antechamber does): error, exit 1,
    no output folder."""
    _need_openff()
    from conftest import run_anif

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "antechamber").write_text("#!/bin/sh\necho 'Info: Bond types are assigned' >&2\n"
                                      "echo 'Error: Cannot properly run bondtype' >&2\nexit 1\n")
    (fake / "antechamber").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ANIF_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    code, _, err = run_anif(monkeypatch, capfd, "md", "--smiles", "CCO", "--solvent", "water", "--box", 2.0,
                            "--steps", 5, "--out", out)
    assert code == 1, err
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1 and "mmff-uff" in err
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--smiles", "CC(=O)[O-]", "--solvent", "water", "--box", 2.0], "neutral closed-shell solutes"),
    (["--smiles", "CCO", "--mm-solute", "gaff-2.11"], "--mm-solute goes with --solvent"),
    (["--smiles", "CCO", "--mm-only"], "--mm-only needs an ML/MM system"),
    (["--smiles", "CCO", "--solvent", "water", "--box", 2.0, "--mm-solute", "amber"], "unknown --mm-solute"),
])
def test_solvent_bad_input(tmp_path, monkeypatch, capsys, args, message):
    from conftest import run_anif

    out = tmp_path / "run"
    code, _, err = run_anif(monkeypatch, capsys, "md", *args, "--steps", 5, "--out", out)
    assert code == 1 and err.strip().startswith("error:") and message in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_sdf_partial_charges_are_kept(tmp_path):
    """An SDF's own partial charges (OpenFF's atom.dprop.PartialCharge) are the solute's MM charges."""
    _need_openff()
    from openff.toolkit import Molecule
    from openff.units import unit as offunit

    from anif.md.mlmm import solvated_system
    from anif.structures import read_structures

    molecule = Molecule.from_smiles("CCO")
    molecule.generate_conformers(n_conformers=1)
    given = np.array([-0.2, 0.15, -0.6, 0.05, 0.05, 0.05, 0.03, 0.03, 0.44])  # sums to 0
    molecule.partial_charges = given * offunit.elementary_charge
    molecule.to_file(str(tmp_path / "ethanol.sdf"), file_format="SDF")
    structure = read_structures(tmp_path / "ethanol.sdf")[0]
    built = solvated_system(structure, 2.0, sdf=tmp_path / "ethanol.sdf", cache=tmp_path / "unused.json")
    assert built.mm["charges"] == "sdf" and built.mm["cache"] is None
    np.testing.assert_allclose(_particles(built.system, built.solute_atoms)[:, 0], given, atol=1e-6)
    assert not (tmp_path / "unused.json").exists()  # given charges are not cached as AM1-BCC ones
