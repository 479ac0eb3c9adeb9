"""The small-data check of issue 12: does ``anif train`` with default settings learn from the
data of an early active-learning cycle?

12 small CHNO molecules x 64 displaced conformers (768 structures) labelled by the released
ANI-1x (anif.labeling.teacher), then exactly

    anif train --data train.h5 --out MODEL --members 2 --arch small

(default settings: split by conformer, forces in the loss, at most 300 epochs), timed; then the
ensemble's energy RMSE on new conformers of the same molecules (--test-per-molecule per
molecule) against the self-energy fit of the training data. Target: at most 0.2 x the
self-energy fit, in under 5 minutes on 2 cores (the load average is printed: the machine may
be shared).

Usage: python scripts/check_small_data.py [--out runs/check_small_data] [--seed 1]
Needs TORCHANI_DATA_DIR pointing at the ANI-1x networks (the teacher).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import numpy as np  # noqa: E402

from anif.models.ensemble import evaluate, load_model  # noqa: E402
from anif.labeling.teacher import write_teacher_data  # noqa: E402
from anif.training.data import element_counts, fit_self_energies, read_conformers  # noqa: E402
from anif.units import HARTREE_TO_KCAL_MOL  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/check_small_data"))
    parser.add_argument("--conformers", type=int, default=64, help="training conformers per molecule")
    parser.add_argument("--test-per-molecule", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    train_file, test_file, model = args.out / "train.h5", args.out / "test.h5", args.out / "model"
    write_teacher_data(train_file, args.conformers, seed=args.seed)
    write_teacher_data(test_file, args.test_per_molecule, seed=args.seed + 1000)
    command = [sys.executable, "-m", "anif", "train", "--data", str(train_file), "--out", str(model),
               "--members", "2", "--arch", "small"]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]

    train, test = read_conformers([train_file]), read_conformers([test_file])
    pred = evaluate(load_model(str(model)), test.species, test.coordinates, forces=False).energy
    baseline = element_counts(test.species) @ fit_self_energies(train.species, train.energies)
    err = (pred - test.energies) * HARTREE_TO_KCAL_MOL
    rmse = float(np.sqrt(np.mean(err**2)))
    base = float(np.sqrt(np.mean(((baseline - test.energies) * HARTREE_TO_KCAL_MOL) ** 2)))
    spec = json.loads((model / "model.json").read_text())
    epochs = [json.loads((model / f"member_{i}_summary.json").read_text())["epochs"] for i in range(2)]
    result = {
        "command": " ".join(command[1:]),
        "train_conformers": len(train),
        "test_conformers": len(test),
        "wall_seconds": wall,
        "load_average_before_after": [load_before, load_after],
        "cores": os.cpu_count(),
        "epochs": epochs,
        "member_valid_rmse_kcal_mol": spec["member_valid_rmse_kcal_mol"],
        "test_rmse_kcal_mol": rmse,
        "test_median_abs_error_kcal_mol": float(np.median(np.abs(err))),
        "self_energy_fit_test_rmse_kcal_mol": base,
        "ratio": rmse / base,
    }
    (args.out / "check_small_data.json").write_text(json.dumps(result, indent=2))
    print(f"anif train ({len(train)} conformers, {epochs} epochs): {wall:.0f} s wall on {os.cpu_count()} cores "
          f"(load {load_before:.1f} -> {load_after:.1f}); held-out RMSE on {len(test)} new conformers "
          f"{rmse:.3f} kcal/mol (median |error| {result['test_median_abs_error_kcal_mol']:.3f}) vs self-energy fit "
          f"{base:.3f}: {rmse / base:.3f} x (target <= 0.2 x, < 300 s)")


if __name__ == "__main__":
    main()
