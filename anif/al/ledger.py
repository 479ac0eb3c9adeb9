"""The campaign ledger: one SQLite file, the transactional record of everything a campaign did.

Tables (arrays are stored as raw little-endian bytes: numbers int64 (N,), coordinates and
forces float64 (N, 3) in Angstrom and Hartree/Angstrom, Hessians float64 (3N, 3N) in Ha/A^2):

- ``meta``: the config record (settings + input digests), the stop reason.
- ``cycles``: one row per cycle: kind (bootstrap / configurational / conformational), stage,
  rho_hat used, wall time spent, notes.
- ``molecules``: the conformer sampling set (role ``train``) and test-set molecules
  (``test:NAME``): start geometry, then the oracle's minimum, energy and Hessian.
- ``search``: every molecule the configurational search met: scored (rho, failing or not) or
  skipped with the reason.
- ``items``: sampler work items done (cycle, sampler, item) so a resumed stage runs only the rest.
- ``candidates``: every structure a sampler returned, its rho, and whether it was selected.
- ``labels``: one row per unique structure (its key is the primary key, so no structure is ever
  labelled twice): pending, ok (energy, forces) or failed (reason), with the label's provenance
  (:class:`anif.labeling.record.Label`: method, program, basis, SCF rung and iterations, host, ...).
- ``reduction``: the rounds of the bootstrap's dataset reduction.
- ``models``, ``metrics``: each cycle's model and its errors on every test set (E, dE, F as COMP6
  defines them; how well rho ranks the errors: Spearman correlation of rho with |error| / sqrt(N),
  and the fraction of structures with |error| / sqrt(N) above the paper's 1.5 kcal/mol that
  rho > rho_hat catches); ``test_errors`` each test structure's rho and error (kcal/mol);
  ``baselines`` the same metrics for the starting ensemble and ANI-1x.
- ``stage_times``: wall seconds spent in each stage of each cycle (summed over resumes), so a
  report shows where the time goes (sampling, labelling, training, evaluation, ...).

Every stage commits its results in transactions (WAL journal, synchronous=FULL), so a kill at
any moment leaves the ledger as of the last commit.

Every SQL statement of the package is here, behind a named method of :class:`Ledger` that takes
and returns the records below (:class:`Cycle`, :class:`Molecule`, :class:`SearchEntry`,
:class:`WorkItem`, :class:`CandidateRecord`, :class:`LabelRecord`, :class:`ReductionRound`,
:class:`Metrics`, :class:`TestError`); ``tests/test_layout.py`` counts SQL strings elsewhere (none).
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..labeling.record import COLUMNS, Label

if TYPE_CHECKING:  # RDKit loads with anif.structures: `anif al status` stays light
    from ..structures import Structure

LEDGER = "ledger.sqlite"
#: The provenance of a label (:class:`anif.labeling.record.Label`) in ``labels`` beside ``method``, ``wall_s``
#: (its ``wall_time_s``), ``host`` and ``name``; added to a ledger from before them when it opens.
LABEL_PROVENANCE = tuple(k for k in COLUMNS
                         if k not in ("method", "wall_time_s", "host", "name", "charge", "multiplicity"))


def _label_type(name: str) -> str:
    """The SQL type of a label provenance column, its default the column's "unknown"."""
    default = COLUMNS[name]
    return f"{'INTEGER' if isinstance(default, int) else 'TEXT'} NOT NULL DEFAULT {default!r}"


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cycles (
    cycle INTEGER PRIMARY KEY, kind TEXT NOT NULL, stage TEXT NOT NULL, rho_hat REAL NOT NULL,
    wall_s REAL NOT NULL DEFAULT 0, dataset_size INTEGER NOT NULL DEFAULT 0, note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS molecules (
    id INTEGER PRIMARY KEY, cycle INTEGER NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL,
    smiles TEXT NOT NULL DEFAULT '', source TEXT NOT NULL, numbers BLOB NOT NULL, start BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', coordinates BLOB, energy REAL, hessian BLOB,
    reason TEXT NOT NULL DEFAULT '', wall_s REAL);
CREATE TABLE IF NOT EXISTS search (
    id INTEGER PRIMARY KEY, cycle INTEGER NOT NULL, source TEXT NOT NULL, name TEXT NOT NULL,
    smiles TEXT NOT NULL, heavy_atoms INTEGER, rho REAL, status TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    UNIQUE (source, name, smiles));
CREATE TABLE IF NOT EXISTS items (
    cycle INTEGER NOT NULL, sampler TEXT NOT NULL, item INTEGER NOT NULL, status TEXT NOT NULL,
    n_candidates INTEGER NOT NULL, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (cycle, sampler, item));
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY, cycle INTEGER NOT NULL, sampler TEXT NOT NULL, item INTEGER NOT NULL, k INTEGER NOT NULL,
    role TEXT NOT NULL, source TEXT NOT NULL, name TEXT NOT NULL, numbers BLOB NOT NULL, coordinates BLOB NOT NULL,
    rho REAL, energy REAL, key TEXT NOT NULL, provenance TEXT NOT NULL, selected INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '', UNIQUE (cycle, sampler, item, k));
CREATE TABLE IF NOT EXISTS labels (
    key TEXT PRIMARY KEY, cycle INTEGER NOT NULL, candidate INTEGER, role TEXT NOT NULL, status TEXT NOT NULL,
    origin TEXT NOT NULL, sampler TEXT NOT NULL, source TEXT NOT NULL, name TEXT NOT NULL, rho REAL,
    numbers BLOB NOT NULL, coordinates BLOB NOT NULL, energy REAL, forces BLOB, method TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '', wall_s REAL, host TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL,
    {label_provenance});
CREATE TABLE IF NOT EXISTS reduction (
    round INTEGER PRIMARY KEY, n_included INTEGER NOT NULL, n_rest INTEGER NOT NULL, n_fail INTEGER,
    added BLOB NOT NULL, finished INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS models (cycle INTEGER PRIMARY KEY, path TEXT NOT NULL, note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS metrics (
    cycle INTEGER NOT NULL, test_set TEXT NOT NULL, e_rmse REAL, e_mae REAL, f_rmse REAL, f_mae REAL,
    n INTEGER NOT NULL, de_rmse REAL, de_mae REAL, rho_spearman REAL, captured REAL, n_bad INTEGER,
    force_spearman REAL, PRIMARY KEY (cycle, test_set));
CREATE TABLE IF NOT EXISTS test_errors (
    cycle INTEGER NOT NULL, test_set TEXT NOT NULL, k INTEGER NOT NULL, n_atoms INTEGER NOT NULL, rho REAL NOT NULL,
    error REAL NOT NULL, force_spread REAL, PRIMARY KEY (cycle, test_set, k));
CREATE TABLE IF NOT EXISTS baselines (
    model TEXT NOT NULL, test_set TEXT NOT NULL, e_rmse REAL, e_mae REAL, f_rmse REAL, f_mae REAL, n INTEGER NOT NULL,
    de_rmse REAL, de_mae REAL, rho_spearman REAL, captured REAL, n_bad INTEGER, force_spearman REAL,
    PRIMARY KEY (model, test_set));
CREATE TABLE IF NOT EXISTS stage_times (
    cycle INTEGER NOT NULL, stage TEXT NOT NULL, wall_s REAL NOT NULL DEFAULT 0, PRIMARY KEY (cycle, stage));
""".format(label_provenance=", ".join(f"{name} {_label_type(name)}" for name in LABEL_PROVENANCE))


def pack(array) -> bytes:
    """Raw bytes of an int64 (atomic numbers) or float64 array."""
    a = np.asarray(array)
    return np.ascontiguousarray(a, dtype=np.int64 if a.dtype.kind in "iu" else np.float64).tobytes()


def numbers_of(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.int64).copy()


def xyz_of(blob: bytes) -> np.ndarray:
    """(N, 3) float64 from a coordinates or forces blob."""
    return np.frombuffer(blob, dtype=np.float64).reshape(-1, 3).copy()


def square_of(blob: bytes) -> np.ndarray:
    a = np.frombuffer(blob, dtype=np.float64)
    n = int(round(np.sqrt(a.size)))
    return a.reshape(n, n).copy()


def _record(cls, row):
    """A dataclass of a row (the columns named by its fields; a column an unmigrated ledger lacks keeps
    the field's default), or None."""
    return None if row is None else cls(**{f.name: row[f.name] for f in fields(cls) if f.name in row.keys()})


# ---- the records ------------------------------------------------------------------------
@dataclass(frozen=True)
class Cycle:
    """A ``cycles`` row: the cycle, its kind, the stage it is in (or ``done``), the rho_hat it uses."""

    cycle: int
    kind: str
    stage: str
    rho_hat: float
    wall_s: float = 0.0
    dataset_size: int = 0
    note: str = ""


@dataclass(frozen=True)
class Molecule:
    """A ``molecules`` row: a sampling-set (role ``train``) or test-set molecule, before and after the oracle."""

    id: int
    cycle: int
    role: str
    name: str
    smiles: str
    source: str
    numbers: bytes
    start: bytes
    status: str = "pending"
    coordinates: Optional[bytes] = None
    energy: Optional[float] = None
    hessian: Optional[bytes] = None
    reason: str = ""
    wall_s: Optional[float] = None

    def minimum(self) -> Structure:
        """The structure at the oracle's minimum (status ok)."""
        from ..structures import Structure

        return Structure(numbers_of(self.numbers), xyz_of(self.coordinates), name=self.name)

    def embedded(self) -> Structure:
        """The start geometry (RDKit embedding, or the dataset's lowest conformer)."""
        from ..structures import Structure

        return Structure(numbers_of(self.numbers), xyz_of(self.start), name=self.name)

    def hessian_matrix(self) -> Optional[np.ndarray]:
        return None if self.hessian is None else square_of(self.hessian)


@dataclass(frozen=True)
class SearchEntry:
    """A ``search`` row: a molecule the configurational search scored (``failing``/``passing``) or skipped."""

    cycle: int
    source: str
    name: str
    smiles: str
    status: str
    heavy_atoms: Optional[int] = None
    rho: Optional[float] = None
    reason: str = ""


@dataclass(frozen=True)
class WorkItem:
    """An ``items`` row: one sampler work item done or failed."""

    cycle: int
    sampler: str
    item: int
    status: str
    n_candidates: int
    reason: str = ""


@dataclass(frozen=True)
class CandidateRecord:
    """A ``candidates`` row: a structure a sampler returned (``id`` None before it is stored)."""

    cycle: int
    sampler: str
    item: int
    k: int
    role: str
    source: str
    name: str
    numbers: bytes
    coordinates: bytes
    rho: Optional[float]
    energy: Optional[float]
    key: str
    provenance: str
    selected: int = 0
    reason: str = ""
    id: Optional[int] = None


@dataclass(frozen=True)
class LabelRecord:
    """A ``labels`` row: one unique structure, pending, ok (energy, forces) or failed (reason)."""

    key: str
    cycle: int
    candidate: Optional[int]
    role: str
    status: str
    origin: str
    sampler: str
    source: str
    name: str
    rho: Optional[float]
    numbers: bytes
    coordinates: bytes
    seq: int
    energy: Optional[float] = None
    forces: Optional[bytes] = None
    method: str = ""
    reason: str = ""
    wall_s: Optional[float] = None
    host: str = ""
    basis: str = ""  # the rest: LABEL_PROVENANCE, as a Label has them
    basis_convention: str = ""
    density_fit: int = -1
    grid: str = ""
    program: str = ""
    device: str = ""
    scf_converged: int = -1
    scf_strategy: str = ""
    scf_iterations: int = -1
    scf_guess: str = ""

    def structure(self) -> Structure:
        from ..structures import Structure

        return Structure(numbers_of(self.numbers), xyz_of(self.coordinates), name=self.name)

    def label(self) -> Label:
        """The label this row holds (pending and failed ones without energy), with its provenance."""
        return Label(key=self.key, ok=self.status == "ok", energy=math.nan if self.energy is None else self.energy,
                     forces=None if self.forces is None else xyz_of(self.forces), reason=self.reason,
                     method=self.method, wall_time_s=math.nan if self.wall_s is None else self.wall_s, host=self.host,
                     name=self.name, **{k: getattr(self, k) for k in LABEL_PROVENANCE})


@dataclass(frozen=True)
class ReductionRound:
    """A ``reduction`` row: one round of the bootstrap's dataset reduction."""

    round: int
    n_included: int
    n_rest: int
    n_fail: Optional[int]
    added: bytes
    finished: int

    def indices(self) -> np.ndarray:
        """The conformers (indices into the flattened dataset) this round added."""
        return np.frombuffer(self.added, dtype=np.int64)


@dataclass(frozen=True)
class Metrics:
    """A ``metrics`` (per cycle) or ``baselines`` (per model) row: errors on one test set and how rho ranks them."""

    test_set: str
    e_rmse: Optional[float]
    e_mae: Optional[float]
    de_rmse: Optional[float]
    de_mae: Optional[float]
    f_rmse: Optional[float]
    f_mae: Optional[float]
    n: int
    rho_spearman: Optional[float]
    captured: Optional[float]
    n_bad: Optional[int]
    force_spearman: Optional[float] = None  # the members' force disagreement's rank correlation with the error


@dataclass(frozen=True)
class TestError:
    """A ``test_errors`` row: one test structure's rho and energy error (kcal/mol) and the members'
    force disagreement (kcal/mol/A)."""

    test_set: str
    k: int
    n_atoms: int
    rho: float
    error: float
    force_spread: Optional[float] = None


_METRICS = "test_set, e_rmse, e_mae, de_rmse, de_mae, f_rmse, f_mae, n, rho_spearman, captured, n_bad, force_spearman"
#: Columns added after the first ledgers: table -> (column, declaration); older ledgers gain them empty.
_ADDED_COLUMNS = {"metrics": [("force_spearman", "REAL")], "baselines": [("force_spearman", "REAL")],
                  "test_errors": [("force_spread", "REAL")]}
#: The WHERE fragments :meth:`Ledger.molecules` combines.
_MOLECULE_FILTERS = {"cycle": "cycle = ?", "before": "cycle < ?", "role": "role = ?", "status": "status = ?"}


class Ledger:
    """The SQLite ledger of one campaign folder: every statement a campaign runs is a method here."""

    def __init__(self, folder: str | Path, create: bool = True):
        self.path = Path(folder) / LEDGER
        if not create and not self.path.is_file():
            raise InputError(f"{folder}: not a campaign folder (no {LEDGER})")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=60)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            if create:
                self.db.executescript(SCHEMA)
                self._add_columns()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path}: not a readable ledger ({exc})") from None
        self._depth = 0

    def close(self) -> None:
        self.db.close()

    def _add_columns(self) -> None:
        """Add the columns a ledger from before them lacks: label provenance (its labels: unknown), the
        force disagreement's (empty)."""
        added = dict(_ADDED_COLUMNS, labels=[(name, _label_type(name)) for name in LABEL_PROVENANCE])
        for table, columns in added.items():
            have = {r["name"] for r in self._rows(f"PRAGMA table_info({table})")}
            for name, declaration in columns:
                if name not in have:
                    self._execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    @contextmanager
    def transaction(self) -> Iterator["Ledger"]:
        """All statements inside commit together (nested blocks join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._depth = 0

    def _execute(self, sql: str, params=()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def _rows(self, sql: str, params=()) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def _value(self, sql: str, params=(), default=None) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return default if row is None or row[0] is None else row[0]

    def _count(self, sql: str, params=()) -> int:
        return int(self._value(sql, params, 0))

    # ---- meta -----------------------------------------------------------------------
    def get(self, key: str, default=None) -> Any:
        raw = self._value("SELECT value FROM meta WHERE key = ?", (key,))
        return default if raw is None else json.loads(raw)

    def set(self, key: str, value) -> None:
        self._execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ---- cycles ---------------------------------------------------------------------
    def insert_cycle(self, cycle: Cycle) -> None:
        self._execute("INSERT INTO cycles (cycle, kind, stage, rho_hat) VALUES (?, ?, ?, ?)",
                      (cycle.cycle, cycle.kind, cycle.stage, cycle.rho_hat))

    def last_cycle(self) -> Optional[Cycle]:
        return _record(Cycle, self.db.execute("SELECT * FROM cycles ORDER BY cycle DESC LIMIT 1").fetchone())

    def cycle(self, cycle: int) -> Optional[Cycle]:
        return _record(Cycle, self.db.execute("SELECT * FROM cycles WHERE cycle = ?", (cycle,)).fetchone())

    def cycles(self) -> list[Cycle]:
        return [_record(Cycle, r) for r in self._rows("SELECT * FROM cycles ORDER BY cycle")]

    def advance(self, cycle: int, stage: str, wall_s: float) -> None:
        """Move ``cycle`` on to ``stage``, adding the wall time the last stage took."""
        self._execute("UPDATE cycles SET stage = ?, wall_s = wall_s + ? WHERE cycle = ?", (stage, wall_s, cycle))

    def set_dataset_size(self, cycle: int, size: int) -> None:
        self._execute("UPDATE cycles SET dataset_size = ? WHERE cycle = ?", (size, cycle))

    def configurational_before(self, cycle: int) -> int:
        """Configurational cycles before ``cycle`` (which size stage the search is at)."""
        return self._count("SELECT COUNT(*) FROM cycles WHERE kind = 'configurational' AND cycle < ?", (cycle,))

    def last_done_after_bootstrap(self, done: str, n: int = 2) -> list[int]:
        """The last ``n`` finished cycles after the bootstrap, newest first."""
        return [c for (c,) in self._rows("SELECT cycle FROM cycles WHERE kind != 'bootstrap' AND stage = ? "
                                         "ORDER BY cycle DESC LIMIT ?", (done, n))]

    def add_stage_time(self, cycle: int, stage: str, wall_s: float) -> None:
        """Add ``wall_s`` to the time of ``stage`` in ``cycle`` (a resumed stage adds up)."""
        self._execute("INSERT INTO stage_times (cycle, stage, wall_s) VALUES (?, ?, ?) "
                      "ON CONFLICT (cycle, stage) DO UPDATE SET wall_s = wall_s + excluded.wall_s", (cycle, stage, wall_s))

    def stage_times(self) -> list[tuple[int, str, float]]:
        """(cycle, stage, wall seconds), empty for a ledger from before the table."""
        if not self._value("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'stage_times'", default=0):
            return []
        return [(int(r["cycle"]), r["stage"], float(r["wall_s"]))
                for r in self._rows("SELECT cycle, stage, wall_s FROM stage_times ORDER BY cycle, stage")]

    # ---- molecules ------------------------------------------------------------------
    def insert_molecule(self, cycle: int, role: str, structure: Structure, smiles: str, source: str) -> None:
        self._execute(
            "INSERT INTO molecules (cycle, role, name, smiles, source, numbers, start) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cycle, role, structure.name, smiles, source, pack(structure.numbers), pack(structure.coordinates)))

    def molecules(self, cycle: Optional[int] = None, before: Optional[int] = None, role: Optional[str] = None,
                  status: Optional[str] = None, with_smiles: bool = False) -> list[Molecule]:
        """Molecules in insertion order, filtered by cycle (or cycles before), role, status, having a SMILES."""
        given = {"cycle": cycle, "before": before, "role": role, "status": status}
        where = [_MOLECULE_FILTERS[k] for k, v in given.items() if v is not None]
        params = [v for v in given.values() if v is not None]
        if with_smiles:
            where.append("smiles != ''")
        sql = "SELECT * FROM molecules" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_record(Molecule, r) for r in self._rows(sql, params)]

    def count_molecules(self, cycle: int, role: Optional[str] = None, status: Optional[str] = None) -> int:
        if role is None:
            return self._count("SELECT COUNT(*) FROM molecules WHERE cycle = ?", (cycle,))
        return self._count("SELECT COUNT(*) FROM molecules WHERE cycle = ? AND role = ? AND status = ?",
                           (cycle, role, status))

    def molecule_at_start(self, molecule: int) -> None:
        """The start geometry is the molecule's minimum (MD test sets: their MD equilibrates it)."""
        self._execute("UPDATE molecules SET status = 'ok', coordinates = start WHERE id = ?", (molecule,))

    def molecule_failed(self, molecule: int, reason: str) -> None:
        self._execute("UPDATE molecules SET status = 'failed', reason = ? WHERE id = ?", (reason, molecule))

    def molecule_passed_over(self, molecule: int, reason: str) -> None:
        """A searched molecule that qualified but was not kept (``[search] keep``): never optimised or sampled."""
        self._execute("UPDATE molecules SET status = 'passed over', reason = ? WHERE id = ? AND status = 'pending'",
                      (reason, molecule))

    def molecule_optimised(self, molecule: int, coordinates, energy: float, hessian, reason: str,
                           wall_s: Optional[float]) -> None:
        self._execute(
            "UPDATE molecules SET status = 'ok', coordinates = ?, energy = ?, hessian = ?, reason = ?, "
            "wall_s = ? WHERE id = ?",
            (pack(coordinates), energy, None if hessian is None else pack(hessian), reason, wall_s, molecule))

    # ---- search ---------------------------------------------------------------------
    def add_search(self, entry: SearchEntry) -> None:
        """Record a searched molecule (once: a source, name and SMILES met again is ignored)."""
        if entry.status == "skipped":
            self._execute("INSERT OR IGNORE INTO search (cycle, source, name, smiles, status, reason) "
                          "VALUES (?, ?, ?, ?, 'skipped', ?)",
                          (entry.cycle, entry.source, entry.name, entry.smiles, entry.reason))
        else:
            self._execute("INSERT OR IGNORE INTO search (cycle, source, name, smiles, heavy_atoms, rho, status) "
                          "VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (entry.cycle, entry.source, entry.name, entry.smiles, entry.heavy_atoms, entry.rho,
                           entry.status))

    def searched_before(self, cycle: int) -> set[tuple[str, str, str]]:
        """(source, name, smiles) of every molecule searched before ``cycle``."""
        return {(r["source"], r["name"], r["smiles"])
                for r in self._rows("SELECT source, name, smiles FROM search WHERE cycle < ?", (cycle,))}

    def search_counts(self, cycle: int) -> dict[str, int]:
        return dict(self._rows("SELECT status, COUNT(*) FROM search WHERE cycle = ? GROUP BY status", (cycle,)))

    # ---- work items -----------------------------------------------------------------
    def done_items(self, cycle: int, sampler: str) -> set[int]:
        """Work items of ``sampler`` in ``cycle`` already run (done or failed)."""
        return {r["item"] for r in self._rows("SELECT item FROM items WHERE cycle = ? AND sampler = ?", (cycle, sampler))}

    def record_item(self, item: WorkItem) -> None:
        self._execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?)",
                      (item.cycle, item.sampler, int(item.item), item.status, item.n_candidates, item.reason))

    # ---- candidates -----------------------------------------------------------------
    def insert_candidate(self, c: CandidateRecord) -> None:
        self._execute(
            "INSERT OR IGNORE INTO candidates (cycle, sampler, item, k, role, source, name, numbers, coordinates, "
            "rho, energy, key, provenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (c.cycle, c.sampler, int(c.item), c.k, c.role, c.source, c.name, c.numbers, c.coordinates, c.rho, c.energy,
             c.key, c.provenance))

    def candidates(self, cycle: int) -> list[CandidateRecord]:
        """The candidates of ``cycle`` in a fixed order (sampler, work item, position)."""
        return [_record(CandidateRecord, r)
                for r in self._rows("SELECT * FROM candidates WHERE cycle = ? ORDER BY sampler, item, k", (cycle,))]

    def clear_selection(self, cycle: int) -> None:
        """Forget an interrupted selection of ``cycle``: its pending oracle labels and selection marks."""
        self._execute("DELETE FROM labels WHERE cycle = ? AND status = 'pending' AND origin = 'oracle'", (cycle,))
        self._execute("UPDATE candidates SET selected = 0, reason = '' WHERE cycle = ?", (cycle,))

    def mark_selected(self, candidate: int) -> None:
        self._execute("UPDATE candidates SET selected = 1 WHERE id = ?", (candidate,))

    def set_candidate_reason(self, candidate: int, reason: str) -> None:
        self._execute("UPDATE candidates SET reason = ? WHERE id = ?", (reason, candidate))

    def count_train_candidates(self, cycle: int) -> int:
        return self._count("SELECT COUNT(*) FROM candidates WHERE cycle = ? AND role = 'train'", (cycle,))

    def candidate_rho(self) -> dict[int, list[float]]:
        """Per cycle with candidates: the rho of its training candidates that have one."""
        return {int(c): [r[0] for r in self._rows("SELECT rho FROM candidates WHERE cycle = ? AND role = 'train' "
                                                  "AND rho IS NOT NULL", (c,))]
                for (c,) in self._rows("SELECT DISTINCT cycle FROM candidates ORDER BY cycle")}

    # ---- labels ---------------------------------------------------------------------
    def insert_label(self, label: LabelRecord) -> None:
        """A new label (pending from a candidate, or ok from a dataset); a structure already there is kept."""
        r = label
        self._execute(
            "INSERT OR IGNORE INTO labels (key, cycle, candidate, role, status, origin, sampler, source, name, rho, "
            "numbers, coordinates, energy, forces, method, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.key, r.cycle, r.candidate, r.role, r.status, r.origin, r.sampler, r.source, r.name, r.rho, r.numbers,
             r.coordinates, r.energy, r.forces, r.method, r.seq))

    def label_keys_before(self, cycle: int) -> set[str]:
        return {r["key"] for r in self._rows("SELECT key FROM labels WHERE cycle < ?", (cycle,))}

    def pending_labels(self, cycle: int) -> list[LabelRecord]:
        return [_record(LabelRecord, r) for r in
                self._rows("SELECT * FROM labels WHERE cycle = ? AND status = 'pending' ORDER BY seq", (cycle,))]

    def count_settled(self, cycle: int) -> int:
        """Labels of ``cycle`` computed or failed (not pending)."""
        return self._count("SELECT COUNT(*) FROM labels WHERE cycle = ? AND status != 'pending'", (cycle,))

    def settle_label(self, key: str, label: Label) -> None:
        """Record the oracle's label of ``key``: ok (energy, forces) or failed (reason), with its provenance."""
        ok = label.ok
        self._execute(
            "UPDATE labels SET status = ?, energy = ?, forces = ?, reason = ?, method = ?, wall_s = ?, host = ?, "
            + ", ".join(f"{k} = ?" for k in LABEL_PROVENANCE) + " WHERE key = ?",
            ("ok" if ok else "failed", label.energy if ok else None, pack(label.forces) if ok else None, label.reason,
             label.method, None if math.isnan(label.wall_time_s) else label.wall_time_s, label.host,
             *(getattr(label, k) for k in LABEL_PROVENANCE), key))

    def oracle_label_counts(self, cycle: int) -> dict[str, int]:
        """Status -> count of the oracle's training labels of ``cycle``."""
        return dict(self._rows("SELECT status, COUNT(*) FROM labels WHERE cycle = ? AND role = 'train' "
                               "AND origin = 'oracle' GROUP BY status", (cycle,)))

    def a_failure(self, cycle: int) -> Optional[str]:
        """The reason of one failed label of ``cycle``."""
        return self._value("SELECT reason FROM labels WHERE cycle = ? AND status = 'failed'", (cycle,))

    def count_ok(self, role: str) -> int:
        return self._count("SELECT COUNT(*) FROM labels WHERE role = ? AND status = 'ok'", (role,))

    def count_train_labels(self, cycle: int, status: Optional[str] = None) -> int:
        """Training labels of ``cycle`` (selected; with ``status``: ok or failed)."""
        if status is None:
            return self._count("SELECT COUNT(*) FROM labels WHERE cycle = ? AND role = 'train'", (cycle,))
        return self._count("SELECT COUNT(*) FROM labels WHERE cycle = ? AND role = 'train' AND status = ?",
                           (cycle, status))

    def selected_per_cycle(self) -> dict[int, int]:
        return dict(self._rows("SELECT cycle, COUNT(*) FROM labels WHERE role = 'train' GROUP BY cycle"))

    def labels_by_sampler(self, cycle: int) -> dict[str, int]:
        return dict(self._rows("SELECT sampler, COUNT(*) FROM labels WHERE cycle = ? AND role = 'train' "
                               "AND status = 'ok' GROUP BY sampler", (cycle,)))

    def ok_keys(self, role: str) -> list[str]:
        """Keys of the ok labels of ``role`` in label order."""
        return [k for (k,) in self._rows("SELECT key FROM labels WHERE role = ? AND status = 'ok' ORDER BY seq", (role,))]

    def labels(self, keys: Sequence[str]) -> list[LabelRecord]:
        """The labels with these keys, in label order (read 500 at a time)."""
        out = []
        keys = list(keys)
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            out += [_record(LabelRecord, r) for r in
                    self._rows(f"SELECT * FROM labels WHERE key IN ({','.join('?' * len(part))}) ORDER BY seq", part)]
        return out

    def label_energies(self, role: str) -> list[tuple[str, float]]:
        """(key, energy) of the ok labels of ``role`` by key (what a generated test set holds)."""
        return [(r["key"], r["energy"]) for r in
                self._rows("SELECT key, energy FROM labels WHERE role = ? AND status = 'ok' ORDER BY key", (role,))]

    def train_labels_after(self, cycle: int) -> list[LabelRecord]:
        """The ok training labels of the cycles after ``cycle``."""
        return [_record(LabelRecord, r) for r in
                self._rows("SELECT * FROM labels WHERE role = 'train' AND status = 'ok' AND cycle > ?", (cycle,))]

    def labels_total(self) -> int:
        """Training labels computed (or taken from the bootstrap dataset) so far."""
        return self._count("SELECT COUNT(*) FROM labels WHERE role = 'train' AND status = 'ok'")

    def next_seq(self) -> int:
        return int(self._value("SELECT MAX(seq) FROM labels", default=-1)) + 1

    # ---- dataset reduction ----------------------------------------------------------
    def reduction_rounds(self) -> list[ReductionRound]:
        return [_record(ReductionRound, r) for r in self._rows("SELECT * FROM reduction ORDER BY round")]

    def add_reduction_round(self, index: int, added: np.ndarray, n_rest: int, n_fail: Optional[int],
                            finished: bool) -> None:
        """Record a round (``n_included`` counts every conformer added so far, this round's too)."""
        n_included = int(self._value("SELECT SUM(LENGTH(added)) FROM reduction", default=0)) // 8
        self._execute("INSERT INTO reduction VALUES (?, ?, ?, ?, ?, ?)",
                      (index, n_included + len(added), n_rest, n_fail, pack(np.asarray(added, dtype=np.int64)),
                       int(finished)))

    def reduction_size(self) -> int:
        """Conformers of the reduced dataset (0 without a reduction)."""
        if not self._value("SELECT COUNT(*) FROM reduction"):
            return 0
        return int(self._value("SELECT n_included + n_rest FROM reduction WHERE round = 0", default=0))

    # ---- models, metrics, test errors -----------------------------------------------
    def set_model(self, cycle: int, path: str, note: str) -> None:
        self._execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?)", (cycle, path, note))

    def model(self, cycle: int) -> Optional[tuple[str, str]]:
        """(path, note) of the model of ``cycle``."""
        rows = self._rows("SELECT path, note FROM models WHERE cycle = ?", (cycle,))
        return (rows[0]["path"], rows[0]["note"]) if rows else None

    def put_metrics(self, table: str, key: str, owner, m: Metrics) -> None:
        """Store ``m`` in ``metrics`` (``key`` "cycle", ``owner`` the cycle) or ``baselines`` ("model", its name)."""
        if (table, key) not in (("metrics", "cycle"), ("baselines", "model")):
            raise ValueError(f"no metrics table {table!r} keyed by {key!r}")
        self._execute(
            f"INSERT OR REPLACE INTO {table} ({key}, {_METRICS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (owner, m.test_set, m.e_rmse, m.e_mae, m.de_rmse, m.de_mae, m.f_rmse, m.f_mae, m.n, m.rho_spearman,
             m.captured, m.n_bad, m.force_spearman))

    def metrics(self, cycle: Optional[int] = None) -> list[tuple[int, Metrics]]:
        """(cycle, metrics) of one cycle, or of all cycles in cycle order."""
        if cycle is None:
            rows = self._rows("SELECT * FROM metrics ORDER BY cycle")
        else:
            rows = self._rows("SELECT * FROM metrics WHERE cycle = ?", (cycle,))
        return [(int(r["cycle"]), _record(Metrics, r)) for r in rows]

    def metrics_by_test_set(self, cycle: int) -> list[Metrics]:
        """The metrics of ``cycle`` sorted by test set."""
        return [_record(Metrics, r) for r in
                self._rows("SELECT * FROM metrics WHERE cycle = ? ORDER BY test_set", (cycle,))]

    def mean_test_rmse(self) -> dict[int, float]:
        """Cycle -> mean energy RMSE over its test sets."""
        return dict(self._rows("SELECT cycle, AVG(e_rmse) FROM metrics GROUP BY cycle"))

    def baselines(self) -> list[tuple[str, Metrics]]:
        return [(r["model"], _record(Metrics, r)) for r in self._rows("SELECT * FROM baselines ORDER BY model, test_set")]

    def put_test_errors(self, cycle: int, errors: Sequence[TestError]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO test_errors (cycle, test_set, k, n_atoms, rho, error, force_spread) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(cycle, e.test_set, e.k, e.n_atoms, e.rho, e.error, e.force_spread) for e in errors])

    def max_test_rho(self, cycle: int) -> Optional[float]:
        return self._value("SELECT MAX(rho) FROM test_errors WHERE cycle = ?", (cycle,))

    def last_tested_cycle(self) -> Optional[int]:
        return self._value("SELECT MAX(cycle) FROM test_errors")

    def test_errors(self, cycle: int) -> list[TestError]:
        return [_record(TestError, r) for r in
                self._rows("SELECT * FROM test_errors WHERE cycle = ? ORDER BY test_set, k",
                           (cycle,))]
