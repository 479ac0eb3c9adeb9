"""ANI-format HDF5 datasets: a crash-safe store, merge, split by molecule, and summary.

Layout written (readable and appendable by ``torchani.datasets.ANIDataset``, torchani 2.9):

- root attribute ``grouping = "by_formula"`` (torchani's "new" format), ``anif_kind``
  (``"labels"``: reference labels, or ``"candidates"``: sampled structures whose ``energies``
  are the ensemble's placeholder, ``method = "ensemble-mean"``) and ``anif_generation`` (a
  commit counter);
- one flat HDF5 group per molecule (a single formula per group, as ``by_formula`` requires;
  names may not contain ``/``), every group with the same set of datasets;
- per-conformer datasets, leading dimension C, resizable along it:
  ``species`` (C, N) int64 atomic numbers, ``coordinates`` (C, N, 3) float64 Angstrom,
  ``energies`` (C,) float64 Hartree, ``forces`` (C, N, 3) float64 Hartree/Angstrom (NaN where
  a conformer has none), ``structure_key`` (identity of the structure, see
  :func:`structure_keys`), the provenance columns of :data:`PROVENANCE` and any extra
  property. Strings are stored as variable-length UTF-8; read them with torchani's
  ``get_numpy_conformers`` (``get_conformers`` turns everything into tensors, so pass it
  ``properties=`` without the string columns).

Read-only, the store also understands the legacy layout of the ANI-1x and COMP6 v1 files
(nested groups, ``species`` (N,) as element symbols or ``atomic_numbers`` ints,
non-batch ``lot``). :meth:`DatasetStore.read` always returns ``species`` as (N,) atomic numbers.

Durability: the file is never modified in place. A hidden folder beside it (``.NAME.anif/``)
holds a second copy (``shadow.h5``), the last commit's appends (``journal.npz``) and the
writers' lock. A transaction brings the shadow up to date by replaying the journal, appends to
it in place, flushes and fsyncs it, and renames it over the file (``os.replace``), keeping the
old file as the next shadow through a hard link. A kill at any moment leaves the last
committed file whole, so every committed conformer stays readable by torchani; a shadow left
half-written (marked by ``dirty`` until the commit ends) is rebuilt from the file by one
copy. An append therefore costs the size of what it writes, not of the file, at the price of
twice the disk space. A reader that keeps the file open across two later commits is safe
while HDF5 file locking is on (the default): its copy is then rebuilt rather than reused.

Appends skip conformers the group already holds (same :func:`structure_keys`), checked under
the lock, so concurrent writers and repeated merges never duplicate a structure.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import math
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import h5py
import numpy as np

from ..errors import InputError
from ..plausibility import label_problems
from ..structures import Structure, atomic_number, hill_formula, read_structures, symbol

#: Per-conformer provenance columns every written file carries, with their "unknown" values.
PROVENANCE = {
    "source": "",  # where the molecule came from (e.g. "gdb11", "chembl", "s66x8")
    "sampler": "",  # how the conformer was made (e.g. "dnms", "rts", "dimer", "optimized")
    "al_cycle": -1,  # active-learning cycle that selected it
    "rho_kcal_mol": math.nan,  # QBC rho at selection, kcal/mol
    "method": "",  # reference method, e.g. "wb97x/6-31g(d)"
}
#: Store kinds: reference labels, or sampled candidates with placeholder energies.
STORE_KINDS = ("labels", "candidates")
#: ``method`` of candidates: their energies are the ensemble mean, a placeholder for labels.
CANDIDATE_METHOD = "ensemble-mean"
KIND_ATTR, GENERATION_ATTR = "anif_kind", "anif_generation"
#: Seed of the molecule shuffle in :func:`split`.
SPLIT_SEED = 0
ELEMENT_KEYS = ("species", "numbers", "atomic_numbers")
#: Keys that hold one value per atom (second axis N) in written files.
ATOMIC_KEYS = ("species", "coordinates", "forces")
#: Multiply legacy-layout (COMP6 v1) stored "forces", the energy gradient in Ha/A, by this to get
#: forces (-dE/dx, Ha/A); the physical checks of this sign are in :mod:`anif.datasets.comp6`.
STORED_FORCES_TO_FORCES = -1.0
#: Non-batch keys of the legacy layout (stored once per group, not per conformer).
LEGACY_NONBATCH_KEYS = ("species", "numbers", "atomic_numbers", "smiles", "lot")
_SKIP = ("_created", "_meta")
_STR = h5py.string_dtype("utf-8")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _as_numbers(values, label: str) -> np.ndarray:
    """Atomic numbers from ints, symbols or bytes."""
    arr = np.asarray(values)
    if arr.dtype.kind in "SUO":
        flat = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.ravel()]
        return np.array([atomic_number(s) for s in flat], dtype=np.int64).reshape(arr.shape)
    if arr.dtype.kind not in "iu":
        raise InputError(f"{label}: species must be atomic numbers or element symbols")
    return arr.astype(np.int64)


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line (h5py's run over several: folder, errno, buffer ...)."""
    text = str(exc).strip()
    if "Is a directory" in text:
        return "it is a folder"
    return text.splitlines()[0] if text else type(exc).__name__


def _check_shapes(where: str, data: dict) -> None:
    """Raise InputError (naming ``where`` and the field) when a group's arrays cannot be what they
    claim: atomic numbers outside the periodic table, coordinates not (C, N, 3), energies not
    one per conformer, forces not the coordinates' shape."""
    from ..structures import element_range_problem

    species = data["species"]
    problem = element_range_problem(species)
    if problem:
        raise InputError(f"{where}: field 'species': {problem}")
    if "coordinates" not in data:
        return
    coords = data["coordinates"]
    n_atoms = species.shape[0]
    if coords.dtype.kind not in "fiu" or coords.ndim != 3 or coords.shape[1:] != (n_atoms, 3):
        raise InputError(f"{where}: field 'coordinates' has shape {coords.shape} ({coords.dtype}), expected "
                         f"(conformers, {n_atoms}, 3) numbers for {n_atoms} atoms")
    n_conf = coords.shape[0]
    energies = data.get("energies")
    if energies is not None and (energies.dtype.kind not in "fiu" or energies.size != n_conf
                                 or (energies.ndim and energies.shape[0] != n_conf)):
        raise InputError(f"{where}: field 'energies' has {energies.size} value(s) of {energies.dtype} for "
                         f"{n_conf} conformers (one number each expected)")
    forces = data.get("forces")
    if forces is not None and (forces.dtype.kind not in "fiu" or forces.shape != coords.shape):
        raise InputError(f"{where}: field 'forces' has shape {forces.shape}, expected the coordinates' {coords.shape}")


def check_labels(where: str, data: dict) -> None:
    """Raise InputError when a group's reference labels cannot be right in ANI units (NaN or
    infinite values, energies not in Hartree, coordinates in Bohr or nm, forces not Ha/A): the
    checks ``merge`` makes, for every reader that computes with the labels."""
    coords = np.asarray(data["coordinates"], dtype=np.float64)
    if not np.isfinite(coords).all():
        raise InputError(f"{where}: field 'coordinates' holds NaN or infinite values")
    if "energies" in data:
        energies = np.asarray(data["energies"], dtype=np.float64).ravel()
        if not np.isfinite(energies).all():
            raise InputError(f"{where}: field 'energies' holds NaN or infinite values")
    problems = label_problems(data["species"], coords, data.get("energies", np.zeros(0)), data.get("forces"))
    if problems:
        raise InputError(f"{where}: {problems[0]}")


def _decode(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind in "SO":
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr.ravel()]).reshape(arr.shape)
    return arr


def _default_like(dtype: np.dtype):
    if dtype.kind == "f":
        return math.nan
    if dtype.kind in "iu":
        return -1
    if dtype.kind == "b":
        return False
    return ""


def _column(values, n_conf: int, key: str, group: str) -> np.ndarray:
    """A per-conformer column: scalars broadcast to (C,), strings to str arrays."""
    arr = np.asarray(values)
    if arr.dtype.kind in "SO":
        arr = _decode(arr)
    if arr.ndim == 0:
        arr = np.full(n_conf, arr.item(), dtype=arr.dtype)
    if arr.shape[0] != n_conf:
        raise InputError(f"{group}: property {key!r} has {arr.shape[0]} rows for {n_conf} conformers")
    return arr


def _write_dtype(arr: np.ndarray):
    return _STR if arr.dtype.kind == "U" else arr.dtype


def structure_keys(numbers, coordinates, charge=0, multiplicity=1) -> list[str]:
    """Identity of each structure: elements, coordinates to 1e-6 A, charge and multiplicity.

    ``coordinates`` (C, N, 3) or (N, 3); ``charge``/``multiplicity`` scalars or (C,).
    """
    x = np.asarray(coordinates, dtype=np.float64)
    x = x[None] if x.ndim == 2 else x
    elements = np.ascontiguousarray(np.asarray(numbers).ravel(), dtype=np.int64).tobytes()
    charges = np.broadcast_to(np.asarray(charge), (x.shape[0],))
    spins = np.broadcast_to(np.asarray(multiplicity), (x.shape[0],))
    keys = []
    for c in range(x.shape[0]):
        h = hashlib.sha1(elements)
        h.update((np.round(x[c], 6) + 0.0).tobytes())
        h.update(f"{int(charges[c])},{int(spins[c])}".encode())
        keys.append(h.hexdigest()[:24])
    return keys


def _stored_kind(f: h5py.File) -> Optional[str]:
    """The kind an existing file holds: its attribute, else read from its first group's columns."""
    if KIND_ATTR in f.attrs:
        return str(f.attrs[KIND_ATTR])
    if "grouping" not in f.attrs and len(f):
        return "labels"  # ANI-1x / COMP6 legacy files hold reference data
    for name, g in f.items():
        if name in _SKIP or not isinstance(g, h5py.Group) or "coordinates" not in g:
            continue
        if "scf_converged" in g:
            return "labels"
        method = _decode(g["method"][:1]) if "method" in g and len(g["method"]) else np.array([""])
        if str(method[0]) == CANDIDATE_METHOD or (not str(method[0]) and "provenance" in g):
            return "candidates"
        return "labels" if str(method[0]) else None
    return None


# ---- writers' lock ----------------------------------------------------------------------
_HELD: set[Path] = set()
_HELD_GUARD = threading.Lock()


@contextmanager
def _writer_lock(path: Path, store: Path):
    """An exclusive lock on ``path``; a second lock from this process on the same store is an error
    (``flock`` would wait for ourselves forever)."""
    key = path.resolve()
    with _HELD_GUARD:
        if key in _HELD:
            raise InputError(f"{store}: already being written by this process (the same output given twice?)")
        _HELD.add(key)
    try:
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
    finally:
        with _HELD_GUARD:
            _HELD.discard(key)


class _Copies:
    """The hidden folder beside a store: the shadow copy, the last commit's journal, the lock."""

    def __init__(self, path: Path):
        self.path = path
        self.dir = path.parent / f".{path.name}.anif"
        self.shadow = self.dir / "shadow.h5"
        self.prev = self.dir / "prev.h5"  # the old file during the switch
        self.journal = self.dir / "journal.npz"
        self.dirty = self.dir / "dirty"  # the shadow may be half-written
        self.lock = self.dir / "lock"

    def finish_switch(self) -> None:
        """Complete or undo a switch a killed writer left: the old file becomes the clean shadow."""
        if not self.prev.exists():
            return
        if self.shadow.exists():  # killed before the rename: the file is still the old one
            self.prev.unlink()
        else:  # killed after it: the old file, never written to, is the shadow
            os.replace(self.prev, self.shadow)
            self.dirty.unlink(missing_ok=True)

    def mark_dirty(self) -> None:
        if not self.dirty.exists():
            self.dirty.touch()
            _fsync(self.dir)

    def fingerprint(self, path: Path) -> np.ndarray:
        st = os.stat(path)
        return np.array([st.st_ino, st.st_size, st.st_mtime_ns], dtype=np.int64)

    def read_journal(self):
        """The last commit's journal (an open NpzFile, read lazily; close it), or None."""
        try:
            return np.load(self.journal, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def write_journal(self, generation: int, appends: list[tuple[str, dict]]) -> None:
        arrays = {"generation": np.array(generation), "fingerprint": self.fingerprint(self.shadow),
                  "groups": np.array([g for g, _ in appends], dtype=str)}
        for i, (_, columns) in enumerate(appends):
            arrays.update({f"{i}/{k}": v for k, v in columns.items()})
        tmp = self.dir / "journal.tmp.npz"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.journal)

    def switch(self) -> None:
        """Make the shadow the file (the commit point); the old file becomes the next shadow."""
        if self.path.exists():
            try:
                os.link(self.path, self.prev)
            except OSError:  # no hard links here: the next transaction copies the file
                pass
        os.replace(self.shadow, self.path)
        _fsync(self.path.parent)
        if self.prev.exists():
            os.replace(self.prev, self.shadow)
            self.dirty.unlink(missing_ok=True)


class DatasetStore:
    """An ANI-format HDF5 file of molecules (groups) and their conformers.

    ``mode="r"`` reads (ANI-1x/COMP6 legacy files too); ``mode="a"`` creates or appends.
    ``kind`` ("labels" or "candidates") refuses a file of the other kind; a label store
    refuses energies, coordinates and forces that cannot be ANI units
    (:mod:`anif.plausibility`).
    """

    def __init__(self, path: str | Path, mode: str = "a", kind: Optional[str] = None):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        if kind is not None and kind not in STORE_KINDS:
            raise ValueError(f"kind must be one of {STORE_KINDS}, not {kind!r}")
        self.path = Path(path)
        self.mode = mode
        self.kind = kind
        self.stored_kind: Optional[str] = None  # the file's kind: its attribute, else read from its columns
        self._copies = _Copies(self.path)
        self._index: Optional[dict[str, tuple[int, str]]] = None
        self._generation = -1  # the commit the index describes
        self._species: dict[str, np.ndarray] = {}
        self._keys: dict[str, tuple[int, set]] = {}
        self._txn: Optional[h5py.File] = None
        self._journal: list[tuple[str, dict]] = []  # this transaction's appends
        self._written = False  # whether this transaction changed the shadow
        if self.path.exists():
            self._scan()
            with self._open() as f:
                self._check_kind(f)
        elif mode == "r":
            raise InputError(f"{self.path}: no such dataset file")

    def _check_kind(self, f: h5py.File) -> None:
        """Refuse a file of another kind; without a requested kind, take the file's attribute."""
        self.stored_kind = _stored_kind(f)
        if self.kind is None:
            self.kind = f.attrs.get(KIND_ATTR)
            self.kind = None if self.kind is None else str(self.kind)
        elif self.stored_kind is not None and self.stored_kind != self.kind:
            wanted = "reference labels" if self.kind == "labels" else "sampled candidates"
            raise InputError(f"{self.path} is a {self.stored_kind[:-1]} store; {wanted} go to another file")

    # ---- reading ------------------------------------------------------------------------
    @contextmanager
    def _open(self) -> Iterator[h5py.File]:
        if self._txn is not None:
            yield self._txn
            return
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(f"{self.path}: not a readable HDF5 file ({_first_line(exc)})") from None
        with f:
            yield f

    def _scan(self) -> dict[str, tuple[int, str]]:
        """Index conformer groups: name -> (number of conformers, element key)."""
        index: dict[str, tuple[int, str]] = {}
        has_data = False

        def visit(name, obj):
            nonlocal has_data
            if name.split("/")[0] in _SKIP:
                return
            if not isinstance(obj, h5py.Group):
                has_data = True
                return
            keys = [k for k, v in obj.items() if isinstance(v, h5py.Dataset)]
            if "coordinates" not in keys:
                return
            element = next((k for k in ELEMENT_KEYS if k in keys), None)
            if element is None:
                raise InputError(f"{self.path}: group {name!r} has coordinates but no species")
            coords = obj["coordinates"]
            if coords.ndim != 3 or coords.shape[2] != 3:
                raise InputError(f"{self.path}: group {name!r} coordinates are not (C, N, 3)")
            index[name] = (int(coords.shape[0]), element)

        with self._open() as f:
            try:
                f.visititems(visit)
            except (OSError, RuntimeError, KeyError) as exc:
                raise InputError(f"{self.path}: corrupt HDF5 file ({exc})") from None
            if has_data and not index:
                raise InputError(
                    f"{self.path}: not an ANI-format dataset (no group holds 'coordinates' and 'species')"
                )
            self._generation = int(f.attrs.get(GENERATION_ATTR, 0))
        self._index = index
        self._species, self._keys = {}, {}
        return self._index

    @property
    def legacy(self) -> bool:
        """True for files in the legacy ANI-1x/COMP6 layout (no ``grouping`` attribute)."""
        if not self.path.exists():
            return False
        with self._open() as f:
            return "grouping" not in f.attrs

    @property
    def index(self) -> dict[str, tuple[int, str]]:
        if self._index is None:
            self._index = self._scan() if (self.path.exists() or self._txn is not None) else {}
        return self._index

    def groups(self) -> list[str]:
        return sorted(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def num_conformers(self) -> int:
        return sum(n for n, _ in self.index.values())

    def _read_group(self, f: h5py.File, group: str, keys: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
        if group not in self.index:
            raise InputError(f"{self.path}: no group {group!r}")
        element = self.index[group][1]
        g = f[group]
        wanted = g.keys() if keys is None else [k for k in keys if k in g]
        out = {k: _decode(g[k][()]) for k in wanted if isinstance(g[k], h5py.Dataset) and k not in ELEMENT_KEYS}
        species = _as_numbers(g[element][()], f"{self.path}:{group}")
        if species.ndim == 2:
            if species.shape[0] and not (species == species[0]).all():
                raise InputError(
                    f"{self.path}: group {group!r} mixes molecules (atom order differs between conformers); "
                    "regroup it with one molecule per group"
                )
            species = species[0] if species.shape[0] else np.zeros(0, dtype=np.int64)
        out["species"] = species
        _check_shapes(f"{self.path}: group {group!r}", out)
        return out

    def species(self, group: str, f: Optional[h5py.File] = None) -> np.ndarray:
        """The atomic numbers (N,) of one group, from its first conformer only (cached)."""
        if group not in self._species:
            if group not in self.index:
                raise InputError(f"{self.path}: no group {group!r}")
            if f is None:
                with self._open() as f:
                    return self.species(group, f)
            dset = f[group][self.index[group][1]]
            row = dset[0] if dset.ndim == 2 and dset.shape[0] else dset[()]
            self._species[group] = _as_numbers(row, f"{self.path}:{group}").ravel()
        return self._species[group]

    def group_for(self, numbers) -> str:
        """The group holding this atom sequence, else a free Hill-formula name (C2H6O, C2H6O_2, ...)."""
        key = _as_numbers(numbers, str(self.path)).ravel()
        base = hill_formula(key)
        names = (base if k == 1 else f"{base}_{k}" for k in range(1, len(self.index) + 2))
        taken = [name for name in itertools.takewhile(lambda n: n in self.index, names)]
        if any(name not in self._species for name in taken):
            with self._open() as f:
                for name in taken:
                    self.species(name, f)
        return next((name for name in taken if np.array_equal(self._species[name], key)),
                    base if not taken else f"{base}_{len(taken) + 1}")

    def read(self, group: str, keys: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
        """The datasets of one group (all, or those of ``keys`` that it has); ``species`` as (N,)
        atomic numbers, strings as str."""
        with self._open() as f:
            return self._read_group(f, group, keys)

    def __iter__(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        return self.iter_groups()

    def iter_groups(self, keys: Optional[Sequence[str]] = None) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """``(group, data)`` for every group, as :meth:`read` gives them (all datasets, or ``keys``)."""
        if not self.index:  # also a store not created yet
            return
        with self._open() as f:
            for group in self.groups():
                yield group, self._read_group(f, group, keys)

    def _known_keys(self, group: str) -> set:
        """Structure keys of a group's conformers, read incrementally (only rows not seen yet)."""
        seen, keys = self._keys.get(group, (0, set()))
        count = self.index[group][0] if group in self.index else 0
        if count > seen:
            with self._open() as f:
                g = f[group]
                rows = slice(seen, count)
                stored = _decode(g["structure_key"][rows]) if "structure_key" in g else np.full(count - seen, "")
                missing = np.flatnonzero(stored == "")
                if missing.size:  # written without keys (other tools, older files): compute them
                    extra = {k: g[k][rows][missing] for k in ("charge", "multiplicity") if k in g}
                    stored[missing] = structure_keys(self.species(group), g["coordinates"][rows][missing], **extra)
            keys = keys | set(stored.tolist())
            self._keys[group] = (count, keys)
        return keys

    # ---- writing ------------------------------------------------------------------------
    @contextmanager
    def transaction(self):
        """Group appends into one atomic commit (durable when the block exits)."""
        if self.mode != "a":
            raise InputError(f"{self.path}: opened read-only")
        if self._txn is not None:
            yield self
            return
        try:
            self._copies.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot write there ({exc.strerror})") from None
        with _writer_lock(self._copies.lock, self.path):
            self._journal, self._written = [], False
            try:
                self._begin()
                yield self
                self._commit()
            except BaseException:
                self._abort()
                raise
            finally:
                self._txn = None

    def _begin(self) -> None:
        """Open the shadow for writing, holding the last commit (replayed or copied)."""
        copies = self._copies
        copies.finish_switch()
        journal = copies.read_journal() if self.path.exists() and not copies.dirty.exists() else None
        copies.mark_dirty()
        f = None
        if journal is not None:
            with journal:
                f = self._replayed(journal)
        if f is None:
            f = self._rebuild()
            self._index = None
        self._txn = f
        if self._index is None:
            self._scan()
        self._check_kind(f)
        if self.kind is not None and KIND_ATTR not in f.attrs:
            self._written = True
            f.attrs[KIND_ATTR] = self.kind

    def _abort(self) -> None:
        """Close the shadow; it stays marked dirty (to be rebuilt) only if this transaction wrote to it."""
        if self._txn is None:
            self._index = None
            return
        self._txn.close()
        if self._written:
            self._index = None
        else:  # the shadow holds the file's commit, as replayed
            self._copies.dirty.unlink(missing_ok=True)

    def _replayed(self, journal) -> Optional[h5py.File]:
        """The shadow brought to the file's commit by replaying the journal, or None where it cannot be
        (the file changed since, the shadow is behind or locked by a reader)."""
        copies = self._copies
        if not (copies.shadow.exists() and np.array_equal(journal["fingerprint"], copies.fingerprint(self.path))):
            return None
        try:
            f = h5py.File(copies.shadow, "r+")
        except OSError:  # a reader still has this old copy open (HDF5 file lock), or it is damaged
            return None
        generation, behind = int(journal["generation"]), int(f.attrs.get(GENERATION_ATTR, 0))
        if behind not in (generation - 1, generation):
            f.close()
            return None
        if self._generation not in (behind, generation):
            self._index = None  # our index is older than the shadow: read it afresh
        if behind < generation:
            try:
                for i, group in enumerate(journal["groups"]):
                    prefix = f"{i}/"
                    columns = {k[len(prefix):]: journal[k] for k in journal.files if k.startswith(prefix)}
                    self._write(f, str(group), columns)
                f.attrs[GENERATION_ATTR] = generation
            except BaseException:
                f.close()
                raise
        if self._index is not None:
            self._generation = generation
        return f

    def _rebuild(self) -> h5py.File:
        """A fresh shadow: a copy of the file (a new inode; readers of the old one keep theirs)."""
        copies = self._copies
        tmp = copies.dir / "shadow.tmp"
        if self.path.exists():
            try:
                with h5py.File(self.path, "r") as f:
                    if "grouping" not in f.attrs and len(f):
                        raise InputError(f"{self.path}: legacy-layout file is read-only; merge it into a new file")
            except OSError as exc:
                raise InputError(f"{self.path}: not a readable HDF5 file ({_first_line(exc)})") from None
            shutil.copyfile(self.path, tmp)
        else:
            tmp.unlink(missing_ok=True)
            with h5py.File(tmp, "w") as f:
                f.attrs["grouping"] = "by_formula"
        os.replace(tmp, copies.shadow)
        f = h5py.File(copies.shadow, "r+")
        if "grouping" not in f.attrs:
            f.attrs["grouping"] = "by_formula"
        return f

    def _commit(self) -> None:
        if not self._written and self.path.exists():
            self._abort()  # nothing to commit
            return
        f, copies = self._txn, self._copies
        generation = int(f.attrs.get(GENERATION_ATTR, 0)) + 1
        f.attrs[GENERATION_ATTR] = generation
        f.close()
        _fsync(copies.shadow)
        copies.write_journal(generation, self._journal)
        copies.switch()
        self._generation = generation

    def append(self, group: Optional[str], species, coordinates, energies, forces=None, **properties) -> int:
        """Append C conformers of one molecule; durable when it returns. Returns how many were new.

        ``group`` names the molecule's group (None: :meth:`group_for`, chosen under the lock);
        ``species`` (N,) atomic numbers or symbols; ``coordinates`` (C, N, 3) Angstrom;
        ``energies`` (C,) Hartree; ``forces`` (C, N, 3) Hartree/Angstrom; ``properties``
        per-conformer arrays (leading dim C) or scalars broadcast to all C conformers.
        Conformers whose :func:`structure_keys` the group already holds are skipped.
        """
        if group is not None and (not group or "/" in group or group.startswith("_")):
            raise InputError(f"invalid group name {group!r} (no '/', not starting with '_')")
        numbers = _as_numbers(species, group or "species").ravel()
        label = group or hill_formula(numbers)
        coords = np.asarray(coordinates, dtype=np.float64)
        if coords.ndim == 2:
            coords = coords[None]
        n_conf, n_atoms = coords.shape[0], numbers.shape[0]
        if coords.shape[1:] != (n_atoms, 3):
            raise InputError(f"{label}: coordinates {coords.shape} do not match {n_atoms} atoms")
        energies = np.asarray(energies, dtype=np.float64).reshape(-1)
        if energies.shape != (n_conf,):
            raise InputError(f"{label}: {energies.shape[0]} energies for {n_conf} conformers")
        if not (np.isfinite(coords).all() and np.isfinite(energies).all()):
            raise InputError(f"{label}: coordinates or energies contain NaN or infinite values")
        columns = {"species": np.tile(numbers, (n_conf, 1)), "coordinates": coords, "energies": energies}
        if forces is not None:
            columns["forces"] = np.asarray(forces, dtype=np.float64).reshape(coords.shape)
        for key, default in PROVENANCE.items():
            properties.setdefault(key, default)
        for key, value in properties.items():
            if key in columns or key in ELEMENT_KEYS:
                raise InputError(f"{label}: property name {key!r} is reserved")
            columns[key] = _column(value, n_conf, key, label)
        if "structure_key" not in columns:
            identity = {k: columns[k] for k in ("charge", "multiplicity") if k in columns}
            columns["structure_key"] = np.array(structure_keys(numbers, coords, **identity))
        with self.transaction():
            if self.kind == "labels":
                problems = label_problems(numbers, coords, energies, columns.get("forces"))
                if problems:
                    raise InputError(f"{self.path}: {label}: {problems[0]}")
            group = self.group_for(numbers) if group is None else group
            known = self._known_keys(group)
            _, first = np.unique(columns["structure_key"], return_index=True)
            new = np.array([i for i in sorted(first) if columns["structure_key"][i] not in known], dtype=np.int64)
            if new.size == 0:
                return 0
            if new.size < n_conf:
                columns = {k: v[new] for k, v in columns.items()}
            self._written = True
            self._write(self._txn, group, columns)
            self._journal.append((group, columns))
            self._keys[group] = (self.index[group][0], known | set(columns["structure_key"]))
        return int(new.size)

    def _write(self, f: h5py.File, group: str, columns: dict[str, np.ndarray]) -> None:
        n_conf, n_atoms = columns["coordinates"].shape[:2]
        # a group to take the schema from (found through the index: iterating a big root group is slower)
        existing = next((n for n in (self._index or f) if n not in _SKIP and n in f), None)
        if existing is not None:
            ref = f[existing]
            schema = set(ref.keys())
            ref_atoms = ref["coordinates"].shape[1]
            new_keys = set(columns) - schema
            for name in [n for n in f if n not in _SKIP] if new_keys else ():  # back-fill existing groups
                g = f[name]
                for key in new_keys:
                    arr = columns[key]
                    shape = (g["coordinates"].shape[0],) + self._trailing(key, arr.shape[1:], n_atoms, g)
                    g.create_dataset(
                        key, data=np.full(shape, _default_like(arr.dtype), dtype=_write_dtype(arr)),
                        maxshape=(None,) + shape[1:],
                    )
            for key in schema - set(columns):  # a property this append lacks: unknown values
                dset = ref[key]
                shape = (n_conf,) + self._trailing(key, dset.shape[1:], ref_atoms, None, n_atoms)
                kind = np.dtype("U1") if h5py.check_string_dtype(dset.dtype) else dset.dtype
                columns = {**columns, key: np.full(shape, _default_like(kind), dtype=kind)}
        if group in f:
            g = f[group]
            if not np.array_equal(g["species"][0], columns["species"][0]):
                raise InputError(f"group {group!r} already holds a different molecule (species differ)")
            for key, arr in columns.items():
                dset = g[key]
                if dset.shape[1:] != arr.shape[1:]:
                    raise InputError(f"{group}: property {key!r} shape {arr.shape[1:]} != stored {dset.shape[1:]}")
                start = dset.shape[0]
                dset.resize(start + n_conf, axis=0)
                dset[start:] = arr.astype(object) if arr.dtype.kind == "U" else arr
        else:
            g = f.create_group(group)
            for key, arr in columns.items():
                data = arr.astype(object) if arr.dtype.kind == "U" else arr
                g.create_dataset(key, data=data, dtype=_write_dtype(arr), maxshape=(None,) + arr.shape[1:])
        if self._index is not None:
            self._index[group] = (int(g["coordinates"].shape[0]), "species")

    @staticmethod
    def _trailing(key, trailing: tuple, ref_atoms: int, group=None, n_atoms: Optional[int] = None) -> tuple:
        """Trailing shape of ``key`` for a group with a different atom count."""
        if key in ATOMIC_KEYS and trailing:
            n = group["coordinates"].shape[1] if group is not None else n_atoms
            return (n,) + tuple(trailing[1:])
        return tuple(trailing)


def open_output(path: str | Path, kind: Optional[str] = None) -> DatasetStore:
    """A store to append to, checked before any work: its folder is writable, an existing file
    is a readable store of ``kind``. Raises InputError with the reason."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an HDF5 file")
    folder = _Copies(path).dir
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # probe where the hidden folder lives (creating and removing the folder itself would race
        # with another writer of the same store)
        probe = (folder if folder.is_dir() else path.parent) / f".probe.{os.getpid()}.{threading.get_ident()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    return DatasetStore(path, "a", kind=kind)


# ---- whole-file operations ------------------------------------------------------------
def flat_name(group: str) -> str:
    """A writable group name for a (possibly nested, legacy) group path."""
    return group.strip("/").replace("/", "_")


def _conformer_columns(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Split a read group into append() arguments: per-conformer columns only."""
    n_conf = data["coordinates"].shape[0]
    out = {}
    for key, arr in data.items():
        if key in ("species", "coordinates", "energies", "forces"):
            continue
        if key in LEGACY_NONBATCH_KEYS or arr.ndim == 0 or arr.shape[0] != n_conf:
            continue
        out[key] = arr
    if "method" not in out and "lot" in data and data["lot"].size:
        out["method"] = str(data["lot"].ravel()[0])
    return out


def stored_forces(forces, legacy: bool) -> np.ndarray:
    """Forces (-dE/dx, Ha/A, float64) from a store's ``forces``: legacy-layout files hold the gradient."""
    forces = np.asarray(forces, dtype=np.float64)
    return STORED_FORCES_TO_FORCES * forces if legacy else forces


def _append_read(dest: DatasetStore, name: str, data: dict[str, np.ndarray], legacy: bool = False) -> int:
    """Append a group read from another store; legacy (COMP6 v1) 'forces' are gradients and get flipped."""
    if "energies" not in data:
        raise InputError(f"group {name!r} has no 'energies'")
    forces = data.get("forces")
    if forces is not None and legacy:
        forces = stored_forces(forces, True)
    return dest.append(name, data["species"], data["coordinates"], data["energies"], forces,
                       **_conformer_columns(data))


def _common_kind(stores: Sequence[DatasetStore]) -> Optional[str]:
    kinds = {s.stored_kind for s in stores if s.stored_kind is not None}
    if len(kinds) > 1:
        raise InputError("cannot mix reference labels and sampled candidates: "
                         + ", ".join(f"{s.path} holds {s.stored_kind}" for s in stores if s.stored_kind))
    return kinds.pop() if kinds else None


def merge(sources: Sequence[str | Path], dest: str | Path) -> DatasetStore:
    """Append every molecule of ``sources`` to ``dest`` in one commit.

    Groups of the same name and molecule are concatenated; a same-named group holding a
    different molecule is renamed ``NAME_2``, ``NAME_3``... Conformers ``dest`` already holds
    are skipped. Legacy-layout (COMP6 v1) inputs store the energy gradient as "forces" (see
    :mod:`anif.datasets.comp6`); it is written as forces. Labels and candidates do not mix.
    """
    for src in sources:
        if Path(src).resolve() == Path(dest).resolve():
            raise InputError(f"{src}: cannot merge a file into itself")
    inputs = [DatasetStore(src, "r") for src in sources]
    out = open_output(dest, _common_kind(inputs))
    with out.transaction():
        for source in inputs:
            for group, data in source:
                name, k = flat_name(group), 1
                while name in out.index and not np.array_equal(out.species(name), data["species"]):
                    k += 1
                    name = f"{flat_name(group)}_{k}"
                _append_read(out, name, data, source.legacy)
    return out


def split(source: str | Path, outputs: Sequence[str | Path], fractions: Sequence[float],
          seed: int = SPLIT_SEED) -> list[int]:
    """Split by molecule: whole groups go to ``outputs`` in proportion ``fractions`` of conformers.

    Returns the number of conformers written to each output.
    """
    if len(outputs) != len(fractions) or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InputError("split needs one non-negative fraction per output")
    resolved = [Path(p).resolve() for p in outputs]
    for i, path in enumerate(resolved):
        if path in resolved[:i] or path == Path(source).resolve():
            raise InputError(f"{outputs[i]}: given twice (each --out must be a different new file)")
    store = DatasetStore(source, "r")
    for path in outputs:
        if Path(path).exists():
            raise InputError(f"{path}: output already exists")
    stores = [open_output(p, store.stored_kind) for p in outputs]
    groups, legacy = store.groups(), store.legacy
    order = np.random.default_rng(seed).permutation(len(groups))
    target = np.cumsum(np.asarray(fractions, dtype=float) / sum(fractions)) * store.num_conformers()
    counts = [0] * len(outputs)
    done = 0
    with _all_transactions(stores):
        for i in order:
            group = groups[i]
            n = store.index[group][0]
            # the first output whose share is not yet filled by the middle of this molecule
            k = int(min(np.searchsorted(target, done + n / 2.0), len(outputs) - 1))
            counts[k] += _append_read(stores[k], flat_name(group), store.read(group), legacy)
            done += n
    return counts


@contextmanager
def _all_transactions(stores: Sequence[DatasetStore]):
    if not stores:
        yield
        return
    with stores[0].transaction(), _all_transactions(stores[1:]):
        yield


def summary(path: str | Path) -> dict:
    """Molecules, conformers, atoms per molecule, energy range, elements, provenance counts, and
    ``warnings``: labels that cannot be right in ANI units (:mod:`anif.plausibility`)."""
    store = DatasetStore(path, "r")
    atoms, energies, elements, props, warnings = [], [], {}, set(), []
    provenance: dict[str, dict[str, int]] = {k: {} for k in ("source", "sampler", "al_cycle", "method")}
    for group, data in store:
        n = int(data["species"].shape[0])
        c = int(data["coordinates"].shape[0])
        atoms.append(n)
        props.update(data)
        if "energies" in data and data["energies"].size:
            energies.append(data["energies"])
            warnings += [f"{group}: {p}" for p in label_problems(data["species"], data["coordinates"],
                                                                 data["energies"], data.get("forces"))]
        for z in data["species"]:
            elements[symbol(z)] = elements.get(symbol(z), 0) + c
        for key, counts in provenance.items():
            if key in data and data[key].shape[:1] == (c,):
                for v in data[key].ravel():
                    counts[str(v)] = counts.get(str(v), 0) + 1
    e = np.concatenate(energies) if energies else np.zeros(0)
    return {
        "path": str(path),
        "kind": store.stored_kind,
        "molecules": len(store),
        "conformers": store.num_conformers(),
        "atoms_min": min(atoms, default=0),
        "atoms_mean": float(np.mean(atoms)) if atoms else 0.0,
        "atoms_max": max(atoms, default=0),
        "energy_min_hartree": float(np.nanmin(e)) if e.size else None,
        "energy_max_hartree": float(np.nanmax(e)) if e.size else None,
        "elements": dict(sorted(elements.items(), key=lambda kv: atomic_number(kv[0]))),
        "properties": sorted(props),
        "provenance": {k: v for k, v in provenance.items() if v},
        "warnings": warnings,
    }


#: File suffixes read as ANI-format HDF5 stores.
HDF5_SUFFIXES = (".h5", ".hdf5")


def read_any(path: str | Path, carried: Sequence[str] = ()) -> list[tuple[Structure, dict]]:
    """Every structure of an XYZ, SDF, PDB file or an ANI-format HDF5 store (each conformer, named
    ``group/index``), with the per-conformer columns named in ``carried`` (HDF5 only)."""
    path = Path(path)
    if path.suffix.lower() not in HDF5_SUFFIXES:
        return [(s, {}) for s in read_structures(path)]
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    out = []
    for group, data in DatasetStore(path, "r"):
        coords = data["coordinates"]
        for c in range(coords.shape[0]):
            extra = {k: data[k][c] for k in carried if k in data and data[k].shape[:1] == coords.shape[:1]}
            out.append((Structure(data["species"], coords[c], name=f"{group}/{c}"), extra))
    if not out:
        raise InputError(f"{path}: contains no structures")
    return out
