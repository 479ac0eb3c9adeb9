"""The molecules a campaign draws from: configurational-search sources, bootstrap picks, SMILES helpers."""

from __future__ import annotations

from pathlib import Path

from rdkit import Chem

from ..sampling.search import dipeptides, gdb11_like, read_smiles_file, screen_smiles
from .config import SearchSettings

#: Elements every anif ensemble describes.
CHNO = {1, 6, 7, 8}


def canonical(smiles: str) -> str:
    mol = Chem.MolFromSmiles(smiles)
    return Chem.MolToSmiles(mol) if mol is not None else smiles


def heavy_atoms(smiles: str) -> int:
    mol = Chem.MolFromSmiles(smiles)
    return mol.GetNumHeavyAtoms() if mol is not None else 0


def source_entries(s: SearchSettings) -> list[tuple[str, str, str]]:
    """(source, name, smiles) of every configured source, in a fixed order."""
    entries = []
    if s.gdb11:
        entries += [("gdb11", name, smi) for smi, name in gdb11_like()]
    for path in s.smiles_files:
        entries += [(Path(path).stem, name, smi) for smi, name in read_smiles_file(path)]
    entries += [("smiles", smi, smi) for smi in s.smiles]
    if s.dipeptides:
        entries += [("dipeptides", name, smi) for smi, name in dipeptides()]
    return entries


def unsearched(s: SearchSettings, searched: set, held_out: set):
    """Source molecules not searched yet and not held out (canonical SMILES), as
    (source, name, smiles, heavy atoms); and the unusable ones as (source, name, smiles, reason)."""
    pool, skipped = [], []
    for source, name, smiles in source_entries(s):
        if (source, name, smiles) in searched:
            continue
        reason = screen_smiles(smiles, CHNO)
        if reason:
            skipped.append((source, name, smiles, reason))
        elif canonical(smiles) not in held_out:
            pool.append((source, name, smiles, heavy_atoms(smiles)))
    return pool, skipped


def covering(molecules: list[tuple[str, str]], count: int) -> list[tuple[str, str]]:
    """``count`` (smiles, name) pairs taken in the given (random) order, first one containing each
    of C, N, O (the self energy of an element the training set lacks is undetermined)."""
    def elements(smiles):
        return {a.GetSymbol() for a in Chem.MolFromSmiles(smiles).GetAtoms()}

    chosen = []
    for element in ("C", "N", "O"):
        if not any(element in elements(s) for s, _ in chosen):
            chosen += [m for m in molecules if element in elements(m[0]) and m not in chosen][:1]
    chosen += [m for m in molecules if m not in chosen][: max(0, count - len(chosen))]
    return chosen[:max(count, 1)]
