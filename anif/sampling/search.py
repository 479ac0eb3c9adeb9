"""Configurational search: molecules from several sources, embedded with RDKit, scored by QBC.

Sources (paper Fig. 2b): SMILES files (``SMILES [name]`` per line, ``#`` comment lines), the
GDB-11-like set of small CHNO molecules shipped in ``anif/data/gdb11_like.smi``, dipeptides built
from amino-acid pairs with an RDKit amide-coupling reaction, and random dimers of embedded
molecules. Each molecule is embedded (ETKDG) and UFF-optimised
(:func:`anif.structures.from_smiles`), then all are scored in padded batches; the ones with
rho > rho_hat form the conformer sampling set. Invalid SMILES, elements outside the model,
net charges and radicals are skipped with a reason (logged, and returned in
:attr:`SearchResult.skipped`).
"""

from __future__ import annotations

import logging
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import AllChem

from ..errors import AnifError, InputError
from ..models import supported_numbers
from ..seeds import seed_of
from ..structures import Structure, charge_spin_problem, element_problem, from_smiles
from .candidates import Candidate, score

log = logging.getLogger("anif.sampling")

#: The shipped molecule sets (package data ``anif/data``, inside wheels too).
DATA_DIR = resources.files("anif") / "data"

#: Amide coupling of a backbone carboxylic acid (first reactant) with a backbone amine (second).
_PEPTIDE_BOND = AllChem.ReactionFromSmarts(
    "[NX3:1][CX4:2][CX3:3](=[O:4])[OX2H1].[NX3;!H0;!$(NC=O):5][CX4:6][CX3:7](=[O:8])[OX2H1:9]"
    ">>[N:1][C:2][C:3](=[O:4])[N:5][C:6][C:7](=[O:8])[O:9]"
)


@dataclass
class SearchResult:
    """Every scored molecule, the failing ones (rho > rho_hat) and the skipped ones with reasons."""

    scored: list[Candidate] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    rho_hat: float = 0.0

    @property
    def candidates(self) -> list[Candidate]:
        return [c for c in self.scored if c.rho_kcal_mol > self.rho_hat]


def read_smiles_file(path: str | Path) -> list[tuple[str, str]]:
    """(smiles, name) pairs from a ``.smi`` file: ``SMILES [name]`` per line; lines starting with ``#``
    are comments (``#`` inside a SMILES is a triple bond)."""
    if isinstance(path, str):
        path = Path(path)  # a Path, or an importlib.resources Traversable for the shipped sets
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    out = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if parts and not parts[0].startswith("#"):
            out.append((parts[0], parts[1] if len(parts) > 1 else f"{Path(path.name).stem}:{k}"))
    if not out:
        raise InputError(f"{path}: contains no SMILES")
    return out


def gdb11_like(limit: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """The shipped GDB-11-like set (all of it, or ``limit`` molecules drawn with ``seed``)."""
    molecules = read_smiles_file(DATA_DIR / "gdb11_like.smi")
    if limit is not None and limit < len(molecules):
        pick = np.random.default_rng(seed).choice(len(molecules), size=limit, replace=False)
        molecules = [molecules[i] for i in sorted(pick)]
    return molecules


def dipeptides(amino_acids: Sequence[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Every ordered pair AA1-AA2 as a neutral dipeptide H-AA1-AA2-OH (RDKit amide coupling)."""
    RDLogger.DisableLog("rdApp.*")
    amino_acids = amino_acids or read_smiles_file(DATA_DIR / "amino_acids.smi")
    mols = [(Chem.MolFromSmiles(s), name) for s, name in amino_acids]
    out = []
    for first, name1 in mols:
        for second, name2 in mols:
            products = _PEPTIDE_BOND.RunReactants((first, second)) if first and second else ()
            for (product,) in products:
                try:
                    Chem.SanitizeMol(product)
                except Exception:  # noqa: BLE001 - RDKit raises several sanitisation errors
                    continue
                out.append((Chem.MolToSmiles(product), f"{name1}-{name2}"))
                break
    return out


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def random_orientation(structure: Structure, rng: np.random.Generator) -> np.ndarray:
    """Coordinates of ``structure`` rotated randomly about its centroid, centred at the origin."""
    x = structure.coordinates - structure.coordinates.mean(0)
    return x @ _rotation(rng).T


#: The source name of random dimers among the search's sources.
RANDOM_DIMERS = "random-dimers"


def random_dimers(
    monomers: Sequence[Structure], count: int, seed: int, contact: tuple[float, float] = (2.0, 3.5)
) -> list[Structure]:
    """``count`` dimers of random monomer pairs, randomly oriented, closest contact in ``contact`` (A)."""
    if len(monomers) == 0:
        raise InputError("random dimers need at least one monomer")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        i, j = rng.integers(len(monomers), size=2)
        a, b = random_orientation(monomers[i], rng), random_orientation(monomers[j], rng)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        target = rng.uniform(*contact)
        # move b out along direction until the closest contact is the target distance
        shift = 0.0
        for _ in range(200):
            d = np.linalg.norm(a[:, None] - (b + shift * direction)[None], axis=-1).min()
            if abs(d - target) < 1e-3:
                break
            shift += target - d
        out.append(
            Structure(
                np.concatenate([monomers[i].numbers, monomers[j].numbers]),
                np.concatenate([a, b + shift * direction]),
                name=f"{monomers[i].name}+{monomers[j].name}",
            )
        )
    return out


def screen_smiles(smiles: str, supported: set[int]) -> str | None:
    """Why a SMILES cannot be sampled (invalid, unsupported element, charge, radical), or None."""
    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return "invalid SMILES"
    atoms = mol.GetAtoms()
    charge = Chem.GetFormalCharge(mol)
    electrons = sum(a.GetAtomicNum() + a.GetTotalNumHs() for a in atoms) - charge
    radicals = sum(a.GetNumRadicalElectrons() for a in atoms)
    return (element_problem([a.GetAtomicNum() for a in atoms], supported)
            or charge_spin_problem(electrons, charge, radicals + 1, neutral_closed_shell=True))


def embed(molecules: Sequence[tuple[str, str]], supported: set[int], seed: int):
    """Embed (ETKDG + UFF) the acceptable molecules: ([(structure, smiles)], [(name, reason)])."""
    embedded, skipped = [], []
    for k, (smiles, name) in enumerate(molecules):
        reason = screen_smiles(smiles, supported)
        if reason is None:
            try:
                s = from_smiles(smiles, seed=seed_of(seed, k), name=name)
                embedded.append((s.validate(supported), smiles))
                continue
            except AnifError as exc:
                reason = str(exc)
        log.info("skipped %s (%s): %s", name, smiles, reason)
        skipped.append((name, reason))
    return embedded, skipped


def configurational_search(
    model,
    molecules: Sequence[tuple[str, str]] = (),
    rho_hat: float = 0.23,
    seed: int = 0,
    structures: Sequence[Structure] = (),
    source: str = "smiles",
) -> SearchResult:
    """Embed ``molecules`` ((smiles, name) pairs), add ready ``structures``, score all in batches.

    Provenance of each scored molecule: sampler 'search', its source, name, SMILES and seed.
    """
    supported = supported_numbers(model)
    embedded, skipped = embed(molecules, supported, seed)
    for s in structures:
        try:
            embedded.append((s.validate(supported).require_neutral_closed_shell(), None))
        except AnifError as exc:
            log.info("skipped %s: %s", s.name, exc)
            skipped.append((s.name, str(exc)))
    result = SearchResult(skipped=skipped, rho_hat=rho_hat)
    if embedded:
        energy, rho = score(model, [s for s, _ in embedded])
        for (s, smiles), e, r in zip(embedded, energy, rho):
            provenance = {"sampler": "search", "source": source, "name": s.name, "seed": int(seed)}
            if smiles:
                provenance["smiles"] = smiles
            result.scored.append(Candidate(s, float(r), float(e), provenance))
    return result


def search_item(model, payload, rho_hat: float, seed: int, settings=None) -> SearchResult:
    """One search work item: ``(source, [(smiles, name)], [ready structures])``."""
    source, molecules, structures = payload
    return configurational_search(model, molecules, rho_hat, seed, structures, source)
