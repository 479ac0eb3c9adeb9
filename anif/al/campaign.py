"""The active-learning loop of Smith et al. (2018), Fig. 2, with the MD engine as its sampler.

A campaign folder holds ``ledger.sqlite`` (:mod:`anif.al.ledger`, the record of everything
done), ``dataset.h5`` (the training set, ANI HDF5 with ``al_cycle``, ``sampler``, ``source``,
``rho_kcal_mol`` per conformer), ``sampling_set.h5`` (the conformer sampling set: molecules at
the oracle's minimum), ``test_sets/NAME.h5`` (generated test sets), ``models/cycle_NNN/`` (one
anif model per cycle), ``history.json`` and ``plots/``.

Cycles and their stages:

- ``bootstrap`` (cycle 0): [reduce: the paper's dataset reduction of a labelled set] or
  search: pick small molecules (1..5 C, N, O atoms) -> optimize (oracle minimum + Hessian) ->
  sample (DNMS, no QBC: there is no ensemble yet; also the generated test sets' conformers)
  -> select (all) -> label -> train -> evaluate.
- ``configurational``: search (molecules from the sources, staged by size, scored by QBC with
  the last ensemble) -> optimize (the failing ones, by the oracle, tight criteria; they join
  the conformer sampling set) -> sample (DNMS / RTS / dimer boxes on the new molecules) ->
  select -> label -> train -> evaluate.
- ``conformational``: sample (on the conformer sampling set) -> select -> label -> train -> evaluate.

``[qbc] strategy = "random"`` runs the same stages without rho: the search keeps every molecule, the
samplers keep every candidate, and the selection fills the same cap uniformly (the A/B baseline).

DNMS draws normal modes at the oracle's minimum from the oracle's Hessian when ``[oracle]
hessian = true`` (PySCF analytic / teacher finite differences), else from the last ensemble's
finite-difference Hessian at that minimum; the candidates' provenance says which.

After each evaluation the stop rule runs (max cycles, label budget, wall time, no improvement
of the mean test RMSE for ``patience`` cycles) and picks the next cycle: conformational cycles
repeat until the test error stops improving for ``[conformational] patience`` cycles, then a
configurational cycle follows; the first cycle after the bootstrap is configurational (the
paper's cycle starts with the configurational search).

Crash safety: every stage commits its results to the ledger as they arrive and is idempotent,
so a killed campaign resumes at the stage it was in and computes only what is missing; every
random choice is seeded from (seed, cycle, what), so a resumed campaign makes the same
selections as one that ran straight through. Test hook: ``ANIF_AL_KILL_AT=POINT[:N]`` sends
SIGKILL to the process the N-th time it reaches POINT (``stage:NAME`` at the start of a stage,
``sample``, ``search``, ``optimize`` and ``label`` after each committed result, ``reduce``
after each reduction round).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..distributed import as_completed_with_progress, available_cores, dask_client
from ..errors import AnifError, InputError
from ..labeling import structure_key
from ..sampling.candidates import Candidate, molecule_seed
from ..sampling.dnms import dnms_conformers
from ..sampling.settings import FrameSettings
from ..structures import Structure, from_smiles
from . import selection, stores
from .config import Config, changes, record
from .ledger import LEDGER, Ledger, numbers_of, pack, square_of, xyz_of
from .oracles import Oracle, label_task, make_oracle, prepare_task
from .schedule import CycleRecord, next_cycle
from .sources import canonical, covering, heavy_atoms, unsearched
from .training import train_cycle_model

log = logging.getLogger("anif.al")

KINDS = ("bootstrap", "configurational", "conformational")
STAGES = {
    "bootstrap": ("search", "optimize", "sample", "select", "label", "train", "evaluate"),
    "bootstrap-reduce": ("reduce", "search", "optimize", "sample", "select", "label", "train", "evaluate"),
    "configurational": ("search", "optimize", "sample", "select", "label", "train", "evaluate"),
    "conformational": ("sample", "select", "label", "train", "evaluate"),
}
DONE = "done"
DATASET, SAMPLING_SET, TEST_DIR, MODELS = "dataset.h5", "sampling_set.h5", "test_sets", "models"
#: Samplers that only ever read the oracle (no ensemble): bootstrap and test-set conformers.
NMS = "nms"
#: rho (kcal/mol) below which a committee's members agree exactly (evaluation is in float64).
AGREE_KCAL_MOL = 1e-6
_kills: dict[str, int] = {}


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process at the N-th ``name`` when ANIF_AL_KILL_AT=name[:N]."""
    target = os.environ.get("ANIF_AL_KILL_AT", "")
    if not target:
        return
    point, _, count = target.rpartition(":")
    if not count.isdigit():
        point, count = target, "1"
    if point != name:
        return
    _kills[name] = _kills.get(name, 0) + 1
    if _kills[name] >= int(count):
        os.kill(os.getpid(), signal.SIGKILL)


def seed_of(*parts) -> int:
    """A 31-bit seed from the campaign seed and what it is for (ints and strings)."""
    ints = [p if isinstance(p, int) else int.from_bytes(hashlib.sha256(str(p).encode()).digest()[:8], "little")
            for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0] & 0x7FFFFFFF)


def model_dir(folder: Path, cycle: int) -> Path:
    return folder / MODELS / f"cycle_{cycle:03d}"


def nms_task(item, settings, source_label: str = "oracle") -> list[Candidate]:
    """Normal-mode conformers around an oracle minimum (no ensemble involved): bootstrap and test sets."""
    seed, (structure, hessian) = item
    return dnms_conformers(structure, hessian, settings, np.random.default_rng(seed), source_label, seed)


def md_frames_task(item, settings) -> list[Candidate]:
    """MD frames of a test molecule with the test set's model (:func:`anif.sampling.frames.md_frames`)."""
    from ..models import load_model
    from ..sampling.frames import md_frames

    seed, (structure, spec) = item
    return md_frames(load_model(spec), structure, seed, settings)


class Campaign:
    """One campaign folder run with one config (see the module docstring)."""

    def __init__(self, config: Config, folder: str | Path, workers: Optional[int] = None,
                 scheduler: Optional[str] = None, oracle: Optional[Oracle] = None, progress: bool = True):
        if workers is not None and workers < 0:
            raise InputError(f"--workers must be >= 0, got {workers}")
        if workers is not None and scheduler is not None:
            raise InputError("give either --workers or --scheduler, not both")
        self.config, self.folder = config, Path(folder)
        self.workers, self.scheduler, self.progress = workers, scheduler, progress
        if scheduler is not None:
            self.threads = None  # the remote workers' OMP_NUM_THREADS rules
        elif workers == 0:
            self.threads = available_cores()
        else:
            self.threads = max(1, available_cores() // (workers or available_cores()))
        self.oracle = oracle or make_oracle(config, self.threads, self.folder)
        self.ledger: Optional[Ledger] = None
        self._lock = None  # the open lock file while this process runs the campaign
        self._pool: Optional[ExitStack] = None
        self._client = None

    # ---- entry ----------------------------------------------------------------------------
    def run(self) -> dict:
        """Start or resume; returns the campaign's status (anif.al.report.status)."""
        from .report import status, write_history

        try:
            self._open()
            while True:
                row = self.ledger.last_cycle()
                if row["stage"] == DONE:
                    if not self._next_cycle(row):
                        break
                    continue
                self._run_stage(row)
            return status(self.folder, self.ledger)
        finally:
            self._close_pool()
            if self._lock is not None:
                write_history(self.folder, self.ledger)
                self._lock.close()
            if self.ledger is not None:
                self.ledger.close()

    def _open(self) -> None:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: exists and is not a folder")
        fresh = not (folder / LEDGER).exists()
        if fresh and folder.exists() and any(folder.iterdir()):
            raise InputError(f"{folder}: exists, is not empty and holds no campaign; choose a new --out")
        self.ledger = Ledger(folder)
        lock = open(folder / ".lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise InputError(f"{folder}: another `anif al run` is working on this campaign") from None
        self._lock = lock
        current = record(self.config)
        previous = self.ledger.get("config")
        if previous is None:
            with self.ledger.transaction():
                self.ledger.set("config", current)
                self.ledger.set("oracle", self.oracle.method)
                self._insert_cycle(0, "bootstrap", self.config.qbc.rho_hat)
            if self.config.path and Path(self.config.path).is_file():
                shutil.copyfile(self.config.path, folder / "config.toml")
            return
        diff = changes(previous, current)
        if self.ledger.get("oracle") != self.oracle.method:
            diff.append("the oracle")
        if diff:
            raise InputError(
                f"{folder} was started with a different config ({', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''} "
                "changed; only [stop] may change when resuming); use a new --out"
            )

    def _stages(self, kind: str) -> tuple[str, ...]:
        if kind == "bootstrap" and self.config.bootstrap.dataset:
            return STAGES["bootstrap-reduce"]
        return STAGES[kind]

    def _insert_cycle(self, cycle: int, kind: str, rho_hat: float) -> None:
        self.ledger.execute("INSERT INTO cycles (cycle, kind, stage, rho_hat) VALUES (?, ?, ?, ?)",
                            (cycle, kind, self._stages(kind)[0], rho_hat))

    def _run_stage(self, row) -> None:
        stage, cycle = row["stage"], row["cycle"]
        kill_point(f"stage:{stage}")
        log.info("cycle %d (%s): %s", cycle, row["kind"], stage)
        start = time.perf_counter()
        getattr(self, f"_stage_{stage}")(row)
        stages = self._stages(row["kind"])
        following = stages[stages.index(stage) + 1] if stage != stages[-1] else DONE
        with self.ledger.transaction():
            self.ledger.execute("UPDATE cycles SET stage = ?, wall_s = wall_s + ? WHERE cycle = ?",
                                (following, time.perf_counter() - start, cycle))
            self.ledger.add_stage_time(cycle, stage, time.perf_counter() - start)  # the report's time per stage
        from .report import write_history

        write_history(self.folder, self.ledger)

    # ---- the pool ---------------------------------------------------------------------------
    def _pool_client(self):
        """The Dask client (started on first use), or None for workers=0 (this process)."""
        if self.workers == 0:
            return None
        if self._pool is None:
            self._pool = ExitStack()
            self._client = self._pool.enter_context(
                dask_client(workers=self.workers, scheduler=self.scheduler, task_threads=self.threads))
        return self._client

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool, self._client = None, None

    # ---- helpers ----------------------------------------------------------------------------
    def _previous_model(self, cycle: int) -> str:
        return str(model_dir(self.folder, cycle - 1))

    def _molecules(self, where: str, params=()) -> list:
        return self.ledger.rows(f"SELECT * FROM molecules WHERE {where} ORDER BY id", params)

    @staticmethod
    def _minimum(row) -> Structure:
        return Structure(numbers_of(row["numbers"]), xyz_of(row["coordinates"]), name=row["name"])

    def _sync_stores(self) -> int:
        """Bring dataset.h5, test_sets/*.h5 and sampling_set.h5 up to the ledger; returns the dataset size."""
        self._sync_labels(self.folder / DATASET, "train")
        for t in self.config.test_sets:
            if t.smiles:
                self._sync_labels(self.folder / TEST_DIR / f"{t.name}.h5", f"test:{t.name}")
        have = stores.stored_keys(self.folder / SAMPLING_SET)
        molecules = self._molecules("role = 'train' AND status = 'ok'")
        stores.append(self.folder / SAMPLING_SET, [stores.molecule_record(m, self.oracle.minima_method) for m in molecules
                                                   if f"molecule:{m['id']}" not in have])
        return self.ledger.labels_total()

    def _sync_labels(self, path: Path, role: str) -> None:
        """Append the ok labels of ``role`` that the store at ``path`` lacks (reading only those from the ledger)."""
        have = stores.stored_keys(path)
        keys = [k for (k,) in self.ledger.rows("SELECT key FROM labels WHERE role = ? AND status = 'ok' ORDER BY seq",
                                               (role,)) if k not in have]
        rows = []
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows += self.ledger.rows(f"SELECT * FROM labels WHERE key IN ({','.join('?' * len(part))}) ORDER BY seq", part)
        stores.append(path, [stores.label_record(r) for r in rows])

    # ---- reduce (bootstrap from a labelled set) ----------------------------------------------
    def _stage_reduce(self, row) -> None:
        from ..accuracy import predict
        from ..datasets.comp6 import read_comp6_file
        from ..models import load_model
        from ..units import HARTREE_TO_KCAL_MOL

        b = self.config.bootstrap
        molecules = read_comp6_file(b.dataset, subset="bootstrap")
        flat = [(m, c) for m in molecules for c in range(m.n_conformers)]
        n_atoms = np.array([m.species.shape[0] for m, _ in flat])
        energies = np.concatenate([m.energies for m in molecules])
        method = f"dataset:{Path(b.dataset).name}"
        seed = self.config.campaign.seed
        while True:
            rounds = self.ledger.rows("SELECT * FROM reduction ORDER BY round")
            if not rounds:
                start = selection.reduction_start(len(flat), b.start_fraction, np.random.default_rng(seed_of(seed, "reduce", 0)))
                self._reduction_round(0, start, len(flat) - len(start), None, False, flat, method)
                continue
            last = rounds[-1]
            if last["finished"]:
                break
            included = np.sort(np.concatenate([np.frombuffer(r["added"], dtype=np.int64) for r in rounds]))
            rest = np.setdiff1d(np.arange(len(flat)), included)
            if last["round"] + 1 >= b.max_rounds:
                log.info("dataset reduction: max_rounds %d reached", b.max_rounds)
                self._reduction_round(last["round"] + 1, np.zeros(0, dtype=np.int64), len(rest), None, True, flat, method)
                break
            self._sync_stores()
            out = self.folder / MODELS / "reduction" / f"round_{last['round']:02d}"
            previous = self.folder / MODELS / "reduction" / f"round_{last['round'] - 1:02d}"
            self._train(out, str(previous) if self.config.training.warm_start and last["round"] > 0 else None)
            predictions = predict(load_model(str(out)).double(), molecules, forces=False, progress=self.progress)
            error = (np.concatenate([p.energy for p in predictions]) - energies) * HARTREE_TO_KCAL_MOL
            failing = selection.fail_cases(error[rest], n_atoms[rest], b.fail_threshold)
            rng = np.random.default_rng(seed_of(seed, "reduce", last["round"] + 1))
            added, finished = selection.reduction_step(rest, failing, b.add_fraction, b.stop_fraction, rng)
            log.info("dataset reduction round %d: %d of %d remaining fail; adding %d%s", last["round"] + 1,
                     int(failing.sum()), len(rest), len(added), " (last round)" if finished else "")
            self._reduction_round(last["round"] + 1, added, len(rest) - len(added), int(failing.sum()), finished, flat,
                                  method)
            kill_point("reduce")
        self._sync_stores()

    def _reduction_round(self, index: int, added: np.ndarray, n_rest: int, n_fail: Optional[int], finished: bool,
                         flat: list, method: str) -> None:
        with self.ledger.transaction():
            n_included = int(self.ledger.value("SELECT SUM(LENGTH(added)) FROM reduction", default=0)) // 8
            self.ledger.execute("INSERT INTO reduction VALUES (?, ?, ?, ?, ?, ?)",
                                (index, n_included + len(added), n_rest, n_fail, pack(np.asarray(added, dtype=np.int64)),
                                 int(finished)))
            seq = self.ledger.next_seq()
            for k, i in enumerate(added):
                m, c = flat[int(i)]
                s = Structure(m.species, m.coordinates[c], name=f"{m.name}/{c}")
                forces = None if m.forces is None or not np.isfinite(m.forces[c]).all() else pack(m.forces[c])
                self.ledger.execute(
                    "INSERT OR IGNORE INTO labels (key, cycle, role, status, origin, sampler, source, name, numbers, "
                    "coordinates, energy, forces, method, seq) VALUES (?, 0, 'train', 'ok', 'dataset', 'reduction', ?, ?, "
                    "?, ?, ?, ?, ?, ?)",
                    (structure_key(s), Path(self.config.bootstrap.dataset).stem, s.name, pack(s.numbers),
                     pack(s.coordinates), float(m.energies[c]), forces, method, seq + k))

    # ---- search -----------------------------------------------------------------------------
    def _stage_search(self, row) -> None:
        cycle = row["cycle"]
        if row["kind"] == "bootstrap":
            self._bootstrap_molecules(cycle)
        else:
            self._configurational_search(row)

    def _insert_molecule(self, cycle: int, role: str, structure: Structure, smiles: str, source: str) -> None:
        self.ledger.execute(
            "INSERT INTO molecules (cycle, role, name, smiles, source, numbers, start) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cycle, role, structure.name, smiles, source, pack(structure.numbers), pack(structure.coordinates)))

    def _bootstrap_molecules(self, cycle: int) -> None:
        """Test-set molecules, and (without a bootstrap dataset) the small molecules to start from."""
        from ..sampling.search import gdb11_like

        if self.ledger.value("SELECT COUNT(*) FROM molecules WHERE cycle = ?", (cycle,)):
            return  # inserted before a kill
        seed = self.config.campaign.seed
        with self.ledger.transaction():
            held_out = set()
            for t in self.config.test_sets:
                for k, smiles in enumerate(t.smiles):
                    held_out.add(canonical(smiles))
                    s = from_smiles(smiles, seed=seed_of(seed, "test", t.name, k), name=f"{t.name}:{smiles}")
                    self._insert_molecule(cycle, f"test:{t.name}", s, smiles, f"test:{t.name}")
            if self.config.bootstrap.dataset:
                for m in self._dataset_minima():
                    self._insert_molecule(cycle, "train", m, "", "bootstrap")
                return
            b = self.config.bootstrap
            if b.smiles:
                chosen = [(s, s) for s in b.smiles]
            else:
                pool = [(s, n) for s, n in gdb11_like()
                        if heavy_atoms(s) <= b.max_heavy_atoms and canonical(s) not in held_out]
                order = np.random.default_rng(seed_of(seed, "bootstrap")).permutation(len(pool))
                chosen = covering([pool[i] for i in order], b.molecules)
            for k, (smiles, name) in enumerate(chosen):
                s = from_smiles(smiles, seed=seed_of(seed, "bootstrap", k), name=name)
                self._insert_molecule(cycle, "train", s, smiles, "bootstrap")

    def _dataset_minima(self) -> list[Structure]:
        """The lowest-energy conformer of every molecule of the bootstrap dataset."""
        from ..datasets.comp6 import read_comp6_file

        out = []
        for m in read_comp6_file(self.config.bootstrap.dataset, subset="bootstrap"):
            c = int(np.argmin(m.energies))
            out.append(Structure(m.species, m.coordinates[c], name=m.name))
        return out

    def _configurational_search(self, row) -> None:
        from ..sampling.parallel import sampler_items
        from ..sampling.search import random_dimers

        cycle, seed = row["cycle"], self.config.campaign.seed
        k = int(self.ledger.value("SELECT COUNT(*) FROM cycles WHERE kind = 'configurational' AND cycle < ?", (cycle,)))
        limit = self.config.search.size_stages[min(k, len(self.config.search.size_stages) - 1)]
        pool, skipped = self._source_molecules(cycle)
        with self.ledger.transaction():
            for source, name, smiles, reason in skipped:
                self.ledger.execute("INSERT OR IGNORE INTO search (cycle, source, name, smiles, status, reason) "
                                    "VALUES (?, ?, ?, ?, 'skipped', ?)", (cycle, source, name, smiles, reason))
        eligible = [m for m in pool if m[3] <= limit]
        rng = np.random.default_rng(seed_of(seed, cycle, "search"))
        n = min(self.config.search.molecules_per_cycle, len(eligible))
        chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), size=n, replace=False))] if n else []
        log.info("configurational search: %d molecules with <= %d heavy atoms (%d eligible)", n, limit, len(eligible))
        chunk = self.config.search.chunk
        payloads = []
        for source in sorted({m[0] for m in chosen}):
            mols = [(m[2], m[1]) for m in chosen if m[0] == source]
            payloads += [(source, mols[i:i + chunk], []) for i in range(0, len(mols), chunk)]
        if self.config.search.random_dimers:
            monomers = [self._minimum(m) for m in self._molecules("role = 'train' AND status = 'ok' AND cycle < ?", (cycle,))]
            if monomers:
                dimers = random_dimers(monomers, self.config.search.random_dimers, seed_of(seed, cycle, "dimers"))
                payloads.append(("random-dimers", [], dimers))
        done = {r["item"] for r in self.ledger.rows("SELECT item FROM items WHERE cycle = ? AND sampler = 'search'", (cycle,))}
        todo = [i for i in range(len(payloads)) if i not in done]
        results = sampler_items(self._pool_client(), "search", self._previous_model(cycle), [payloads[i] for i in todo],
                                row["rho_hat"], seed_of(seed, cycle, "search-embed"), indices=todo)
        for item, result in results:
            with self.ledger.transaction():
                if isinstance(result, BaseException):
                    self._item(cycle, "search", item, "failed", 0, f"{type(result).__name__}: {result}")
                    continue
                for name, reason in result.skipped:
                    source = payloads[item][0]
                    smiles = dict((nm, sm) for sm, nm in payloads[item][1]).get(name, "")
                    self.ledger.execute("INSERT OR IGNORE INTO search (cycle, source, name, smiles, status, reason) "
                                        "VALUES (?, ?, ?, ?, 'skipped', ?)", (cycle, source, name, smiles, reason))
                for c in result.scored:
                    failing = c.rho_kcal_mol > row["rho_hat"]
                    smiles = c.provenance.get("smiles", "")
                    self.ledger.execute(
                        "INSERT OR IGNORE INTO search (cycle, source, name, smiles, heavy_atoms, rho, status) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (cycle, c.provenance["source"], c.structure.name, smiles, int((c.structure.numbers > 1).sum()),
                         c.rho_kcal_mol, "failing" if failing else "passing"))
                    if failing or self.config.qbc.strategy == "random":  # random: every searched molecule joins
                        self._insert_molecule(cycle, "train", c.structure, smiles, c.provenance["source"])
                self._item(cycle, "search", item, "done", len(result.candidates))
            kill_point("search")

    def _source_molecules(self, cycle: int):
        """Source molecules not searched before ``cycle`` (nor held out), and the unusable ones with reasons."""
        searched = {(r["source"], r["name"], r["smiles"]) for r in
                    self.ledger.rows("SELECT source, name, smiles FROM search WHERE cycle < ?", (cycle,))}
        held_out = {canonical(smi) for t in self.config.test_sets for smi in t.smiles}
        held_out |= {canonical(m["smiles"]) for m in self._molecules("smiles != '' AND cycle < ?", (cycle,))}
        return unsearched(self.config.search, searched, held_out)

    # ---- optimize ---------------------------------------------------------------------------
    def _stage_optimize(self, row) -> None:
        cycle = row["cycle"]
        md_tests = {f"test:{t.name}" for t in self.config.test_sets if t.sampler == "md"}
        with self.ledger.transaction():  # MD test sets start from the embedded geometry: the MD equilibrates it
            for m in self._molecules("cycle = ? AND status = 'pending'", (cycle,)):
                if m["role"] in md_tests:
                    self.ledger.execute("UPDATE molecules SET status = 'ok', coordinates = start WHERE id = ?", (m["id"],))
        pending = self._molecules("cycle = ? AND status = 'pending'", (cycle,))
        if pending:
            structures = [Structure(numbers_of(m["numbers"]), xyz_of(m["start"]), name=m["name"]) for m in pending]
            need = [row["kind"] == "bootstrap" or m["role"] != "train" or self.config.oracle.hessian for m in pending]
            for flag in (True, False):  # Hessians where needed; one pass each keeps the task arguments plain
                index = [i for i in range(len(pending)) if need[i] == flag]
                if not index:
                    continue
                results = as_completed_with_progress(self._pool_client(), prepare_task, [structures[i] for i in index],
                                                     "optimize (oracle)", oracle=self.oracle, with_hessian=flag)
                for j, result in results:
                    m = pending[index[j]]
                    with self.ledger.transaction():
                        if isinstance(result, BaseException) or not result["ok"]:
                            reason = result["reason"] if isinstance(result, dict) else f"{type(result).__name__}: {result}"
                            self.ledger.execute("UPDATE molecules SET status = 'failed', reason = ? WHERE id = ?",
                                                (reason, m["id"]))
                        else:
                            self.ledger.execute(
                                "UPDATE molecules SET status = 'ok', coordinates = ?, energy = ?, hessian = ?, reason = ?, "
                                "wall_s = ? WHERE id = ?",
                                (pack(result["coordinates"]), result["energy"],
                                 None if result["hessian"] is None else pack(result["hessian"]),
                                 "" if result["converged"] else "optimisation not converged", result["wall_time_s"],
                                 m["id"]))
                    kill_point("optimize")
        molecules = self._molecules("cycle = ?", (cycle,))
        for role in sorted({m["role"] for m in molecules}):
            ok = [m for m in molecules if m["role"] == role and m["status"] == "ok"]
            if not ok and (role != "train" or row["kind"] == "bootstrap"):
                failed = [m for m in molecules if m["role"] == role]
                raise AnifError(f"the oracle could not optimise any {role} molecule of cycle {cycle} "
                                f"({len(failed)} failed, e.g. {failed[0]['name']}: {failed[0]['reason']})")
        self._sync_stores()

    # ---- sample -----------------------------------------------------------------------------
    def _sample_plan(self, row) -> list[tuple]:
        """(sampler, payloads, settings, model spec or task, rho_hat) of this cycle, in a fixed order;
        a task (a function of (seed, payload) and settings) for the conformers that need no QBC."""
        cycle, kind, c = row["cycle"], row["kind"], self.config
        plan = []
        if kind == "bootstrap":
            for t in c.test_sets:
                mols = self._molecules("cycle = ? AND role = ? AND status = 'ok'", (cycle, f"test:{t.name}"))
                if t.sampler == "md":
                    settings = FrameSettings(temperature=t.temperature, n=t.conformers)
                    plan.append((f"test:{t.name}", [(self._minimum(m), t.model) for m in mols], settings, md_frames_task,
                                 -math.inf))
                    continue
                settings = replace(c.dnms, temperature=t.temperature, keep=t.conformers, pool=max(c.dnms.pool, 4 * t.conformers))
                plan.append((f"test:{t.name}", [(self._minimum(m), square_of(m["hessian"])) for m in mols], settings,
                             nms_task, -math.inf))
            if not c.bootstrap.dataset:
                mols = self._molecules("cycle = ? AND role = 'train' AND status = 'ok'", (cycle,))
                settings = replace(c.dnms, keep=c.bootstrap.conformers, pool=max(c.dnms.pool, 4 * c.bootstrap.conformers))
                plan.append((NMS, [(self._minimum(m), square_of(m["hessian"])) for m in mols], settings, nms_task,
                             -math.inf))
            return plan
        if kind == "configurational":
            mols = self._molecules("cycle = ? AND role = 'train' AND status = 'ok'", (cycle,))
        else:
            mols = self._molecules("cycle < ? AND role = 'train' AND status = 'ok'", (cycle,))
            n = c.conformational.molecules_per_cycle
            if n and n < len(mols):
                pick = np.random.default_rng(seed_of(c.campaign.seed, cycle, "molecules")).choice(len(mols), n, replace=False)
                mols = [mols[i] for i in sorted(pick)]
        if not mols:
            return plan
        model = self._previous_model(cycle)
        rho_hat = row["rho_hat"]
        keep_above = rho_hat if c.qbc.prefilter and c.qbc.strategy == "qbc" else -math.inf  # random: keep all
        structures = [self._minimum(m) for m in mols]
        for sampler in c.conformational.samplers:
            if sampler == "dnms":
                payloads = [(s, square_of(m["hessian"]) if c.oracle.hessian and m["hessian"] is not None else None)
                            for s, m in zip(structures, mols) if s.n_atoms > 1]
                plan.append(("dnms", payloads, replace(c.dnms, optimize=False),
                             model, keep_above))
            elif sampler == "rts":
                plan.append(("rts", structures, c.rts, model, rho_hat))
            else:
                plan.append(("dimers", [structures] * c.conformational.dimer_boxes, c.dimers, model, keep_above))
        return plan

    def _stage_sample(self, row) -> None:
        from ..sampling.parallel import sampler_items

        cycle = row["cycle"]
        for sampler, payloads, settings, model, rho_hat in self._sample_plan(row):
            done = {r["item"] for r in self.ledger.rows("SELECT item FROM items WHERE cycle = ? AND sampler = ?",
                                                         (cycle, sampler))}
            todo = [i for i in range(len(payloads)) if i not in done]
            log.info("sample %s: %d work items to run (%d done before)", sampler, len(todo), len(done))
            if not todo:
                continue
            seed = seed_of(self.config.campaign.seed, cycle, sampler)
            if callable(model):
                items = [(molecule_seed(seed, i), payloads[i]) for i in todo]
                results = ((todo[j], r) for j, r in as_completed_with_progress(
                    self._pool_client(), model, items, f"sample {sampler}", settings=settings))
            else:
                results = sampler_items(self._pool_client(), sampler, model, [payloads[i] for i in todo], rho_hat,
                                        seed, settings, indices=todo)
            role = sampler if sampler.startswith("test:") else "train"
            sources = {m["name"]: m["source"] for m in self._molecules("role = ?", (role,))}
            for item, result in results:
                with self.ledger.transaction():
                    if isinstance(result, BaseException):
                        self._item(cycle, sampler, item, "failed", 0, f"{type(result).__name__}: {result}")
                    else:
                        self._insert_candidates(cycle, sampler, item, role, result, payloads[item], sources)
                        self._item(cycle, sampler, item, "done", len(result))
                kill_point("sample")

    def _item(self, cycle, sampler, item, status, n, reason="") -> None:
        self.ledger.execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?)",
                            (cycle, sampler, int(item), status, n, reason))

    def _insert_candidates(self, cycle, sampler, item, role, candidates: Sequence[Candidate], payload,
                           sources: dict[str, str]) -> None:
        """Candidates of one work item; ``sources``: molecule name -> source (a dimer names two)."""
        hessian = None
        if sampler == "dnms":
            hessian = "oracle" if payload[1] is not None else "ensemble"
        for k, c in enumerate(candidates):
            prov = dict(c.provenance)
            if hessian:
                prov["hessian"] = hessian
            name = c.structure.name or str(prov.get("source", ""))
            self.ledger.execute(
                "INSERT OR IGNORE INTO candidates (cycle, sampler, item, k, role, source, name, numbers, coordinates, "
                "rho, energy, key, provenance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cycle, sampler, int(item), k, role, "+".join(sorted({sources.get(p, "") for p in name.split("+")})),
                 name, pack(c.structure.numbers),
                 pack(c.structure.coordinates), _finite(c.rho_kcal_mol), _finite(c.energy),
                 structure_key(c.structure), json.dumps(prov, sort_keys=True, default=str)))

    # ---- select -----------------------------------------------------------------------------
    def _stage_select(self, row) -> None:
        cycle, q = row["cycle"], self.config.qbc
        with self.ledger.transaction():
            self.ledger.execute("DELETE FROM labels WHERE cycle = ? AND status = 'pending' AND origin = 'oracle'", (cycle,))
            self.ledger.execute("UPDATE candidates SET selected = 0, reason = '' WHERE cycle = ?", (cycle,))
            rows = self.ledger.rows("SELECT * FROM candidates WHERE cycle = ? ORDER BY sampler, item, k", (cycle,))
            earlier = {r["key"] for r in self.ledger.rows("SELECT key FROM labels WHERE cycle < ?", (cycle,))}
            tests = [r for r in rows if r["role"] != "train"]
            train = [r for r in rows if r["role"] == "train"]
            budget = self.config.stop.label_budget
            left = budget - self.ledger.labels_total() if budget else len(train)
            if row["kind"] == "bootstrap":
                chosen = self._unique(train, earlier)[: max(0, left)]
                reasons = {}
            else:
                unique = {r["id"] for r in self._unique(train, earlier)}
                result = selection.select(
                    [r["rho"] if r["rho"] is not None else math.nan for r in train],
                    [numbers_of(r["numbers"]) for r in train], [xyz_of(r["coordinates"]) for r in train],
                    row["rho_hat"], max(0, min(q.max_per_cycle, left)), q.upper_bound, q.min_rmsd,
                    [r["id"] not in unique for r in train], "random" if q.strategy == "random" else "rho",
                    np.random.default_rng(seed_of(self.config.campaign.seed, cycle, "select")), q.spread)
                chosen = [train[i] for i in result.selected]
                reasons = {train[i]["id"]: why for i, why in result.reasons.items()}
            seq = self.ledger.next_seq()
            for k, r in enumerate(self._unique(tests, earlier) + chosen):
                self.ledger.execute("UPDATE candidates SET selected = 1 WHERE id = ?", (r["id"],))
                self.ledger.execute(
                    "INSERT OR IGNORE INTO labels (key, cycle, candidate, role, status, origin, sampler, source, name, rho, "
                    "numbers, coordinates, seq) VALUES (?, ?, ?, ?, 'pending', 'oracle', ?, ?, ?, ?, ?, ?, ?)",
                    (r["key"], cycle, r["id"], r["role"], _sampler_name(r["sampler"]), r["source"], r["name"], r["rho"],
                     r["numbers"], r["coordinates"], seq + k))
            for cid, why in reasons.items():
                self.ledger.execute("UPDATE candidates SET reason = ? WHERE id = ?", (why, cid))
        log.info("selected %d of %d candidates for labelling", len(chosen), len(train))

    @staticmethod
    def _unique(rows: list, earlier: set) -> list:
        """Rows whose structure was not labelled in an earlier cycle, first occurrence of each key."""
        seen, out = set(earlier), []
        for r in rows:
            if r["key"] not in seen:
                seen.add(r["key"])
                out.append(r)
        return out

    # ---- label ------------------------------------------------------------------------------
    def _stage_label(self, row) -> None:
        cycle = row["cycle"]
        pending = self.ledger.rows("SELECT * FROM labels WHERE cycle = ? AND status = 'pending' ORDER BY seq", (cycle,))
        log.info("label: %d structures to label (%d of this cycle labelled or failed before)", len(pending),
                 self.ledger.value("SELECT COUNT(*) FROM labels WHERE cycle = ? AND status != 'pending'", (cycle,), 0))
        if pending:
            structures = [Structure(numbers_of(r["numbers"]), xyz_of(r["coordinates"]), name=r["name"]) for r in pending]
            results = as_completed_with_progress(self._pool_client(), label_task, structures,
                                                 f"label ({self.oracle.method})", oracle=self.oracle)
            for i, result in results:
                key = pending[i]["key"]
                with self.ledger.transaction():
                    if isinstance(result, BaseException) or not result["ok"]:
                        reason = result["reason"] if isinstance(result, dict) else f"worker error: {type(result).__name__}: {result}"
                        self.ledger.execute("UPDATE labels SET status = 'failed', reason = ?, method = ? WHERE key = ?",
                                            (reason, self.oracle.method, key))
                    else:
                        self.ledger.execute(
                            "UPDATE labels SET status = 'ok', energy = ?, forces = ?, method = ?, wall_s = ?, host = ? "
                            "WHERE key = ?", (result["energy"], pack(result["forces"]), self.oracle.method,
                                              result.get("wall_time_s"), result.get("host", ""), key))
                kill_point("label")
        counts = dict(self.ledger.rows("SELECT status, COUNT(*) FROM labels WHERE cycle = ? AND role = 'train' "
                                       "AND origin = 'oracle' GROUP BY status", (cycle,)))
        if counts.get("failed") and not counts.get("ok"):
            reason = self.ledger.value("SELECT reason FROM labels WHERE cycle = ? AND status = 'failed'", (cycle,))
            raise AnifError(f"the oracle failed all {counts['failed']} labels of cycle {cycle} (e.g. {reason}); "
                            f"the failures are recorded in {self.ledger.path}, earlier labels are kept in {DATASET}")
        for t in self.config.test_sets:
            role = f"test:{t.name}"
            if t.smiles and not self.ledger.value("SELECT COUNT(*) FROM labels WHERE role = ? AND status = 'ok'", (role,)):
                raise AnifError(f"test set {t.name}: the oracle labelled none of its conformers")
        size = self._sync_stores()
        with self.ledger.transaction():
            self.ledger.execute("UPDATE cycles SET dataset_size = ? WHERE cycle = ?", (size, cycle))

    # ---- train ------------------------------------------------------------------------------
    def _train(self, out: Path, init: Optional[str]) -> str:
        """Train ``out`` from ``init`` (an earlier model of this campaign), else from the campaign's
        start ([campaign] init, or scratch). Every training of a campaign runs at the learning rate
        of its start (:data:`anif.training.INITIAL_LR`, unless [training] lr says otherwise): a
        cycle continues the campaign's training, it does not fine-tune a finished ensemble."""
        from ..training import INITIAL_LR

        self._close_pool()  # training forks its member processes: no Dask threads alive meanwhile
        t, start = self.config.training, self.config.campaign.init or None
        lr = t.train.lr or INITIAL_LR[replace(t.train, init=start).start]
        settings = replace(t.train, seed=self.config.campaign.seed, lr=lr)
        return train_cycle_model([self.folder / DATASET], out, settings, init or start, t.jobs, self.progress)

    def _stage_train(self, row) -> None:
        cycle = row["cycle"]
        out = model_dir(self.folder, cycle)
        new = self.ledger.value("SELECT COUNT(*) FROM labels WHERE cycle = ? AND role = 'train' AND status = 'ok'",
                                (cycle,), 0)
        if cycle > 0 and not new:
            previous = Path(self._previous_model(cycle))
            if not (out / "model.json").is_file():
                tmp = out.with_name(out.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(previous, tmp)
                shutil.rmtree(out, ignore_errors=True)
                os.replace(tmp, out)
            note = f"no new labels: the model of cycle {cycle - 1} is kept"
        else:
            init = self._previous_model(cycle) if cycle > 0 and self.config.training.warm_start else None
            note = self._train(out, init)
            if note:
                log.warning("cycle %d training: %s", cycle, note)
        with self.ledger.transaction():
            self.ledger.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?)", (cycle, str(out), note))

    # ---- evaluate ---------------------------------------------------------------------------
    def _test_file(self, name: str) -> Path:
        t = next(t for t in self.config.test_sets if t.name == name)
        return Path(t.file) if t.file else self.folder / TEST_DIR / f"{name}.h5"

    def _stage_evaluate(self, row) -> None:
        from ..accuracy import predict
        from ..models import load_model
        from ..accuracy.calibration import calibrate

        cycle = row["cycle"]
        model = load_model(str(model_dir(self.folder, cycle))).double()
        tests = {t.name: self._test_molecules(t.name) for t in self.config.test_sets}
        first = None
        with self.ledger.transaction():
            for name, molecules in tests.items():
                predictions = predict(model, molecules, forces=True, progress=self.progress)
                self._record_metrics("metrics", ("cycle", cycle), name, predictions, row["rho_hat"])
                first = first or predictions
                rows = [(p.molecule.species.shape[0], float(r), float(e))
                        for p in predictions for r, e in zip(p.rho_kcal_mol, p.energy_error_kcal)]
                self.ledger.db.executemany("INSERT OR REPLACE INTO test_errors VALUES (?, ?, ?, ?, ?, ?)",
                                           [(cycle, name, k, *r) for k, r in enumerate(rows)])
            q = self.config.qbc
            if q.recalibrate:
                try:
                    cal = calibrate(np.concatenate([p.rho_kcal_mol for p in first]),
                                    np.concatenate([p.worst_member_error_per_sqrt_atom for p in first]),
                                    np.concatenate([p.energy_error_kcal for p in first]), q.error_bound, q.capture)
                    self.ledger.set(f"rho_hat_after_{cycle}", cal.rho_hat)
                    log.info("rho_hat recalibrated on %s: %.4f kcal/mol", self.config.test_sets[0].name, cal.rho_hat)
                except InputError as exc:
                    self.ledger.set(f"rho_hat_after_{cycle}", None)
                    log.info("rho_hat not recalibrated (%s)", exc)
        if cycle == 0:
            self._evaluate_baselines(tests, row["rho_hat"])

    def _test_molecules(self, name: str) -> list:
        from ..datasets.comp6 import read_comp6_file

        return read_comp6_file(self._test_file(name), subset=name)

    def _record_metrics(self, table: str, key: tuple[str, object], test_set: str, predictions, rho_hat: float) -> None:
        """Store the E/dE/F errors and rho ranking of ``predictions`` on a test set in ``table`` under
        ``key`` (column, value)."""
        from ..accuracy import compute_metrics, qbc_ranking

        m = compute_metrics(predictions)["overall"]
        ranking = qbc_ranking(predictions, rho_hat)
        self.ledger.execute(
            f"INSERT OR REPLACE INTO {table} ({key[0]}, test_set, e_rmse, e_mae, de_rmse, de_mae, f_rmse, f_mae, n, "
            "rho_spearman, captured, n_bad) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key[1], test_set, m["E_rmse"], m["E_mae"], m["dE_rmse"], m["dE_mae"], m["F_rmse"], m["F_mae"],
             m["n_conformers"], ranking.spearman, ranking.captured, ranking.n_bad))
        spearman = "n/a" if ranking.spearman is None else f"{ranking.spearman:.2f}"
        log.info("%s %s on %s: E RMSE %.3f kcal/mol (%d conformers), rho-vs-error Spearman %s", key[0], key[1],
                 test_set, m["E_rmse"], m["n_conformers"], spearman)

    def _evaluate_baselines(self, tests: dict, rho_hat: float) -> None:
        """The starting ensemble's ([campaign] init) and ANI-1x's errors on the test sets, for the
        report's reference lines; ANI-1x is skipped when it is the oracle or cannot be loaded."""
        from ..accuracy import predict
        from ..models import load_model

        names: dict[str, list[str]] = {}  # model spec -> baseline names (init = "ani1x" is both: evaluated once)
        if self.config.campaign.init:
            names.setdefault(self.config.campaign.init, []).append("start")
        if self.config.campaign.oracle != "model:ani1x":
            names.setdefault("ani1x", []).append("ani1x")
        for spec, labels in names.items():
            try:
                model = load_model(spec).double()
            except Exception as exc:  # ANI-1x not available offline: the report shows no ANI-1x line
                log.info("baseline %s not evaluated (%s)", spec, exc)
                continue
            with self.ledger.transaction():
                for test_set, molecules in tests.items():
                    predictions = predict(model, molecules, forces=True, progress=self.progress)
                    for label in labels:
                        self._record_metrics("baselines", ("model", label), test_set, predictions, rho_hat)

    # ---- stop rule and the next cycle -----------------------------------------------------------
    def _next_cycle(self, row) -> bool:
        """Insert the next cycle (True), or record why the campaign stops (False); raise AnifError
        when the campaign cannot learn (:meth:`cannot_learn`)."""
        why = self.cannot_learn()
        if why:
            raise AnifError(why)
        reason, kind = self.decide()
        with self.ledger.transaction():
            if reason:
                self.ledger.set("stop_reason", reason)
            else:
                self.ledger.set("stop_reason", None)
                rho_hat = self.ledger.get(f"rho_hat_after_{row['cycle']}") or row["rho_hat"]
                self._insert_cycle(row["cycle"] + 1, kind, rho_hat)
        if reason:
            log.info("campaign finished: %s", reason)
        return not reason

    def cannot_learn(self) -> str:
        """Why the campaign cannot learn, or '': its last two cycles after the bootstrap selected
        nothing while the members agreed exactly on every test structure (rho = 0), so QBC can
        never select anything and more cycles would only spend time."""
        cycles = [c for (c,) in self.ledger.rows("SELECT cycle FROM cycles WHERE kind != 'bootstrap' AND stage = ? "
                                                 "ORDER BY cycle DESC LIMIT 2", (DONE,))]
        if len(cycles) < 2:
            return ""
        for cycle in cycles:
            selected = self.ledger.value("SELECT COUNT(*) FROM labels WHERE cycle = ? AND role = 'train'", (cycle,), 0)
            max_rho = self.ledger.value("SELECT MAX(rho) FROM test_errors WHERE cycle = ?", (cycle,))
            if selected or max_rho is None or max_rho > AGREE_KCAL_MOL:
                return ""
        return (f"cycles {cycles[1]} and {cycles[0]} selected nothing and the ensemble's members agree exactly on every "
                "test structure (rho = 0): the committee cannot disagree, so QBC can never select. Give the members "
                "different starts or data: train from scratch (no [campaign] init), start from an ensemble whose "
                "members differ, or raise [training] lr so fine-tuning moves them; the labels so far are kept in "
                f"{DATASET}")

    def decide(self) -> tuple[str, str]:
        """(stop reason or '', kind of the next cycle): :func:`anif.al.schedule.next_cycle` on the finished cycles."""
        errors = dict(self.ledger.rows("SELECT cycle, AVG(e_rmse) FROM metrics GROUP BY cycle"))
        selected = dict(self.ledger.rows("SELECT cycle, COUNT(*) FROM labels WHERE role = 'train' GROUP BY cycle"))
        cycles = [CycleRecord(r["cycle"], r["kind"], errors.get(r["cycle"], math.inf), selected.get(r["cycle"], 0),
                              r["wall_s"]) for r in self.ledger.rows("SELECT * FROM cycles ORDER BY cycle")]
        exhausted = not self._source_molecules(cycles[-1].cycle + 1)[0]
        has_molecules = bool(self._molecules("role = 'train' AND status = 'ok'"))
        return next_cycle(cycles, self.ledger.labels_total(), exhausted, has_molecules, self.config.stop,
                          self.config.conformational)


def _sampler_name(sampler: str) -> str:
    """The dataset's ``sampler`` value: nms (bootstrap DNMS) is dnms; test sets name their set."""
    return "dnms" if sampler == NMS else sampler


def _finite(x) -> Optional[float]:
    return float(x) if x is not None and np.isfinite(x) else None


def run_campaign(config: Config, folder: str | Path, workers: Optional[int] = None, scheduler: Optional[str] = None,
                 oracle: Optional[Oracle] = None, progress: bool = True) -> dict:
    """Start or resume the campaign in ``folder``; returns its status (see anif.al.report.status)."""
    return Campaign(config, folder, workers, scheduler, oracle, progress).run()
