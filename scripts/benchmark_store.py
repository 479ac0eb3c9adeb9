"""Appends per second of the dataset store on a small and a large file, side by side.

Each file is a label store of synthetic 20-atom molecules (plausible Angstrom/Hartree numbers,
forces and the labeller's provenance columns), built in one transaction in a temporary folder
and deleted at the end. Then, alternating between the files in rounds, single-conformer
appends are timed the way ``anif label`` commits each label (group chosen under the lock,
duplicate re-check, fsync'ed commit), and ``group_for`` calls on a molecule the store holds.
The last column is what the earlier design paid per append: one copy of the whole file.

    python scripts/benchmark_store.py                       # 1 MB and 500 MB
    python scripts/benchmark_store.py --sizes-mb 1 100 --appends 20 --dir /scratch
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from anif.datasets.store import DatasetStore

ATOMS = 20
#: About this many bytes per stored conformer (coordinates, forces, species, strings, scalars).
BYTES_PER_CONFORMER = 2200
CONFORMERS_PER_MOLECULE = 250


def _molecule(rng, i: int):
    """Species and a plausible geometry: a chain of heavy atoms 1.5 A apart, hydrogens 1.1 A off them."""
    heavy = rng.choice([6, 7, 8], size=8, p=[0.7, 0.15, 0.15])
    species = np.concatenate([heavy, np.ones(ATOMS - 8, dtype=np.int64)])
    chain = np.stack([np.arange(8) * 1.5, 0.3 * (np.arange(8) % 2), np.zeros(8)], 1)
    hydrogens = chain[np.arange(ATOMS - 8) % 8] + [0, 0, 1.1] * np.where(np.arange(ATOMS - 8) < 8, 1, -1)[:, None]
    # the free-atom energies plus a binding energy of about 0.3 Ha: total energies in Hartree
    energy = -0.5 * (ATOMS - 8) - sum({6: 37.8, 7: 54.6, 8: 75.0}[int(z)] for z in heavy) - 0.3 - 1e-3 * (i % 100)
    return species, np.concatenate([chain, hydrogens]), energy


def _columns(n: int) -> dict:
    return {"method": "wb97x/6-31g*", "basis": "6-31g*", "basis_convention": "cartesian", "density_fit": 0,
            "grid": "75,302", "program": "benchmark", "scf_converged": 1, "scf_strategy": "diis",
            "scf_iterations": np.full(n, 12), "wall_time_s": np.full(n, 8.9), "host": "bench:1",
            "name": [f"m/{k}" for k in range(n)], "charge": 0, "multiplicity": 1}


def build(path: Path, megabytes: float, rng) -> DatasetStore:
    store = DatasetStore(path, "a", kind="labels")
    molecules = max(1, round(megabytes * 1e6 / BYTES_PER_CONFORMER / CONFORMERS_PER_MOLECULE))
    per = min(CONFORMERS_PER_MOLECULE, max(1, round(megabytes * 1e6 / BYTES_PER_CONFORMER)))
    with store.transaction():
        for i in range(molecules):
            species, xyz, energy = _molecule(rng, i)
            coords = xyz + rng.normal(scale=0.03, size=(per, ATOMS, 3))
            store.append(None, species, coords, energy + rng.normal(scale=1e-3, size=per),
                         rng.normal(scale=0.02, size=(per, ATOMS, 3)), **_columns(per))
    return store


def one_append(store: DatasetStore, rng, i: int) -> None:
    species, xyz, energy = _molecule(rng, i)
    store.append(None, species, xyz + rng.normal(scale=0.03, size=(1, ATOMS, 3)), [energy],
                 rng.normal(scale=0.02, size=(1, ATOMS, 3)), **_columns(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1.0, 500.0])
    parser.add_argument("--appends", type=int, default=40, help="timed appends per file")
    parser.add_argument("--rounds", type=int, default=4, help="alternations between the files")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the files (default: a temp folder)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="anif-bench-store-", dir=args.dir))
    try:
        rng = np.random.default_rng(0)
        stores = {}
        for mb in args.sizes_mb:
            start = time.perf_counter()
            stores[mb] = store = build(folder / f"store_{mb:g}mb.h5", mb, rng)
            for k in range(10):  # the first append after a build makes the second copy; then warm caches
                one_append(store, rng, 10**6 + k)
            size = store.path.stat().st_size / 1e6
            print(f"built {store.path.name}: {size:.1f} MB, {len(store)} molecules, {store.num_conformers()} "
                  f"conformers in {time.perf_counter() - start:.1f} s", flush=True)
        per_round = max(1, args.appends // args.rounds)
        rates = {mb: [] for mb in stores}
        lookups = {mb: [] for mb in stores}
        for r in range(args.rounds):
            for mb, store in stores.items():
                start = time.perf_counter()
                for k in range(per_round):
                    one_append(store, rng, 2 * 10**6 + r * per_round + k)
                rates[mb].append(per_round / (time.perf_counter() - start))
                fresh = DatasetStore(store.path, "r")  # group_for from a cold cache, as a new process sees it
                target = fresh.species(fresh.groups()[len(fresh) // 2])
                start = time.perf_counter()
                fresh.group_for(target)
                lookups[mb].append(time.perf_counter() - start)
        print(f"\n{'file':>10} {'MB':>8} {'conformers':>11} {'appends/s':>10} {'ms/append':>10} "
              f"{'group_for ms':>13} {'copy ms':>9}")
        for mb, store in stores.items():
            start = time.perf_counter()
            shutil.copyfile(store.path, folder / "copy.h5")
            copy = time.perf_counter() - start
            (folder / "copy.h5").unlink()
            rate = statistics.median(rates[mb])
            print(f"{mb:>8g}MB {store.path.stat().st_size / 1e6:>8.1f} {store.num_conformers():>11} {rate:>10.1f} "
                  f"{1e3 / rate:>10.1f} {1e3 * statistics.median(lookups[mb]):>13.2f} {1e3 * copy:>9.0f}")
        small, large = min(stores), max(stores)
        print(f"\nappends/s at {large:g} MB / at {small:g} MB: "
              f"{statistics.median(rates[large]) / statistics.median(rates[small]):.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
