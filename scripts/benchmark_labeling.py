"""Labels per hour of `anif label` at wB97X/6-31G(d): 1 vs 2 local workers, exact vs density-fitted.

A fixed set of small molecules (RDKit ETKDG + UFF, seed 0) is labelled from scratch in each
configuration through :func:`anif.labeling.label_file` (Dask LocalCluster start-up and
label-by-label HDF5 commits included). Prints a table, writes CSV and a PNG bar chart.

    python scripts/benchmark_labeling.py --out-dir bench_labeling
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from anif.distributed import available_cores  # noqa: E402
from anif.labeling import Level, label_file  # noqa: E402
from anif.structures import from_smiles, write_xyz  # noqa: E402

#: water, methane, ammonia, methanol, formaldehyde, ethanol, acetaldehyde, methylamine
MOLECULES = ("O", "C", "N", "CO", "C=O", "CCO", "CC=O", "CN")


def run(molecules, workers: int, density_fit: bool, tmp: Path) -> dict:
    structures = [from_smiles(s, seed=0) for s in molecules]
    xyz = tmp / "in.xyz"
    write_xyz(structures, xyz)
    out = tmp / f"w{workers}_df{int(density_fit)}.h5"
    cores = available_cores()
    start = time.perf_counter()
    summary = label_file(xyz, out, Level(density_fit=density_fit), workers=workers,
                         threads=max(1, cores // workers))
    wall = time.perf_counter() - start
    if summary.failed:
        raise SystemExit(f"{summary.failed} labels failed in the benchmark ({out.with_suffix('.failed.jsonl')})")
    return {
        "workers": workers,
        "threads_per_worker": max(1, cores // workers),
        "density_fit": int(density_fit),
        "labels": summary.labelled,
        "wall_s": round(wall, 2),
        "labels_per_hour": round(3600.0 * summary.labelled / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("bench_labeling"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for density_fit in (False, True):
            for workers in args.workers:
                rows.append(run(MOLECULES, workers, density_fit, Path(tmp)))
                print(rows[-1], flush=True)
    with open(args.out_dir / "labeling_benchmark.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{len(MOLECULES)} molecules ({', '.join(MOLECULES)}), wB97X/6-31G(d), {available_cores()} cores")
    print(f"{'workers':>7} {'threads':>7} {'DF':>3} {'wall s':>8} {'labels/h':>9}")
    for r in rows:
        print(f"{r['workers']:>7} {r['threads_per_worker']:>7} {'yes' if r['density_fit'] else 'no':>3} "
              f"{r['wall_s']:>8.1f} {r['labels_per_hour']:>9.1f}")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = [f"{r['workers']}w x {r['threads_per_worker']}t\n{'DF' if r['density_fit'] else 'exact'}" for r in rows]
    ax.bar(names, [r["labels_per_hour"] for r in rows], color=["C0" if not r["density_fit"] else "C1" for r in rows])
    ax.set_ylabel("labels per hour")
    ax.set_title("anif label, wB97X/6-31G(d), small molecules")
    fig.tight_layout()
    fig.savefig(args.out_dir / "labeling_benchmark.png", dpi=120)
    print(f"wrote {args.out_dir / 'labeling_benchmark.csv'} and {args.out_dir / 'labeling_benchmark.png'}")


if __name__ == "__main__":
    main()
