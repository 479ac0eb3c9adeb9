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
  labelled twice): pending, ok (energy, forces) or failed (reason).
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
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..errors import InputError

LEDGER = "ledger.sqlite"

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
    reason TEXT NOT NULL DEFAULT '', wall_s REAL, host TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reduction (
    round INTEGER PRIMARY KEY, n_included INTEGER NOT NULL, n_rest INTEGER NOT NULL, n_fail INTEGER,
    added BLOB NOT NULL, finished INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS models (cycle INTEGER PRIMARY KEY, path TEXT NOT NULL, note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS metrics (
    cycle INTEGER NOT NULL, test_set TEXT NOT NULL, e_rmse REAL, e_mae REAL, f_rmse REAL, f_mae REAL,
    n INTEGER NOT NULL, de_rmse REAL, de_mae REAL, rho_spearman REAL, captured REAL, n_bad INTEGER,
    PRIMARY KEY (cycle, test_set));
CREATE TABLE IF NOT EXISTS test_errors (
    cycle INTEGER NOT NULL, test_set TEXT NOT NULL, k INTEGER NOT NULL, n_atoms INTEGER NOT NULL, rho REAL NOT NULL,
    error REAL NOT NULL, PRIMARY KEY (cycle, test_set, k));
CREATE TABLE IF NOT EXISTS baselines (
    model TEXT NOT NULL, test_set TEXT NOT NULL, e_rmse REAL, e_mae REAL, f_rmse REAL, f_mae REAL, n INTEGER NOT NULL,
    de_rmse REAL, de_mae REAL, rho_spearman REAL, captured REAL, n_bad INTEGER, PRIMARY KEY (model, test_set));
CREATE TABLE IF NOT EXISTS stage_times (
    cycle INTEGER NOT NULL, stage TEXT NOT NULL, wall_s REAL NOT NULL DEFAULT 0, PRIMARY KEY (cycle, stage));
"""


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


class Ledger:
    """The SQLite ledger of one campaign folder."""

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
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path}: not a readable ledger ({exc})") from None
        self._depth = 0

    def close(self) -> None:
        self.db.close()

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

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def rows(self, sql: str, params=()) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def value(self, sql: str, params=(), default=None) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return default if row is None or row[0] is None else row[0]

    def get(self, key: str, default=None) -> Any:
        raw = self.value("SELECT value FROM meta WHERE key = ?", (key,))
        return default if raw is None else json.loads(raw)

    def set(self, key: str, value) -> None:
        self.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ---- cycles ---------------------------------------------------------------------
    def last_cycle(self) -> Optional[sqlite3.Row]:
        return self.db.execute("SELECT * FROM cycles ORDER BY cycle DESC LIMIT 1").fetchone()

    def cycle(self, cycle: int) -> sqlite3.Row:
        return self.db.execute("SELECT * FROM cycles WHERE cycle = ?", (cycle,)).fetchone()

    def labels_total(self) -> int:
        """Training labels computed (or taken from the bootstrap dataset) so far."""
        return int(self.value("SELECT COUNT(*) FROM labels WHERE role = 'train' AND status = 'ok'", default=0))

    def add_stage_time(self, cycle: int, stage: str, wall_s: float) -> None:
        """Add ``wall_s`` to the time of ``stage`` in ``cycle`` (a resumed stage adds up)."""
        self.execute("INSERT INTO stage_times (cycle, stage, wall_s) VALUES (?, ?, ?) "
                     "ON CONFLICT (cycle, stage) DO UPDATE SET wall_s = wall_s + excluded.wall_s", (cycle, stage, wall_s))

    def next_seq(self) -> int:
        return int(self.value("SELECT MAX(seq) FROM labels", default=-1)) + 1
