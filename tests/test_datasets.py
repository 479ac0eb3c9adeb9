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

from anif.datasets import DatasetStore, merge, split, summary
from anif.errors import InputError

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
    from anif.datasets import DatasetStore
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
