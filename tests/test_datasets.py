"""DatasetStore: torchani round trip, crash safety under SIGKILL, merge/split/summary, bad files."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from anif.datasets.store import DatasetStore, merge, open_output, split, structure_keys, summary
from anif.errors import InputError
from anif.units import HARTREE_TO_KCAL_MOL

ROOT = Path(__file__).resolve().parents[1]


WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])
METHANE = np.array([[0.0, 0.0, 0.0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])


def _fill(store, rng):
    """Plausible labels (Angstrom, Hartree, Hartree/Angstrom) of 4 waters and 2 methanes."""
    store.append(
        "water", ["O", "H", "H"], WATER + rng.normal(scale=0.05, size=(4, 3, 3)), -76.4 + rng.normal(scale=0.01, size=4),
        rng.normal(scale=0.05, size=(4, 3, 3)),
        source="test", sampler="dnms", al_cycle=np.arange(4), rho_kcal_mol=0.3, method="wb97x/6-31g(d)",
    )
    store.append("methane", [6, 1, 1, 1, 1], METHANE + rng.normal(scale=0.05, size=(2, 5, 3)),
                 -40.5 + rng.normal(scale=0.01, size=2), rng.normal(scale=0.05, size=(2, 5, 3)))


def test_round_trip_through_torchani(tmp_path):
    from torchani.datasets import ANIDataset

    rng = np.random.default_rng(0)
    path = tmp_path / "d.h5"
    store = DatasetStore(path)
    _fill(store, rng)
    ds = ANIDataset(path)
    assert ds.grouping == "by_formula"
    assert ds.num_conformers == 6
    mine = dict(store)
    for group in ("water", "methane"):
        theirs = ds.get_numpy_conformers(group)
        np.testing.assert_array_equal(theirs["species"], np.tile(mine[group]["species"], (len(theirs["energies"]), 1)))
        for key in ("coordinates", "energies", "forces", "al_cycle", "rho_kcal_mol"):
            np.testing.assert_array_equal(theirs[key], mine[group][key])
    assert list(ds.get_numpy_conformers("water")["source"].astype(str)) == ["test"] * 4
    assert list(mine["methane"]["source"]) == [""] * 2  # provenance defaults
    assert np.isnan(mine["methane"]["rho_kcal_mol"]).all()

    # torchani writes into our file; we read what it wrote (symbols -> atomic numbers)
    water = ds.get_numpy_conformers("water")
    ds.append_conformers("H2O", {k: v[:2] for k, v in water.items()})
    back = DatasetStore(path, "r").read("H2O")
    np.testing.assert_array_equal(back["species"], [8, 1, 1])
    np.testing.assert_array_equal(back["coordinates"], water["coordinates"][:2])
    # our next append builds on the file as torchani left it (its copy is stale now)
    store.append("methane", [6, 1, 1, 1, 1], METHANE[None], [-40.51])
    assert ANIDataset(path).num_conformers == 6 + 2 + 1
    np.testing.assert_array_equal(DatasetStore(path, "r").read("H2O")["coordinates"], water["coordinates"][:2])

    # and a file torchani created from scratch
    fresh = tmp_path / "fresh.h5"
    ANIDataset(fresh, grouping="by_formula").append_conformers(
        "CH4", {"species": np.tile([6, 1, 1, 1, 1], (3, 1)), "coordinates": rng.normal(size=(3, 5, 3)), "energies": np.arange(3.0)}
    )
    data = DatasetStore(fresh, "r").read("CH4")
    np.testing.assert_array_equal(data["species"], [6, 1, 1, 1, 1])
    np.testing.assert_array_equal(data["energies"], np.arange(3.0))


def test_append_grows_schema_and_rejects_other_molecule(tmp_path):
    rng = np.random.default_rng(1)
    store = DatasetStore(tmp_path / "d.h5")
    _fill(store, rng)
    store.append("water", [8, 1, 1], rng.normal(size=(1, 3, 3)), [1.0], dipole=np.ones((1, 3)))
    water = store.read("water")
    assert water["coordinates"].shape == (5, 3, 3)
    assert np.isnan(water["forces"][4]).all() and np.isnan(water["dipole"][:4]).all()
    assert store.read("methane")["dipole"].shape == (2, 3)
    with pytest.raises(InputError, match="different molecule"):
        store.append("water", [8, 1, 8], rng.normal(size=(1, 3, 3)), [1.0])
    with pytest.raises(InputError, match="group name"):
        store.append("a/b", [1, 1], rng.normal(size=(1, 2, 3)), [1.0])
    assert store.num_conformers() == 7


KILL_CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    from anif.datasets.store import DatasetStore
    store = DatasetStore(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    start = store.num_conformers()
    for i in range(start, start + 10000, 50):
        store.append("mol%d" % (i // 500), [6] + [1] * 29, rng.normal(size=(50, 30, 3)), np.arange(i, i + 50.0),
                     rng.normal(size=(50, 30, 3)), source="kill-test")
        print(i + 49, flush=True)
    """
)


def test_sigkill_mid_append_keeps_committed_conformers(tmp_path):
    """SIGKILL a writer at random moments: every committed conformer stays, torchani reads the file,
    and the next writer goes on (repairing the half-written copy the kill left)."""
    from torchani.datasets import ANIDataset

    path = tmp_path / "killed.h5"
    dirty = tmp_path / ".killed.h5.anif" / "dirty"  # present while a transaction is in flight
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    rng = np.random.default_rng(2)
    mid_append_kills = 0
    for attempt in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", KILL_CHILD, str(path), str(attempt)], stdout=subprocess.PIPE, text=True, env=env
        )
        first = child.stdout.readline()  # wait for one committed append, then kill at a random moment
        time.sleep(rng.uniform(0.1, 0.6))
        in_flight = dirty.exists()
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        committed = [int(line) for line in (first + out).split()]
        assert committed, "the child committed nothing before the kill"
        mid_append_kills += in_flight and dirty.exists()
        store = DatasetStore(path, "r")  # readable after the kill
        energies = np.concatenate([store.read(g)["energies"] for g in store.groups()]) if store.groups() else []
        have = set(np.asarray(energies, dtype=int).tolist())
        assert set(committed) <= have, "a committed conformer was lost"
        assert sorted(have) == list(range(len(have)))  # no torn or duplicated appends
        ds = ANIDataset(path)  # torchani reads every committed conformer
        assert ds.num_conformers == len(have)
        last = store.groups()[-1]
        np.testing.assert_array_equal(ds.get_numpy_conformers(last)["energies"], store.read(last)["energies"])
        if mid_append_kills >= 2:
            break
    assert mid_append_kills >= 1, "the kill never hit an append in flight"
    DatasetStore(path).append("after", [1, 1], np.zeros((1, 2, 3)) + [[0, 0, 0], [0, 0, 0.74]], [0.0])
    assert not dirty.exists() and DatasetStore(path, "r").num_conformers() == len(have) + 1


def test_merge_split_summary(tmp_path, s66x8_path):
    rng = np.random.default_rng(3)
    a = tmp_path / "a.h5"
    _fill(DatasetStore(a), rng)
    merged = merge([a, s66x8_path], tmp_path / "m.h5")
    assert merged.num_conformers() == 6 + 528 and len(merged) == 2 + 66
    info = summary(merged.path)
    assert info["molecules"] == 68 and info["conformers"] == 534
    assert set(info["elements"]) == {"H", "C", "N", "O"}
    assert info["provenance"]["method"]["wb97x/6-31g*"] == 528  # COMP6 'lot' becomes method
    with h5py.File(s66x8_path, "r") as f:  # COMP6 v1 stores the gradient; anif files hold forces
        np.testing.assert_allclose(merged.read("s66x8_mol05")["forces"], -f["s66x8/mol05/forces"][()])
    counts = split(merged.path, [tmp_path / "train.h5", tmp_path / "test.h5"], [0.8, 0.2], seed=0)
    assert sum(counts) == 534 and 0.7 < counts[0] / 534 < 0.9
    train, test = DatasetStore(tmp_path / "train.h5", "r"), DatasetStore(tmp_path / "test.h5", "r")
    assert not set(train.groups()) & set(test.groups())  # split by molecule
    assert sorted(train.groups() + test.groups()) == merged.groups()


def test_bad_files(tmp_path):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(InputError, match="not a readable HDF5"):
        DatasetStore(corrupt, "r")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["images/x"] = np.zeros((3, 4))
    with pytest.raises(InputError, match="not an ANI-format dataset"):
        DatasetStore(other, "r")
    with pytest.raises(InputError, match="no such dataset"):
        DatasetStore(tmp_path / "missing.h5", "r")


def test_group_for_names_one_group_per_atom_sequence(tmp_path):
    store = DatasetStore(tmp_path / "g.h5")
    water, reordered = [8, 1, 1], [1, 8, 1]
    xyz = np.array([[[0.0, 0.0, 0.0], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]]])
    with store.transaction():
        assert store.group_for(water) == "H2O"
        store.append(store.group_for(water), water, xyz, [0.0])
        assert store.group_for(reordered) == "H2O_2"  # same formula, other atom order
        store.append(store.group_for(reordered), reordered, xyz, [1.0])
    reopened = DatasetStore(tmp_path / "g.h5", "r")
    assert reopened.group_for(water) == "H2O" and reopened.group_for(reordered) == "H2O_2"
    assert reopened.group_for(["C", "H", "H", "H", "H"]) == "CH4"
    np.testing.assert_array_equal(reopened.read("H2O_2")["species"], reordered)


# ---- cost of an append, readers, duplicates, kinds, implausible numbers ----------------------------
def _inode(path):
    return os.stat(path).st_ino


def test_appends_alternate_between_two_copies_instead_of_copying_the_file(tmp_path):
    """After the first two commits, each append writes into the second copy and swaps: the file's
    inode alternates between two, so no append copies the whole file."""
    rng = np.random.default_rng(4)
    path = tmp_path / "grow.h5"
    store = DatasetStore(path, kind="labels")
    _fill(store, rng)  # the first commit creates the file, the second makes the second copy
    inodes = []
    for k in range(6):
        store.append("water", [8, 1, 1], WATER + rng.normal(scale=0.05, size=(1, 3, 3)), [-76.4 + 1e-3 * k])
        inodes.append(_inode(path))
    assert len(set(inodes)) == 2 and inodes[0::2] == [inodes[0]] * 3 and inodes[1::2] == [inodes[1]] * 3
    assert DatasetStore(path, "r").num_conformers() == 12
    # a second writer (another store object, as another process would) carries on from the same copies
    DatasetStore(path).append("water", [8, 1, 1], WATER[None], [-76.41])
    assert _inode(path) == inodes[-2] and store.num_conformers() == 12
    store.append("water", [8, 1, 1], WATER[None] + 0.01, [-76.42])  # replays the other writer's commit
    assert store.num_conformers() == 14 and _inode(path) == inodes[-1]
    assert DatasetStore(path, "r").num_conformers() == 14


def test_an_empty_store_grows_through_replayed_commits(tmp_path):
    path = tmp_path / "empty.h5"
    store = DatasetStore(path, kind="candidates")
    with store.transaction():  # an empty store (what a sampler that finds nothing leaves)
        pass
    assert DatasetStore(path, "r").kind == "candidates" and len(DatasetStore(path, "r")) == 0
    store.append("water", [8, 1, 1], WATER[None], [-76.4])
    store.append("hydrogen", [1, 1], [[[0, 0, 0], [0, 0, 0.74]]], [-1.17])  # replays the water onto the empty copy
    store.append("water", [8, 1, 1], WATER[None] + 0.01, [-76.41])
    reread = DatasetStore(path, "r")
    assert reread.groups() == ["hydrogen", "water"] and reread.num_conformers() == 3


READER = textwrap.dedent(
    """
    import os, sys, h5py
    f = h5py.File(sys.argv[1], "r")  # held open while another process commits
    fd = os.open(sys.argv[1], os.O_RDONLY)  # the same file, to see whether anyone writes into it
    print(list(f["water"]["energies"][()]), os.fstat(fd).st_mtime_ns, flush=True)
    sys.stdin.readline()
    print(list(f["water"]["energies"][()]), os.fstat(fd).st_mtime_ns, flush=True)
    """
)


@pytest.mark.skipif(os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE",
                    reason="a reader's copy is recognised through HDF5's file lock")
def test_reader_keeps_a_consistent_file_while_a_writer_commits(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "shared.h5"
    store = DatasetStore(path)
    _fill(store, rng)
    store.append("water", [8, 1, 1], WATER[None], [-76.3])
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    before = reader.stdout.readline()
    for k in range(4):  # the reader's file becomes the second copy after the first of these commits
        store.append("water", [8, 1, 1], WATER[None] + 0.01 * (k + 1), [-76.3 - 0.01 * k])
    after, _ = reader.communicate("\n", timeout=60)
    assert after == before  # same data, and the reader's file was never written to
    assert len(before.split("]")[0].split(",")) == 5
    assert len(store.read("water")["energies"]) == 9


def test_duplicates_are_skipped_and_merging_twice_adds_nothing(tmp_path):
    rng = np.random.default_rng(6)
    store = DatasetStore(tmp_path / "d.h5")
    xyz = WATER + rng.normal(scale=0.05, size=(3, 3, 3))
    assert store.append("water", [8, 1, 1], xyz, [-76.40, -76.41, -76.42]) == 3
    assert store.append("water", [8, 1, 1], xyz[[2, 0]], [-76.42, -76.40]) == 0  # already stored
    assert store.append("water", [8, 1, 1], xyz[[1, 1]] + 0.1, [-76.3, -76.3]) == 1  # repeated within the batch
    assert store.append("water", [8, 1, 1], xyz[:1], [-76.2], charge=1, multiplicity=2) == 1  # another species
    assert store.append("water", [8, 1, 1], xyz[:1] + 1e-10, [-76.40]) == 0  # the same after rounding to 1e-6 A
    data = store.read("water")
    assert len(data["energies"]) == 5 and len(set(data["structure_key"])) == 5
    assert list(data["structure_key"][:3]) == structure_keys([8, 1, 1], xyz)

    merged = tmp_path / "m.h5"
    merge([store.path], merged)
    merge([store.path], merged)
    assert DatasetStore(merged, "r").num_conformers() == 5


CONCURRENT = textwrap.dedent(
    """
    import sys, numpy as np
    from anif.datasets.store import DatasetStore
    rng = np.random.default_rng(7)  # both writers make the same 12 structures
    xyz = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]]) + rng.normal(scale=0.05, size=(12, 3, 3))
    order = range(12) if sys.argv[2] == "0" else reversed(range(12))
    store = DatasetStore(sys.argv[1], kind="labels")
    print(sum(store.append(None, [8, 1, 1], xyz[i][None], [-76.4 - 1e-3 * i]) for i in order))
    """
)


def test_concurrent_writers_store_each_structure_once(tmp_path):
    path = tmp_path / "both.h5"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writers = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(path), str(k)], stdout=subprocess.PIPE,
                                text=True, env=env) for k in (0, 1)]
    written = [int(w.communicate(timeout=120)[0]) for w in writers]
    assert all(w.returncode == 0 for w in writers) and sum(written) == 12
    data = DatasetStore(path, "r").read("H2O")
    assert len(data["energies"]) == 12 and len(set(data["structure_key"])) == 12


def test_stores_refuse_the_other_kind(tmp_path):
    from anif.sampling import Candidate, write_candidates
    from anif.structures import Structure

    labels, candidates = tmp_path / "labels.h5", tmp_path / "cands.h5"
    _fill(DatasetStore(labels, kind="labels"), np.random.default_rng(8))
    water = Structure([8, 1, 1], WATER, name="w")
    write_candidates(candidates, [Candidate(water, 0.5, -76.38, {"sampler": "rts"})])
    before = labels.read_bytes()
    with pytest.raises(InputError, match="is a label store; sampled candidates go to another file"):
        write_candidates(labels, [Candidate(water, 0.5, -76.38, {"sampler": "rts"})])
    with pytest.raises(InputError, match="is a candidate store; reference labels go to another file"):
        DatasetStore(candidates, kind="labels")
    with pytest.raises(InputError, match="cannot mix reference labels and sampled candidates"):
        merge([labels, candidates], tmp_path / "mixed.h5")
    assert labels.read_bytes() == before and not (tmp_path / "mixed.h5").exists()
    assert summary(candidates)["kind"] == "candidates" and summary(labels)["kind"] == "labels"
    assert set(DatasetStore(candidates, "r").read("H2O")["method"]) == {"ensemble-mean"}


def test_files_of_older_versions_are_recognised_by_their_columns(tmp_path):
    """Candidate files written before kinds existed (empty method, JSON provenance) are candidates."""
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        f.attrs["grouping"] = "by_formula"
        g = f.create_group("H2O")
        g["species"], g["coordinates"], g["energies"] = np.array([[8, 1, 1]]), WATER[None], np.array([-76.4])
        g["method"] = np.array([b""], dtype=h5py.string_dtype())
        g["provenance"] = np.array([b"{}"], dtype=h5py.string_dtype())
    with pytest.raises(InputError, match="is a candidate store"):
        DatasetStore(old, kind="labels")


def test_label_store_refuses_numbers_that_cannot_be_ani_units(tmp_path, s66x8_path):
    store = DatasetStore(tmp_path / "labels.h5", kind="labels")
    with h5py.File(s66x8_path, "r") as f:  # real wB97X/6-31G(d) labels pass
        g = f["s66x8/mol00"]
        coords, energies, forces = g["coordinates"][()], g["energies"][()], -g["forces"][()]
    water_dimer = [8, 1, 1, 8, 1, 1]
    assert store.append("dimer", water_dimer, coords, energies, forces) == 8
    with pytest.raises(InputError, match="does not look like a total energy in Hartree"):
        store.append("dimer", water_dimer, coords[:1] + 0.01, energies[:1] * HARTREE_TO_KCAL_MOL)
    with pytest.raises(InputError, match="coordinates in Bohr"):
        store.append("dimer", water_dimer, coords[:1] / 0.52917721092, energies[:1])
    with pytest.raises(InputError, match="coordinates in nm"):
        store.append("dimer", water_dimer, coords[:1] / 10.0, energies[:1])
    with pytest.raises(InputError, match="NaN"):
        store.append("dimer", water_dimer, coords[:1] + 0.01, [np.nan])
    with pytest.raises(InputError, match="kcal/mol/A"):
        store.append("dimer", water_dimer, coords[:1] + 0.01, energies[:1], forces[:1] * 1e4)
    assert DatasetStore(store.path, "r").num_conformers() == 8
    store.append("dimer", water_dimer, coords[:1] + 0.01, energies[:1])  # the refusals left the store writable

    # a store of another tool, read: the same problems are warnings in the summary
    other = tmp_path / "kcal.h5"
    DatasetStore(other).append("dimer", water_dimer, coords / 0.52917721092, energies * HARTREE_TO_KCAL_MOL)
    warnings = summary(other)["warnings"]
    assert len(warnings) == 2 and "Bohr" in warnings[0] and "Hartree" in warnings[1]


def test_same_output_twice_and_unwritable_outputs_are_refused(tmp_path):
    source = tmp_path / "s.h5"
    _fill(DatasetStore(source), np.random.default_rng(9))
    twice = tmp_path / "y.h5"
    with pytest.raises(InputError, match="given twice"):
        split(source, [twice, twice], [0.5, 0.5])
    store = DatasetStore(twice)
    with store.transaction():  # the same store locked twice by one process: an error, not a hang
        with pytest.raises(InputError, match="already being written by this process"):
            DatasetStore(twice).append("water", [8, 1, 1], WATER[None], [-76.4])
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write there"):
        open_output(blocker / "out.h5")
    with pytest.raises(InputError, match="cannot write there"):
        merge([source], blocker / "out.h5")
