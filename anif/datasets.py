"""ANI-format HDF5 datasets: a crash-safe store, merge, split by molecule, and summary.

Layout written (readable and appendable by ``torchani.datasets.ANIDataset``, torchani 2.9):

- root attribute ``grouping = "by_formula"`` (torchani's "new" format);
- one flat HDF5 group per molecule (a single formula per group, as ``by_formula`` requires;
  names may not contain ``/``), every group with the same set of datasets;
- per-conformer datasets, leading dimension C, resizable along it:
  ``species`` (C, N) int64 atomic numbers, ``coordinates`` (C, N, 3) float64 Angstrom,
  ``energies`` (C,) float64 Hartree, ``forces`` (C, N, 3) float64 Hartree/Angstrom (NaN where
  a conformer has none), and the provenance columns of :data:`PROVENANCE` plus any extra
  property. Strings are stored as variable-length UTF-8; read them with torchani's
  ``get_numpy_conformers`` (``get_conformers`` turns everything into tensors, so pass it
  ``properties=`` without the string columns).

Read-only, the store also understands the legacy layout of the ANI-1x and COMP6 v1 files
(nested groups, ``species`` (N,) as element symbols or ``atomic_numbers`` ints,
non-batch ``lot``). :meth:`DatasetStore.read` always returns ``species`` as (N,) atomic numbers.

Durability: an append works on a private copy of the file (``.NAME.PID.tmp`` in the same
folder), which is flushed, fsync'ed and atomically renamed over the original with
``os.replace``; a lock file serialises writers. A kill at any moment therefore leaves either
the old file or the new one, never a half-written HDF5. ``transaction()`` groups many appends
into one copy.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import h5py
import numpy as np
import typer

from .errors import InputError
from .structures import atomic_number, hill_formula, symbol

#: Per-conformer provenance columns every written file carries, with their "unknown" values.
PROVENANCE = {
    "source": "",  # where the molecule came from (e.g. "gdb11", "chembl", "s66x8")
    "sampler": "",  # how the conformer was made (e.g. "dnms", "rts", "dimer", "optimized")
    "al_cycle": -1,  # active-learning cycle that selected it
    "rho_kcal_mol": math.nan,  # QBC rho at selection, kcal/mol
    "method": "",  # reference method, e.g. "wb97x/6-31g(d)"
}
#: ``method`` of sampled candidates: their energies are the sampling ensemble's mean, a placeholder
#: until ``anif label`` computes the reference (``anif train`` refuses them).
CANDIDATE_METHOD = "candidate: ensemble mean, not a label"
ELEMENT_KEYS = ("species", "numbers", "atomic_numbers")
#: Keys that hold one value per atom (second axis N) in written files.
ATOMIC_KEYS = ("species", "coordinates", "forces")
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


class DatasetStore:
    """An ANI-format HDF5 file of molecules (groups) and their conformers.

    ``mode="r"`` reads (ANI-1x/COMP6 legacy files too); ``mode="a"`` creates or appends.
    """

    def __init__(self, path: str | Path, mode: str = "a"):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self._index: Optional[dict[str, tuple[int, str]]] = None
        self._txn: Optional[h5py.File] = None
        if self.path.exists():
            self._scan()
        elif mode == "r":
            raise InputError(f"{self.path}: no such dataset file")

    # ---- reading ------------------------------------------------------------------------
    @contextmanager
    def _open(self) -> Iterator[h5py.File]:
        if self._txn is not None:
            yield self._txn
            return
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(f"{self.path}: not a readable HDF5 file ({exc})") from None
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
        self._index = dict(sorted(index.items()))
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
        return list(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def num_conformers(self) -> int:
        return sum(n for n, _ in self.index.values())

    def _read_group(self, f: h5py.File, group: str) -> dict[str, np.ndarray]:
        if group not in self.index:
            raise InputError(f"{self.path}: no group {group!r}")
        element = self.index[group][1]
        g = f[group]
        out = {k: _decode(v[()]) for k, v in g.items() if isinstance(v, h5py.Dataset) and k not in ELEMENT_KEYS}
        species = _as_numbers(g[element][()], f"{self.path}:{group}")
        if species.ndim == 2:
            if species.shape[0] and not (species == species[0]).all():
                raise InputError(
                    f"{self.path}: group {group!r} mixes molecules (atom order differs between conformers); "
                    "regroup it with one molecule per group"
                )
            species = species[0] if species.shape[0] else np.zeros(0, dtype=np.int64)
        out["species"] = species
        return out

    def group_for(self, numbers) -> str:
        """The group holding this atom sequence, else a free Hill-formula name (C2H6O, C2H6O_2, ...)."""
        key = _as_numbers(numbers, str(self.path))
        base, k = hill_formula(key), 1
        while True:
            name = base if k == 1 else f"{base}_{k}"
            if name not in self.index or np.array_equal(self.read(name)["species"], key):
                return name
            k += 1

    def read(self, group: str) -> dict[str, np.ndarray]:
        """All datasets of one group; ``species`` as (N,) atomic numbers, strings as str."""
        with self._open() as f:
            return self._read_group(f, group)

    def __iter__(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        with self._open() as f:
            for group in self.groups():
                yield group, self._read_group(f, group)

    # ---- writing ------------------------------------------------------------------------
    @contextmanager
    def transaction(self):
        """Group appends into one atomic commit (durable when the block exits)."""
        if self.mode != "a":
            raise InputError(f"{self.path}: opened read-only")
        if self._txn is not None:
            yield self
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.parent / f".{self.path.name}.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                stale.unlink(missing_ok=True)  # left by a killed writer; we hold the lock
            tmp = self.path.parent / f".{self.path.name}.{os.getpid()}.tmp"
            if self.path.exists():
                self._scan()  # refuse to build on a file we cannot read
                shutil.copyfile(self.path, tmp)
            else:
                self._index = {}
            committed = False
            try:
                with h5py.File(tmp, "a") as f:
                    if "grouping" not in f.attrs:
                        if len(f) and self.path.exists():
                            raise InputError(f"{self.path}: legacy-layout file is read-only; merge it into a new file")
                        f.attrs["grouping"] = "by_formula"
                    self._txn = f
                    yield self
                    self._txn = None
                _fsync(tmp)
                os.replace(tmp, self.path)
                _fsync(self.path.parent)
                committed = True
            finally:
                self._txn = None
                if not committed:
                    self._index = None
                tmp.unlink(missing_ok=True)

    def append(self, group: str, species, coordinates, energies, forces=None, **properties) -> None:
        """Append C conformers of one molecule; durable when it returns.

        ``species`` (N,) atomic numbers or symbols; ``coordinates`` (C, N, 3) Angstrom;
        ``energies`` (C,) Hartree; ``forces`` (C, N, 3) Hartree/Angstrom; ``properties``
        per-conformer arrays (leading dim C) or scalars broadcast to all C conformers.
        """
        if not group or "/" in group or group.startswith("_"):
            raise InputError(f"invalid group name {group!r} (no '/', not starting with '_')")
        numbers = _as_numbers(species, group).ravel()
        coords = np.asarray(coordinates, dtype=np.float64)
        if coords.ndim == 2:
            coords = coords[None]
        n_conf, n_atoms = coords.shape[0], numbers.shape[0]
        if coords.shape[1:] != (n_atoms, 3):
            raise InputError(f"{group}: coordinates {coords.shape} do not match {n_atoms} atoms")
        energies = np.asarray(energies, dtype=np.float64).reshape(-1)
        if energies.shape != (n_conf,):
            raise InputError(f"{group}: {energies.shape[0]} energies for {n_conf} conformers")
        if not (np.isfinite(coords).all() and np.isfinite(energies).all()):
            raise InputError(f"{group}: coordinates or energies contain NaN or infinite values")
        columns = {
            "species": np.tile(numbers, (n_conf, 1)),
            "coordinates": coords,
            "energies": energies,
        }
        if forces is not None:
            f_arr = np.asarray(forces, dtype=np.float64).reshape(coords.shape)
            columns["forces"] = f_arr
        for key, default in PROVENANCE.items():
            properties.setdefault(key, default)
        for key, value in properties.items():
            if key in columns or key in ELEMENT_KEYS:
                raise InputError(f"{group}: property name {key!r} is reserved")
            columns[key] = _column(value, n_conf, key, group)
        with self.transaction():
            self._write(self._txn, group, columns)

    def _write(self, f: h5py.File, group: str, columns: dict[str, np.ndarray]) -> None:
        n_conf, n_atoms = columns["coordinates"].shape[:2]
        existing = [name for name in f if name not in _SKIP]
        if existing:
            ref = f[existing[0]]
            schema = {k: v for k, v in ref.items()}
            ref_atoms = ref["coordinates"].shape[1]
            for key in set(columns) - set(schema):  # a new property: back-fill existing groups
                arr = columns[key]
                for name in existing:
                    g = f[name]
                    shape = (g["coordinates"].shape[0],) + self._trailing(key, arr.shape[1:], n_atoms, g)
                    g.create_dataset(
                        key, data=np.full(shape, _default_like(arr.dtype), dtype=_write_dtype(arr)),
                        maxshape=(None,) + shape[1:],
                    )
            for key in set(schema) - set(columns):  # a property this append lacks: unknown values
                dset = schema[key]
                shape = (n_conf,) + self._trailing(key, dset.shape[1:], ref_atoms, None, n_atoms)
                kind = np.dtype("U1") if h5py.check_string_dtype(dset.dtype) else dset.dtype
                columns[key] = np.full(shape, _default_like(kind), dtype=kind)
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
        self._index[group] = (int(g["coordinates"].shape[0]), "species")
        self._index = dict(sorted(self._index.items()))

    @staticmethod
    def _trailing(key, trailing: tuple, ref_atoms: int, group=None, n_atoms: Optional[int] = None) -> tuple:
        """Trailing shape of ``key`` for a group with a different atom count."""
        if key in ATOMIC_KEYS and trailing:
            n = group["coordinates"].shape[1] if group is not None else n_atoms
            return (n,) + tuple(trailing[1:])
        return tuple(trailing)


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


def _append_read(dest: DatasetStore, name: str, data: dict[str, np.ndarray], legacy: bool = False) -> None:
    """Append a group read from another store; legacy (COMP6 v1) 'forces' are gradients and get flipped."""
    from .comp6 import STORED_FORCES_TO_FORCES

    if "energies" not in data:
        raise InputError(f"group {name!r} has no 'energies'")
    forces = data.get("forces")
    if forces is not None and legacy:
        forces = STORED_FORCES_TO_FORCES * np.asarray(forces, dtype=np.float64)
    dest.append(name, data["species"], data["coordinates"], data["energies"], forces, **_conformer_columns(data))


def merge(sources: Sequence[str | Path], dest: str | Path) -> DatasetStore:
    """Append every molecule of ``sources`` to ``dest`` in one commit.

    Groups of the same name and molecule are concatenated; a same-named group holding a
    different molecule is renamed ``NAME_2``, ``NAME_3``... Legacy-layout (COMP6 v1) inputs
    store the energy gradient as "forces" (see :mod:`anif.comp6`); it is written as forces.
    """
    out = DatasetStore(dest, "a")
    with out.transaction():
        for src in sources:
            source = DatasetStore(src, "r")
            for group, data in source:
                name, k = flat_name(group), 1
                while name in out.index and not np.array_equal(out.read(name)["species"], data["species"]):
                    k += 1
                    name = f"{flat_name(group)}_{k}"
                _append_read(out, name, data, source.legacy)
    return out


def split(source: str | Path, outputs: Sequence[str | Path], fractions: Sequence[float], seed: int = 0) -> list[int]:
    """Split by molecule: whole groups go to ``outputs`` in proportion ``fractions`` of conformers.

    Returns the number of conformers written to each output.
    """
    if len(outputs) != len(fractions) or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise InputError("split needs one non-negative fraction per output")
    store = DatasetStore(source, "r")
    for path in outputs:
        if Path(path).exists():
            raise InputError(f"{path}: output already exists")
    groups, legacy = store.groups(), store.legacy
    order = np.random.default_rng(seed).permutation(len(groups))
    target = np.cumsum(np.asarray(fractions, dtype=float) / sum(fractions)) * store.num_conformers()
    stores = [DatasetStore(p, "a") for p in outputs]
    counts = [0] * len(outputs)
    done = 0
    with _all_transactions(stores):
        for i in order:
            group = groups[i]
            n = store.index[group][0]
            # the first output whose share is not yet filled by the middle of this molecule
            k = int(min(np.searchsorted(target, done + n / 2.0), len(outputs) - 1))
            _append_read(stores[k], flat_name(group), store.read(group), legacy)
            counts[k] += n
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
    """Molecules, conformers, atoms per molecule, energy range, elements, provenance counts."""
    store = DatasetStore(path, "r")
    atoms, energies, elements, props = [], [], {}, set()
    provenance: dict[str, dict[str, int]] = {k: {} for k in ("source", "sampler", "al_cycle", "method")}
    for _, data in store:
        n = int(data["species"].shape[0])
        c = int(data["coordinates"].shape[0])
        atoms.append(n)
        props.update(data)
        if "energies" in data and data["energies"].size:
            energies.append(data["energies"])
        for z in data["species"]:
            elements[symbol(z)] = elements.get(symbol(z), 0) + c
        for key, counts in provenance.items():
            if key in data and data[key].shape[:1] == (c,):
                for v in data[key].ravel():
                    counts[str(v)] = counts.get(str(v), 0) + 1
    e = np.concatenate(energies) if energies else np.zeros(0)
    return {
        "path": str(path),
        "molecules": len(store),
        "conformers": store.num_conformers(),
        "atoms_min": min(atoms, default=0),
        "atoms_mean": float(np.mean(atoms)) if atoms else 0.0,
        "atoms_max": max(atoms, default=0),
        "energy_min_hartree": float(e.min()) if e.size else None,
        "energy_max_hartree": float(e.max()) if e.size else None,
        "elements": dict(sorted(elements.items(), key=lambda kv: atomic_number(kv[0]))),
        "properties": sorted(props),
        "provenance": {k: v for k, v in provenance.items() if v},
    }


# ---- `anif data` ----------------------------------------------------------------------
data_app = typer.Typer(help="ANI-format HDF5 datasets: summary, merge, split.", no_args_is_help=True)


@data_app.command("info")
def info_command(
    path: Path = typer.Argument(..., help="ANI-format .h5 file"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the summary as JSON here"),
) -> None:
    """Molecules, conformers, atoms per molecule, energy range, elements, provenance."""
    from rich.console import Console
    from rich.table import Table

    s = summary(path)
    table = Table(title=str(path), show_header=False)
    table.add_row("molecules", f"{s['molecules']:,}")
    table.add_row("conformers", f"{s['conformers']:,}")
    table.add_row("atoms per molecule", f"{s['atoms_min']} - {s['atoms_max']} (mean {s['atoms_mean']:.1f})")
    if s["energy_min_hartree"] is not None:
        table.add_row("energies (Ha)", f"{s['energy_min_hartree']:.6f} .. {s['energy_max_hartree']:.6f}")
    table.add_row("elements (atoms in all conformers)", ", ".join(f"{k} {v:,}" for k, v in s["elements"].items()))
    table.add_row("properties", ", ".join(s["properties"]))
    for key, counts in s["provenance"].items():
        shown = sorted(counts.items(), key=lambda kv: -kv[1])[:8]
        table.add_row(key, ", ".join(f"{k or '(unset)'}: {v:,}" for k, v in shown) + (" ..." if len(counts) > 8 else ""))
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(s, indent=2))


@data_app.command("merge")
def merge_command(
    output: Path = typer.Argument(..., help="destination .h5 (created or appended to)"),
    inputs: list[Path] = typer.Argument(..., help="ANI-format .h5 files to merge"),
) -> None:
    """Append the molecules of INPUTS to OUTPUT (one atomic commit)."""
    for p in inputs:
        if p.resolve() == output.resolve():
            raise InputError(f"{p}: cannot merge a file into itself")
    store = merge(inputs, output)
    print(f"{output}: {len(store)} molecules, {store.num_conformers()} conformers")


@data_app.command("split")
def split_command(
    path: Path = typer.Argument(..., help="ANI-format .h5 file"),
    out: list[Path] = typer.Option(..., "--out", help="output .h5; repeat once per part"),
    fraction: list[float] = typer.Option(..., "--fraction", help="share of conformers per --out, in order"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Split by molecule: whole molecules go to each --out in proportion to --fraction."""
    counts = split(path, out, fraction, seed)
    for p, n in zip(out, counts):
        print(f"{p}: {n} conformers")
