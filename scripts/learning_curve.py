"""Learning curves: held-out energy RMSE against training-set size, anif train from scratch.

The random-sampling baseline the active-learning loop is measured against. Two data sets:

1. teacher: displaced conformers (anif.labeling.teacher) of 12 small CHNO molecules labelled by the
   released ANI-1x; nested random training sets of --sizes conformers from one pool, a fixed test
   set of fresh conformers of the same molecules;
2. S66x8 (COMP6, wB97X/6-31G(d), read with anif.datasets.comp6: forces = -stored gradient): split by
   dimer, --s66-test-fraction of the 66 dimers held out for the test; nested random training
   sets of --s66-sizes conformers from the other dimers' conformers. The test measures transfer
   to dimers never seen.

Every point: a --members ensemble (--arch small, default settings: split by conformer, forces
in the loss) with max epochs = clip(--budget / training conformers, 30, 300), so small sets
train long and large ones still finish, and --lr-patience scaled with it (epochs / 30, 2 to 10
epochs) so that the learning rate still anneals within the shorter runs; its ensemble-mean
RMSE on the test set, beside the
self-energy fit (least squares on the same training set). Writes learning_curve.json and
learning_curve.png to --out.

Usage: python scripts/learning_curve.py [--out runs/learning_curve] [--sizes 250 500 1000 2000 4000]
       [--s66 ../shared/data/comp6/s66x8_wb97x6-31gd.h5] [--budget 150000]
Needs TORCHANI_DATA_DIR pointing at the ANI-1x networks (the teacher).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import numpy as np  # noqa: E402

from anif.datasets.store import DatasetStore  # noqa: E402
from anif.models.ensemble import evaluate, load_model  # noqa: E402
from anif.training import TrainSettings, train_ensemble  # noqa: E402
from anif.training.data import element_counts, fit_self_energies, read_conformers  # noqa: E402
from anif.units import HARTREE_TO_KCAL_MOL  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"


def write_subset(records: list[dict], picks: np.ndarray, offsets: np.ndarray, path: Path) -> None:
    """Write the conformers ``picks`` (global indices over ``records``) to an ANI-format HDF5."""
    store = DatasetStore(path)
    with store.transaction():
        for k, rec in enumerate(records):
            local = np.sort(picks[(picks >= offsets[k]) & (picks < offsets[k + 1])] - offsets[k])
            if len(local):
                store.append(rec["name"], rec["species"], rec["coordinates"][local], rec["energies"][local],
                             rec["forces"][local], method=rec["method"])


def records_of(path: Path) -> list[dict]:
    """Molecules of an anif-written HDF5 as append() arguments."""
    return [
        {"name": name, "species": r["species"], "coordinates": r["coordinates"], "energies": r["energies"],
         "forces": r["forces"], "method": str(r["method"][0])}
        for name, r in DatasetStore(path, "r")
    ]


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2))) * HARTREE_TO_KCAL_MOL


def curve(label: str, pool: list[dict], test_file: Path, sizes: list[int], args, tmp: Path) -> list[dict]:
    """Train on nested random subsets of ``pool``; held-out RMSE on ``test_file`` per size."""
    offsets = np.concatenate([[0], np.cumsum([len(r["energies"]) for r in pool])])
    order = np.random.default_rng(args.seed).permutation(offsets[-1])
    test = read_conformers([test_file])
    points = []
    for n in sizes:
        if n > offsets[-1]:
            print(f"{label}: skipping {n} (the pool holds {offsets[-1]} conformers)")
            continue
        train_file, out = tmp / f"{label}_{n}.h5", tmp / f"{label}_{n}_model"
        write_subset(pool, order[:n], offsets, train_file)
        train = read_conformers([train_file])
        epochs = int(np.clip(round(args.budget / (n * (1 - 1 / 5))), 30, 300))
        lr_patience = int(np.clip(round(epochs / 30), 2, TrainSettings.lr_patience))
        settings = TrainSettings(members=args.members, arch=args.arch, max_epochs=epochs, lr_patience=lr_patience,
                                 seed=args.seed)
        t0 = time.perf_counter()
        result = train_ensemble([train_file], out, settings, jobs=0, progress=False)
        seconds = time.perf_counter() - t0
        pred = evaluate(load_model(str(out)), test.species, test.coordinates, forces=False).energy
        sae = fit_self_energies(train.species, train.energies)
        point = {
            "set": label,
            "train_conformers": n,
            "train_molecules": len(train.group_names),
            "max_epochs": epochs,
            "lr_patience": lr_patience,
            "epochs": [m.epochs for m in result.members],
            "seconds": seconds,
            "test_conformers": len(test),
            "test_rmse_kcal_mol": rmse(pred, test.energies),
            "test_mae_kcal_mol": float(np.mean(np.abs(pred - test.energies))) * HARTREE_TO_KCAL_MOL,
            "self_energy_fit_test_rmse_kcal_mol": rmse(element_counts(test.species) @ sae, test.energies),
            "member_valid_rmse_kcal_mol": result.valid_rmse_kcal_mol,
        }
        points.append(point)
        print(f"{label:7s} {n:5d} conformers: test RMSE {point['test_rmse_kcal_mol']:7.3f} kcal/mol "
              f"(MAE {point['test_mae_kcal_mol']:.3f}; self-energy fit {point['self_energy_fit_test_rmse_kcal_mol']:.3f}), "
              f"validation {', '.join(f'{v:.3f}' for v in point['member_valid_rmse_kcal_mol'])}, "
              f"{point['epochs']} epochs (lr patience {lr_patience}), {seconds:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
        shutil.rmtree(out)
    return points


def s66_pool(path: Path, test_fraction: float, seed: int, tmp: Path) -> tuple[list[dict], Path]:
    """S66x8 molecules split by dimer: (training pool, test file)."""
    from anif.datasets.comp6 import read_comp6_file

    molecules = read_comp6_file(path)
    records = [
        {"name": m.name.replace("/", "_"), "species": m.species, "coordinates": m.coordinates,
         "energies": m.energies, "forces": m.forces, "method": "wb97x/6-31g*"}
        for m in molecules
    ]
    order = np.random.default_rng(seed).permutation(len(records))
    n_test = int(round(test_fraction * len(records)))
    test = [records[i] for i in order[:n_test]]
    test_file = tmp / "s66_test.h5"
    offsets = np.concatenate([[0], np.cumsum([len(r["energies"]) for r in test])])
    write_subset(test, np.arange(offsets[-1]), offsets, test_file)
    return [records[i] for i in order[n_test:]], test_file


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    sets = list(dict.fromkeys(p["set"] for p in points))
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False)
    for ax, name in zip(axes[0], sets):
        pts = [p for p in points if p["set"] == name]
        n = [p["train_conformers"] for p in pts]
        ax.loglog(n, [p["test_rmse_kcal_mol"] for p in pts], "o-", label="anif train (ensemble mean)")
        ax.loglog(n, [p["self_energy_fit_test_rmse_kcal_mol"] for p in pts], "s--", color="grey",
                  label="self-energy fit")
        ax.set_xticks(n, [str(x) for x in n])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training conformers")
        ax.set_ylabel("held-out energy RMSE (kcal/mol)")
        ax.set_title(f"{name}: test {pts[0]['test_conformers']} conformers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/learning_curve"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000])
    parser.add_argument("--test-per-molecule", type=int, default=32)
    parser.add_argument("--s66", type=Path, default=SHARED / "data/comp6/s66x8_wb97x6-31gd.h5",
                        help="COMP6 S66x8 file ('' to skip)")
    parser.add_argument("--s66-sizes", type=int, nargs="+", default=[100, 200, 424])
    parser.add_argument("--s66-test-fraction", type=float, default=0.2)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--arch", default="small")
    parser.add_argument("--budget", type=float, default=150_000, help="conformer-epochs per member")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    from anif.labeling.teacher import SMALL_MOLECULES, write_teacher_data

    t0 = time.perf_counter()
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", flush=True)
    try:
        per_molecule = -(-max(args.sizes) // len(SMALL_MOLECULES))
        write_teacher_data(tmp / "pool.h5", per_molecule, seed=args.seed + 1)
        write_teacher_data(tmp / "test.h5", args.test_per_molecule, seed=args.seed + 2)
        points = curve("teacher", records_of(tmp / "pool.h5"), tmp / "test.h5", args.sizes, args, tmp)
        if str(args.s66) and args.s66.is_file():
            pool, test_file = s66_pool(args.s66, args.s66_test_fraction, args.seed, tmp)
            points += curve("S66x8", pool, test_file, args.s66_sizes, args, tmp)
        (args.out / "learning_curve.json").write_text(json.dumps(
            {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
             "points": points, "seconds": time.perf_counter() - t0}, indent=2))
        plot(points, args.out / "learning_curve.png")
    finally:
        shutil.rmtree(tmp)
    print(f"wrote {args.out / 'learning_curve.json'} and {args.out / 'learning_curve.png'} "
          f"({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
