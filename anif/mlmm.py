"""ML/MM Systems: the ensemble on a selection of atoms, the rest by a conventional force field.

The mixed System always comes from openmmml's ``MLPotential('ani1x' | 'anif').createMixedSystem``
(mechanical embedding: the ML atoms' intramolecular MM terms are removed, their nonbonded
interactions with the MM atoms stay). Inputs, as users bring them:

- a prepared Amber system (prmtop + inpcrd), or an OpenMM System XML with a PDB, and an mdtraj
  selection of the ML atoms (:func:`prepared_system`, :func:`select_atoms`);
- a SMILES solute in a TIP3P water box (:func:`solvated_molecule`). Its nonbonded parameters for
  the embedding are an approximation from RDKit: MMFF94 partial charges and UFF Lennard-Jones
  terms (sigma = x_i / 2^(1/6), epsilon = D_i), combined with TIP3P by Lorentz-Berthelot.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import InputError
from .structures import Structure, symbol
from .units import KJ_PER_KCAL, NM_TO_ANGSTROM

#: MM nonbonded cutoff of the solvated and prepared periodic systems (nm).
NONBONDED_CUTOFF_NM = 0.9
#: Smallest margin between the solute and its periodic images in a water box (nm).
SOLUTE_MARGIN_NM = 0.5


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

    from .models import load_model, check_supported

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
    from .simulation.builder import atom_names

    return atom_names(structure.numbers)[i]


def solvated_molecule(structure: Structure, smiles: str, box_nm: float, seed: int = 0):
    """(topology, MM System, positions nm, solute atom indices) of a SMILES molecule in a cubic TIP3P
    box of edge ``box_nm``, MM by amber14/tip3p + the solute's RDKit nonbonded terms, PME."""
    import openmm
    from openmm import app, unit

    from .simulation.builder import to_topology

    extent = float(np.ptp(structure.coordinates, axis=0).max()) / NM_TO_ANGSTROM
    smallest = max(2 * NONBONDED_CUTOFF_NM, extent + 2 * SOLUTE_MARGIN_NM)
    if box_nm < smallest:
        raise InputError(f"--box {box_nm} nm is too small for this molecule (at least {smallest:.2f} nm: twice the "
                         f"{NONBONDED_CUTOFF_NM} nm cutoff, and the molecule plus {SOLUTE_MARGIN_NM} nm on each side)")
    forcefield = app.ForceField("amber14/tip3p.xml")
    forcefield.loadFile(io.StringIO(_solute_template_xml(structure, solute_nonbonded(smiles))))
    centred = structure.coordinates / NM_TO_ANGSTROM - structure.coordinates.mean(0) / NM_TO_ANGSTROM + box_nm / 2
    modeller = app.Modeller(to_topology(structure), centred * unit.nanometer)
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(box_nm, box_nm, box_nm) * unit.nanometer)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=NONBONDED_CUTOFF_NM * unit.nanometer, constraints=None,
                                     rigidWater=True)
    positions = np.asarray(modeller.getPositions().value_in_unit(unit.nanometer))
    return modeller.topology, system, positions, list(range(structure.n_atoms))
