"""Teacher-labelled data: randomly displaced conformers of small molecules with a model's
energies and forces as labels (``method`` = ``teacher:<model>``).

With the released ANI-1x as the teacher, a student trained on these data can in principle reach
zero error, which makes them the yardstick for training (learning curves, benchmarks, tests)
without quantum chemistry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

#: Twelve small CHNO molecules (a homologous family: alkanes, alcohols, amines, an ether).
SMALL_MOLECULES = {
    "methane": "C",
    "ethane": "CC",
    "propane": "CCC",
    "butane": "CCCC",
    "methanol": "CO",
    "ethanol": "CCO",
    "propanol": "CCCO",
    "isopropanol": "CC(C)O",
    "methylamine": "CN",
    "ethylamine": "CCN",
    "dimethylamine": "CNC",
    "dimethyl_ether": "COC",
}

#: Standard deviation of the random displacement of every coordinate (Angstrom).
DISPLACEMENT = 0.05


def write_teacher_data(
    path: str | Path,
    n_conformers: int,
    seed: int,
    molecules: Mapping[str, str] = SMALL_MOLECULES,
    teacher: str = "ani1x",
    displacement: float = DISPLACEMENT,
    groups_per_molecule: int = 1,
) -> dict:
    """Append ``n_conformers`` displaced conformers of each molecule (name -> SMILES, embedded
    with RDKit + UFF, seed 0) to ``path``, labelled by ``teacher``; returns name -> (numbers,
    coordinates (C, N, 3), EnsembleResult).

    With ``groups_per_molecule`` > 1 each molecule's conformers are spread over that many groups
    (``name_0``, ``name_1``, ...).
    """
    from ..datasets.store import DatasetStore
    from ..models.ensemble import evaluate, load_model
    from ..structures import from_smiles

    model = load_model(teacher)
    rng = np.random.default_rng(seed)
    store = DatasetStore(path)
    out = {}
    with store.transaction():
        for name, smiles in molecules.items():
            s = from_smiles(smiles, seed=0)
            xyz = s.coordinates[None] + rng.normal(0.0, displacement, (n_conformers, s.n_atoms, 3))
            r = evaluate(model, np.tile(s.numbers, (n_conformers, 1)), xyz, forces=True)
            for k, part in enumerate(np.array_split(np.arange(n_conformers), groups_per_molecule)):
                group = name if groups_per_molecule == 1 else f"{name}_{k}"
                store.append(group, s.numbers, xyz[part], r.energy[part], r.forces[part], method=f"teacher:{teacher}")
            out[name] = (s.numbers, xyz, r)
    return out
