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
from .ledger import LabelRecord, Ledger, Molecule, numbers_of, xyz_of

DATASET, SAMPLING_SET, TEST_DIR = "dataset.h5", "sampling_set.h5", "test_sets"


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


def label_record(row: LabelRecord) -> dict:
    """A store record of a label (status ok): the columns ``anif label`` writes (the label's provenance,
    :meth:`anif.labeling.record.Label.columns`) and the campaign's own."""
    return {
        "key": row.key,
        "numbers": numbers_of(row.numbers),
        "coordinates": xyz_of(row.coordinates),
        "energy": float(row.energy),
        "forces": None if row.forces is None else xyz_of(row.forces),
        "properties": {
            "source": row.source, "sampler": row.sampler, "al_cycle": int(row.cycle),
            "rho_kcal_mol": np.nan if row.rho is None else float(row.rho), **row.label().columns(),
        },
    }


def molecule_record(row: Molecule, method: str) -> dict:
    """A store record of a molecule at the oracle's minimum (energy only)."""
    return {
        "key": f"molecule:{row.id}",
        "numbers": numbers_of(row.numbers),
        "coordinates": xyz_of(row.coordinates),
        "energy": float(row.energy),
        "forces": None,
        "properties": {
            "source": row.source, "sampler": "optimized", "al_cycle": int(row.cycle), "rho_kcal_mol": np.nan,
            "method": method, "name": row.name, "smiles": row.smiles,
        },
    }


def sync(folder: Path, ledger: Ledger, test_sets: Sequence[str], minima_method: str) -> int:
    """Bring ``dataset.h5``, ``test_sets/NAME.h5`` (of the generated ``test_sets``) and
    ``sampling_set.h5`` in ``folder`` up to the ledger; returns the dataset size (training labels)."""
    _sync_labels(ledger, folder / DATASET, "train")
    for name in test_sets:
        _sync_labels(ledger, folder / TEST_DIR / f"{name}.h5", f"test:{name}")
    have = stored_keys(folder / SAMPLING_SET)
    append(folder / SAMPLING_SET, [molecule_record(m, minima_method) for m in ledger.molecules(role="train", status="ok")
                                   if f"molecule:{m.id}" not in have])
    return ledger.labels_total()


def _sync_labels(ledger: Ledger, path: Path, role: str) -> None:
    """Append the ok labels of ``role`` that the store at ``path`` lacks (reading only those from the ledger)."""
    have = stored_keys(path)
    append(path, [label_record(r) for r in ledger.labels([k for k in ledger.ok_keys(role) if k not in have])])
