"""Molecular structures: reading XYZ/SDF/PDB files, SMILES embedding, validation.

A :class:`Structure` holds atomic numbers and Cartesian coordinates in Angstrom (ANI
units). Readers and validators raise :class:`anif.errors.InputError` with a message that
names the file, frame and problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem

from .errors import InputError, UnsupportedElementError
from .units import NM_TO_ANGSTROM

_PT = Chem.GetPeriodicTable()

#: Closest allowed approach of two atoms (Angstrom) before a structure is called overlapping.
MIN_DISTANCE = 0.5


def symbol(z: int) -> str:
    return _PT.GetElementSymbol(int(z))


def atomic_masses(numbers) -> np.ndarray:
    """Masses (N,) in amu of the elements ``numbers`` (OpenMM's element table)."""
    from openmm.app import element

    return np.array([element.Element.getByAtomicNumber(int(z)).mass._value for z in numbers])


def hill_formula(numbers) -> str:
    """Hill formula: C then H first when carbon is present, the rest alphabetical (C2H6O, H2O)."""
    counts: dict[str, int] = {}
    for z in numbers:
        counts[symbol(z)] = counts.get(symbol(z), 0) + 1
    first = ["C", "H"] if "C" in counts else []
    order = [s for s in first if s in counts] + sorted(s for s in counts if s not in first)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


def atomic_number(sym: str) -> int:
    try:
        return int(_PT.GetAtomicNumber(sym.strip().capitalize()))
    except RuntimeError:
        raise InputError(f"unknown element symbol {sym!r}") from None


@dataclass
class Structure:
    """One molecular structure: atomic numbers (N,), coordinates (N, 3) in Angstrom."""

    numbers: np.ndarray
    coordinates: np.ndarray
    name: str = ""
    charge: int = 0
    multiplicity: int = 1
    bonds: list[tuple[int, int]] = field(default_factory=list)
    #: What reading changed (e.g. hydrogens added), for the command to say.
    notes: list[str] = field(default_factory=list)
    #: Why the structure is open-shell, where the reader knows (said with the open-shell error).
    spin_hint: str = ""

    def __post_init__(self):
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        problem = element_range_problem(self.numbers)
        if problem:
            raise InputError(f"{self.name or 'structure'}: {problem}")
        self.coordinates = np.asarray(self.coordinates, dtype=np.float64).reshape(-1, 3)
        if len(self.numbers) != len(self.coordinates):
            raise InputError(
                f"{self.name or 'structure'}: {len(self.numbers)} atoms but "
                f"{len(self.coordinates)} coordinate rows"
            )

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def symbols(self) -> list[str]:
        return [symbol(z) for z in self.numbers]

    def validate(self, supported: set[int] | None = None, min_distance: float = MIN_DISTANCE) -> "Structure":
        """Raise InputError/UnsupportedElementError for NaNs, overlaps and elements outside ``supported``."""
        label = self.name or "structure"
        if self.n_atoms == 0:
            raise InputError(f"{label}: no atoms")
        if not np.all(np.isfinite(self.coordinates)):
            raise InputError(f"{label}: coordinates contain NaN or infinite values")
        problem = None if supported is None else element_problem(self.numbers, supported)
        if problem:
            raise UnsupportedElementError(f"{label}: {problem}")
        if self.n_atoms > 1:
            d = np.linalg.norm(self.coordinates[:, None] - self.coordinates[None], axis=-1)
            d[np.diag_indices(self.n_atoms)] = np.inf
            i, j = np.unravel_index(np.argmin(d), d.shape)
            if d[i, j] < min_distance:
                raise InputError(
                    f"{label}: atoms {min(i, j)} and {max(i, j)} overlap "
                    f"({d[i, j]:.3f} A apart, minimum {min_distance} A)"
                )
        return self

    def check_charge_spin(self, neutral_closed_shell: bool = False) -> "Structure":
        """Raise InputError for an impossible charge and multiplicity (see :func:`charge_spin_problem`)."""
        problem = charge_spin_problem(int(self.numbers.sum()) - int(self.charge), int(self.charge),
                                      int(self.multiplicity), neutral_closed_shell)
        if problem:
            hint = f"; {self.spin_hint}" if self.spin_hint and "open-shell" in problem else ""
            raise InputError(f"{self.name or 'structure'}: {problem}{hint}")
        return self

    def require_neutral_closed_shell(self) -> "Structure":
        """ANI-1x describes neutral closed-shell molecules only."""
        return self.check_charge_spin(neutral_closed_shell=True)


#: Atomic numbers of the periodic table.
MAX_ATOMIC_NUMBER = 118


def element_range_problem(numbers) -> str | None:
    """Why ``numbers`` are not all atomic numbers of the periodic table (1 .. 118), or None."""
    numbers = np.asarray(numbers)
    if numbers.size == 0:
        return None
    bad = numbers[(numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)]
    if bad.size:
        return f"atomic number {int(bad[0])} is not an element (the periodic table is 1 .. {MAX_ATOMIC_NUMBER})"
    return None


def element_problem(numbers, supported) -> str | None:
    """Why elements ``numbers`` (atomic numbers) fall outside a model's ``supported`` ones, or None."""
    bad = sorted({int(z) for z in np.unique(np.asarray(numbers, dtype=np.int64))} - {int(z) for z in supported})
    if not bad:
        return None
    return (f"element(s) {', '.join(symbol(z) for z in bad)} not supported by the model "
            f"(supports {', '.join(symbol(z) for z in sorted(supported))})")


def charge_spin_problem(electrons: int, charge: int, multiplicity: int, neutral_closed_shell: bool = False) -> str | None:
    """Why ``electrons`` (charge included) cannot have ``multiplicity``, or None.

    With ``neutral_closed_shell`` (ANI-1x's domain) any charge or unpaired electron is the problem.
    """
    if neutral_closed_shell:
        if charge != 0:
            return f"charged molecule (net charge {charge:+d})"
        if multiplicity != 1 or electrons % 2:
            return f"open-shell molecule (radical: {electrons} electrons, multiplicity {multiplicity})"
        return None
    unpaired = multiplicity - 1
    if unpaired < 0 or electrons < unpaired or (electrons - unpaired) % 2:
        return f"{electrons} electrons (charge {charge:+d}) cannot have multiplicity {multiplicity}"
    return None


def from_rdkit(mol: Chem.Mol, name: str = "", conf_id: int = -1) -> Structure:
    """Structure from an RDKit molecule with explicit hydrogens and a 3D conformer."""
    charge = Chem.GetFormalCharge(mol)
    radicals = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    return Structure(
        numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
        coordinates=mol.GetConformer(conf_id).GetPositions(),
        name=name,
        charge=charge,
        multiplicity=radicals + 1,
        bonds=[(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()],
    )


def _for_embedding(smiles: str, seed: int) -> tuple[Chem.Mol, AllChem.EmbedParameters]:
    """The molecule of a SMILES string with explicit hydrogens, and seeded ETKDG parameters to embed it."""
    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        raise InputError(f"invalid SMILES {smiles!r}")
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    return Chem.AddHs(mol), params


def from_smiles(smiles: str, seed: int = 0, name: str | None = None) -> Structure:
    """Embed a SMILES string in 3D with RDKit (ETKDG) and optimise it with UFF."""
    mol, params = _for_embedding(smiles, seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise InputError(f"RDKit could not embed SMILES {smiles!r} in 3D")
    if AllChem.UFFHasAllMoleculeParams(mol):
        AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
    return from_rdkit(mol, name=name or smiles)


#: Two conformers closer than this (Angstrom, best all-atom RMSD over symmetry-equivalent atoms and
#: mirror images) are one conformer to :func:`conformers_from_smiles`.
CONFORMER_RMSD = 0.3


def conformers_from_smiles(smiles: str, n: int, seed: int = 0, name: str | None = None,
                           embeddings: int = 10) -> list[Structure]:
    """Up to ``n`` distinct conformers of a SMILES string, lowest UFF energy first: ``embeddings`` x
    ``n`` ETKDG embeddings, each UFF-optimised, pruned to those more than :data:`CONFORMER_RMSD` apart
    (mirror images count as one: ANI and DFT energies do not tell them apart). ``n = 1`` is
    :func:`from_smiles`. The k-th is named ``name`` with `` #k`` appended from k = 2 on."""
    from rdkit.Chem import rdMolAlign

    name = name or smiles
    if n <= 1:
        return [from_smiles(smiles, seed=seed, name=name)]
    mol, params = _for_embedding(smiles, seed)
    ids = list(AllChem.EmbedMultipleConfs(mol, embeddings * n, params))
    if not ids:
        return [from_smiles(smiles, seed=seed, name=name)]
    energies = dict(zip(ids, (e for _, e in AllChem.UFFOptimizeMoleculeConfs(mol, maxIters=2000)))) \
        if AllChem.UFFHasAllMoleculeParams(mol) else dict.fromkeys(ids, 0.0)
    mirrors = {}
    for i in ids:  # each conformer's mirror image, as another conformer of the same molecule
        mirror = Chem.Conformer(mol.GetConformer(i))
        for a in range(mol.GetNumAtoms()):
            x, y, z = mirror.GetAtomPosition(a)
            mirror.SetAtomPosition(a, (-x, y, z))
        mirrors[i] = mol.AddConformer(mirror, assignId=True)
    kept: list[int] = []
    for i in sorted(ids, key=lambda i: (energies[i], i)):
        if all(min(rdMolAlign.GetBestRMS(mol, mol, i, k), rdMolAlign.GetBestRMS(mol, mol, i, mirrors[k]))
               > CONFORMER_RMSD for k in kept):
            kept.append(i)
        if len(kept) == n:
            break
    return [from_rdkit(mol, name=name if j == 0 else f"{name} #{j + 1}", conf_id=i) for j, i in enumerate(kept)]


def _read_xyz(path: Path) -> list[Structure]:
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        frame = len(out) + 1
        try:
            n = int(lines[i].split()[0])
        except (ValueError, IndexError):
            raise InputError(f"{path}: frame {frame}: expected an atom count, got {lines[i]!r}") from None
        if i + 2 + n > len(lines):
            raise InputError(f"{path}: frame {frame}: truncated ({n} atoms announced)")
        comment = lines[i + 1].strip()
        numbers, coords = [], []
        for line in lines[i + 2 : i + 2 + n]:
            parts = line.split()
            if len(parts) < 4:
                raise InputError(f"{path}: frame {frame}: bad atom line {line!r}")
            try:
                numbers.append(int(parts[0]) if parts[0].isdigit() else atomic_number(parts[0]))
            except InputError as exc:
                raise InputError(f"{path}: frame {frame}: {exc}") from None
            try:
                coords.append([float(x) for x in parts[1:4]])
            except ValueError:
                raise InputError(f"{path}: frame {frame}: bad coordinates in {line!r}") from None
        problem = element_range_problem(numbers)
        if problem:
            raise InputError(f"{path}: frame {frame}: {problem}")
        if _hydrogens_missing(numbers, coords):
            raise InputError(f"{path}: frame {frame}: no hydrogen atoms, and its {len(numbers)} heavy atoms have no "
                             "neutral closed-shell bonding: hydrogens missing from the file? (ANI-1x needs every atom)")
        out.append(Structure(numbers, coords, name=f"{path.stem}:{frame}" if not comment else comment))
        i += 2 + n
    return out


def _hydrogens_missing(numbers, coordinates) -> bool:
    """Whether a frame without any hydrogen (C, N or O among its atoms) is a skeleton whose hydrogens
    were left out: RDKit finds no neutral Lewis structure for it (CO2, CO, N2, cyanogen pass; the
    C-C-O skeleton of ethanol does not)."""
    from rdkit.Chem import rdDetermineBonds

    if 1 in numbers or not any(z in (6, 7, 8) for z in numbers) or len(numbers) < 2:
        return False
    block = f"{len(numbers)}\n\n" + "".join(
        f"{symbol(z)} {x[0]:.6f} {x[1]:.6f} {x[2]:.6f}\n" for z, x in zip(numbers, np.asarray(coordinates, float)))
    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromXYZBlock(block)
        if mol is None:
            return False
        rdDetermineBonds.DetermineBonds(mol, charge=0)
    except ValueError:  # "could not find valid bond ordering"
        return True
    except Exception:  # anything else is not evidence of missing hydrogens
        return False
    return False


def _read_sdf(path: Path) -> list[Structure]:
    RDLogger.DisableLog("rdApp.*")
    out = []
    try:
        supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=True)
    except OSError as exc:  # RDKit: "File error: Invalid input file" for an empty file
        raise InputError(f"{path}: not a readable SDF/MOL file ({str(exc).strip().splitlines()[0]})") from None
    for k, mol in enumerate(supplier):
        if mol is None:
            raise InputError(f"{path}: record {k + 1} could not be parsed")
        if mol.GetNumConformers() == 0:
            raise InputError(f"{path}: record {k + 1} has no coordinates")
        name = mol.GetProp("_Name") if mol.HasProp("_Name") and mol.GetProp("_Name") else f"{path.stem}:{k + 1}"
        where = f"{path}: record {k + 1}"
        notes = []
        implicit = sum(a.GetTotalNumHs() for a in mol.GetAtoms())
        if implicit:
            if not mol.GetConformer().Is3D() and mol.GetNumAtoms() > 2:
                raise InputError(f"{where} is a 2D record without explicit hydrogens (no 3D geometry to place "
                                 "them on); give 3D coordinates with hydrogens, or the molecule as --smiles")
            mol = Chem.AddHs(mol, addCoords=True)
            notes.append(f"{where}: added {implicit} implicit hydrogen(s) (RDKit, with coordinates); "
                         "the file has no explicit hydrogens for them")
        radicals = [(a.GetIdx() + 1, a.GetSymbol(), a.GetNumRadicalElectrons()) for a in mol.GetAtoms()
                    if a.GetNumRadicalElectrons()]
        structure = from_rdkit(mol, name=name)
        structure.notes.extend(notes)
        if radicals:
            i, sym, n = radicals[0]
            structure.spin_hint = (f"atom {i} ({sym}) has {n} unpaired electron(s) as written in {where} "
                                   "(a radical, or hydrogens missing from the record)")
        out.append(structure)
    return out


def _read_pdb(path: Path) -> list[Structure]:
    from openmm.app import PDBFile

    try:
        pdb = PDBFile(str(path))
    except Exception as exc:  # OpenMM raises bare Exceptions/ValueErrors on bad PDBs
        raise InputError(f"{path}: not a readable PDB file ({exc})") from None
    atoms = list(pdb.topology.atoms())
    if any(a.element is None for a in atoms):
        raise InputError(f"{path}: atoms without an element column")
    numbers = [a.element.atomic_number for a in atoms]
    if 1 not in numbers and any(z in (6, 7, 8) for z in numbers):
        raise InputError(f"{path}: has no hydrogen atoms (PDB files often leave them out; ANI-1x needs every "
                         "atom); add hydrogens first (e.g. pdbfixer, reduce or obabel -h)")
    bonds = [(b[0].index, b[1].index) for b in pdb.topology.bonds()]
    return [
        Structure(numbers, np.array(pdb.getPositions(asNumpy=True, frame=f)._value) * NM_TO_ANGSTROM,
                  name=f"{path.stem}:{f + 1}", bonds=bonds)
        for f in range(pdb.getNumFrames())
    ]


_READERS = {".xyz": _read_xyz, ".sdf": _read_sdf, ".mol": _read_sdf, ".pdb": _read_pdb}


def read_structures(path: str | Path) -> list[Structure]:
    """Read every structure of an XYZ (multi-frame), SDF or PDB file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a structure file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"{path}: unsupported format {path.suffix!r} (use .xyz, .sdf or .pdb)")
    try:
        structures = reader(path)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    if not structures:
        raise InputError(f"{path}: contains no structures")
    return structures


def write_xyz(structures: list[Structure], path: str | Path) -> None:
    with open(path, "w") as fh:
        for s in structures:
            fh.write(f"{s.n_atoms}\n{s.name}\n")
            for sym, (x, y, z) in zip(s.symbols, s.coordinates):
                fh.write(f"{sym:2s} {x:16.10f} {y:16.10f} {z:16.10f}\n")
