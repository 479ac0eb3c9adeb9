"""Active learning against random selection at laptop scale (the paper's claim, Smith et al. 2018).

Both arms run the same campaign (anif.al) with ANI-1x as the teacher oracle: the same bootstrap,
the same molecules, the same sampler (DNMS with every diversity-selected conformer kept as a
candidate, rho recorded), the same label budget per cycle. Only the selection differs: AL labels
the candidates with the highest rho above rho_hat, random labels candidates drawn uniformly from
the same pool. Held-out error (energy RMSE on teacher-labelled conformers at the test
temperature) against the number of labels, mean and standard deviation over seeds, as a PNG and
JSON. The goal: AL reaches random's final held-out error with at most 1/3 of its labels.

    TORCHANI_DATA_DIR=../shared/torchani .venv/bin/python scripts/al_vs_random.py --out runs/al_vs_random

Conformational cycles only (no configurational search): the comparison is about which
conformers get labelled, on a fixed set of molecules.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

MOLECULES = ["C", "N", "O", "CC", "CO", "CN", "C=O", "C=C", "C#N", "CCO", "CC=O", "CCN", "OC=O", "NC=O", "COC"]


def campaign_config(seed: int, select: str, args) -> dict:
    return {
        "campaign": {"seed": seed, "oracle": "model:ani1x"},
        "bootstrap": {"smiles": MOLECULES, "conformers": args.bootstrap_conformers},
        "search": {"gdb11": False},
        "conformational": {"samplers": ["dnms"], "patience": 10**6},
        "dnms": {"pool": 4 * args.keep, "keep": args.keep, "temperature": args.temperature, "min_rmsd": 0.02},
        "qbc": {"rho_hat": args.rho_hat, "select": select, "prefilter": False, "max_per_cycle": args.budget},
        "training": {"members": args.members, "folds": args.members, "arch": "small", "max_epochs": args.epochs,
                     "jobs": 1},
        "stop": {"max_cycles": args.cycles, "patience": 10**6},
        "test_sets": {"held_out": {"smiles": MOLECULES, "conformers": args.test_conformers,
                                   "temperature": args.test_temperature}},
    }


def run_arm(seed: int, select: str, args) -> list[tuple[int, float]]:
    """(labels, held-out E RMSE) per cycle of one campaign."""
    from anif.al import parse_config, run_campaign

    folder = args.out / f"{select}_seed{seed}"
    config = parse_config(campaign_config(seed, select, args), Path.cwd(), f"{select} seed {seed}")
    status = run_campaign(config, folder, workers=0, progress=False)
    return [(c["dataset_size"], c["test_rmse_kcal_mol"]["held_out"]) for c in status["cycles"]]


def labels_to_reach(curve_labels: np.ndarray, curve_error: np.ndarray, target: float) -> float:
    """Labels at which a (mean) learning curve first reaches ``target`` (log-log interpolation); inf if never."""
    for i in range(len(curve_error)):
        if curve_error[i] <= target:
            if i == 0:
                return float(curve_labels[0])
            x0, x1 = np.log(curve_labels[i - 1]), np.log(curve_labels[i])
            y0, y1 = np.log(curve_error[i - 1]), np.log(curve_error[i])
            return float(np.exp(x0 + (np.log(target) - y0) * (x1 - x0) / (y1 - y0)))
    return math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/al_vs_random"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--budget", type=int, default=24, help="labels per cycle (both arms)")
    parser.add_argument("--bootstrap-conformers", type=int, default=2)
    parser.add_argument("--keep", type=int, default=24, help="DNMS candidates per molecule and cycle")
    parser.add_argument("--temperature", type=float, default=600.0, help="DNMS temperature of the candidates (K)")
    parser.add_argument("--test-conformers", type=int, default=12)
    parser.add_argument("--test-temperature", type=float, default=600.0)
    parser.add_argument("--rho-hat", type=float, default=0.0, help="AL labels rho > rho_hat, highest first")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    curves = {arm: [run_arm(seed, arm, args) for seed in args.seeds] for arm in ("rho", "random")}
    seconds = time.perf_counter() - start
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "molecules": MOLECULES, "wall_s": seconds, "arms": {}}
    for arm, runs in curves.items():
        labels = np.array([[n for n, _ in run] for run in runs], dtype=float)
        errors = np.array([[e for _, e in run] for run in runs])
        logs = np.log(errors)
        result["arms"][arm] = {"labels": labels.mean(0).tolist(), "rmse_geomean": np.exp(logs.mean(0)).tolist(),
                               "rmse_geostd": np.exp(logs.std(0)).tolist(), "per_seed": errors.tolist()}
    al, rnd = result["arms"]["rho"], result["arms"]["random"]
    labels = np.array(al["labels"])
    for name, curve in (("geomean", lambda a: np.array(a["rmse_geomean"])),
                        ("median", lambda a: np.median(np.array(a["per_seed"]), axis=0))):
        target = float(curve(rnd)[-1])
        needed = labels_to_reach(labels, curve(al), target)
        result[name] = {"random_final_rmse": target, "random_final_labels": rnd["labels"][-1],
                        "al_labels_to_reach_it": needed, "label_ratio": needed / rnd["labels"][-1]}
    result["per_seed_label_ratio"] = [
        labels_to_reach(labels, np.array(a), b[-1]) / rnd["labels"][-1] for a, b in zip(al["per_seed"], rnd["per_seed"])]
    result["goal_met"] = max(result["median"]["label_ratio"], result["geomean"]["label_ratio"]) <= 1.0 / 3.0
    (args.out / "al_vs_random.json").write_text(json.dumps(result, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=150)
    for arm, label, color in (("rho", "AL (highest ρ)", "tab:blue"), ("random", "random", "tab:orange")):
        a = result["arms"][arm]
        g, f = np.array(a["rmse_geomean"]), np.array(a["rmse_geostd"])
        ax.errorbar(a["labels"], g, yerr=[g - g / f, g * f - g], marker="o", capsize=3, color=color,
                    label=f"{label}: geometric mean ×/÷ geometric std, {len(args.seeds)} seeds")
        for run in a["per_seed"]:
            ax.plot(a["labels"], run, color=color, lw=0.6, alpha=0.5)
    ax.axhline(result["geomean"]["random_final_rmse"], color="0.5", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("labels (teacher: ANI-1x)")
    ax.set_ylabel("held-out energy RMSE (kcal/mol)")
    ax.set_title(f"AL reaches random's final error at {result['geomean']['label_ratio']:.2f}x (geometric mean), "
                 f"{result['median']['label_ratio']:.2f}x (median) its labels", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "al_vs_random.png")
    summary = {k: result[k] for k in ("geomean", "median", "per_seed_label_ratio", "goal_met", "wall_s")}
    print(json.dumps(summary, indent=2))
    for arm in ("rho", "random"):
        a = result["arms"][arm]
        print(arm, " ".join(f"{n:.0f}:{m:.3f}" for n, m in zip(a["labels"], a["rmse_geomean"])))
    print(f"plot: {args.out / 'al_vs_random.png'}")


if __name__ == "__main__":
    main()
