"""The campaign's HDF5 files, kept in step with the ledger.

``dataset.h5`` (training labels), ``test_sets/NAME.h5`` and ``sampling_set.h5`` are ANI-format
stores (:class:`anif.datasets.DatasetStore`) whose conformers carry a ``structure_key``. The
ledger is the record; the campaign appends (:func:`append`, one atomic commit) the records whose
key a store does not hold yet (:func:`stored_keys`), so a kill at any point never writes anything
twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..datasets import DatasetStore
from .ledger import numbers_of, xyz_of


def stored_keys(path: Path) -> set[str]:
    """The ``structure_key`` values of an ANI-format store (empty if it does not exist)."""
    if not path.exists():
        return set()
    keys: set[str] = set()
    for _, data in DatasetStore(path, "r"):
        keys.update(str(k) for k in data.get("structure_key", ()))
    return keys


def append(path: Path, records: Sequence[dict]) -> None:
    """Append records (grouped by molecule, in order) in one atomic commit."""
    if not records:
        return
    groups: dict[bytes, list[dict]] = {}
    for r in records:
        groups.setdefault(np.asarray(r["numbers"], dtype=np.int64).tobytes(), []).append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = DatasetStore(path, "a")
    with store.transaction():
        for rows in groups.values():
            numbers = rows[0]["numbers"]
            forces = np.stack([r["forces"] if r["forces"] is not None else np.full((len(numbers), 3), np.nan)
                               for r in rows])
            properties = {k: np.array([r["properties"][k] for r in rows]) for k in rows[0]["properties"]}
            store.append(store.group_for(numbers), numbers, np.stack([r["coordinates"] for r in rows]),
                         np.array([r["energy"] for r in rows]), None if np.isnan(forces).all() else forces,
                         structure_key=np.array([r["key"] for r in rows]), **properties)


def label_record(row) -> dict:
    """A store record of a ``labels`` row (status ok)."""
    return {
        "key": row["key"],
        "numbers": numbers_of(row["numbers"]),
        "coordinates": xyz_of(row["coordinates"]),
        "energy": float(row["energy"]),
        "forces": None if row["forces"] is None else xyz_of(row["forces"]),
        "properties": {
            "source": row["source"], "sampler": row["sampler"], "al_cycle": int(row["cycle"]),
            "rho_kcal_mol": np.nan if row["rho"] is None else float(row["rho"]), "method": row["method"],
            "name": row["name"],
        },
    }


def molecule_record(row, method: str) -> dict:
    """A store record of a ``molecules`` row at the oracle's minimum (energy only)."""
    return {
        "key": f"molecule:{row['id']}",
        "numbers": numbers_of(row["numbers"]),
        "coordinates": xyz_of(row["coordinates"]),
        "energy": float(row["energy"]),
        "forces": None,
        "properties": {
            "source": row["source"], "sampler": "optimized", "al_cycle": int(row["cycle"]), "rho_kcal_mol": np.nan,
            "method": method, "name": row["name"], "smiles": row["smiles"],
        },
    }
