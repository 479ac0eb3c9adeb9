"""Fine-tuning ANI-1x against the number of labels: how many does data/al_finetune.toml's goal need?

The molecules of data/al_finetune.toml. A pool of frames of ANI-1x Langevin MD and a held-out set of
frames of other MD runs (another seed), both labelled by PySCF at wB97X/6-31G(d) with `anif sample md`
and `anif label` (kept in --out: a rerun reuses them and only trains). Then the 8 released members are
fine-tuned, each on its own fold, on the first K labelled frames of each molecule (K per --sizes), once
per --recipe LR:EPOCHS, and scored on the held-out frames beside ANI-1x itself. Writes
finetune_curve.json and finetune_curve.png (energy and force RMSE against labels) to --out.

Usage: python scripts/finetune_curve.py [--out runs/finetune_curve] [--sizes 13 20 30]
       [--recipe 3e-5:60 --recipe 1e-4:150] [--workers 2]
The first run takes about an hour on 2 cores, most of it the 160 PySCF labels; later runs ~10 min.
Needs TORCHANI_DATA_DIR pointing at the ANI-1x networks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import records_of, write_subset  # noqa: E402

from anif.accuracy import compute_metrics, predict  # noqa: E402
from anif.datasets.comp6 import read_comp6_file  # noqa: E402
from anif.models.ensemble import load_model  # noqa: E402
from anif.training import TrainSettings, train_ensemble  # noqa: E402

SMILES = ["CCO", "NCC(=O)O", "CC(=O)O", "CC(=O)NC"]  # data/al_finetune.toml's molecules


def labelled_frames(out: Path, name: str, smiles: list[str], frames: int, seed: int, args) -> Path:
    """``name``_labels.h5: ``frames`` MD frames per molecule (0.5 ps apart), labelled by PySCF."""
    candidates, labels = out / f"{name}.h5", out / f"{name}_labels.h5"
    anif = [sys.executable, "-m", "anif"]
    if not candidates.exists():
        subprocess.run(anif + ["sample", "md", *[a for s in smiles for a in ("--smiles", s)], "--rho-hat", "0",
                               "--temperature", str(args.temperature), "--frames", str(frames), "--interval-ps", "0.5",
                               "--seed", str(seed), "--workers", str(args.workers), "--out", str(candidates)], check=True)
    subprocess.run(anif + ["label", "--input", str(candidates), "--out", str(labels), "--workers", str(args.workers),
                           "--threads", "1"], check=True)  # resumes: labels already there are kept
    return labels


def scores(model, test) -> tuple[float, float]:
    """(energy RMSE kcal/mol, force RMSE kcal/mol/A) of ``model`` on the molecules ``test``, counted as the
    campaign counts its test sets (float64 ensemble, anif.accuracy's metrics)."""
    m = compute_metrics(predict(model.double(), test, progress=False))["overall"]
    return m["E_rmse"], m["F_rmse"]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, unit, base in ((axes[0], "e_rmse", "kcal/mol", result["ani1x"]["e_rmse"]),
                                (axes[1], "f_rmse", "kcal/mol/A", result["ani1x"]["f_rmse"])):
        for recipe in dict.fromkeys(p["recipe"] for p in result["points"]):
            pts = [p for p in result["points"] if p["recipe"] == recipe]
            ax.plot([p["labels"] for p in pts], [p[key] for p in pts], "o-", label=f"fine-tuned, lr:epochs {recipe}")
        ax.axhline(base, color="grey", ls="--", label="ANI-1x")
        ax.axhline(0.5 * base, color="grey", ls=":", label="0.5 x ANI-1x (issue 19's goal)")
        ax.set_xlabel("training labels")
        ax.set_ylabel(f"held-out {'energy' if key == 'e_rmse' else 'force'} RMSE ({unit})")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"ANI-1x fine-tuned on PySCF labels of MD frames; test {result['test_frames']} frames of other runs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/finetune_curve"))
    parser.add_argument("--smiles", nargs="+", default=SMILES)
    parser.add_argument("--sizes", type=int, nargs="+", default=[13, 20, 30], help="labels per molecule")
    parser.add_argument("--recipe", action="append", help="LR:MAX_EPOCHS (default: 3e-5:60 and 1e-4:150)")
    parser.add_argument("--pool-frames", type=int, default=30, help="pool frames per molecule")
    parser.add_argument("--test-frames", type=int, default=10, help="held-out frames per molecule")
    parser.add_argument("--temperature", type=float, default=400.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and shuffling")
    args = parser.parse_args()
    recipes = [(float(lr), int(ep)) for lr, ep in (r.split(":") for r in (args.recipe or ["3e-5:60", "1e-4:150"]))]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pool = records_of(labelled_frames(args.out, "pool", args.smiles, args.pool_frames, 7, args))
    test = read_comp6_file(labelled_frames(args.out, "test", args.smiles, args.test_frames, 11, args))
    frames = sum(m.n_conformers for m in test)
    e, f = scores(load_model("ani1x"), test)
    result = {"ani1x": {"e_rmse": e, "f_rmse": f}, "test_frames": frames, "points": []}
    print(f"ANI-1x on {frames} held-out frames: E {e:.3f} kcal/mol, F {f:.3f} kcal/mol/A", flush=True)
    offsets = np.concatenate([[0], np.cumsum([len(r["energies"]) for r in pool])])
    with tempfile.TemporaryDirectory() as tmp:
        for lr, epochs in recipes:
            for k in args.sizes:
                picks = np.concatenate([np.arange(a, min(a + k, b)) for a, b in zip(offsets[:-1], offsets[1:])])
                train_file, model_dir = Path(tmp) / f"train_{k}.h5", Path(tmp) / f"model_{lr:g}_{epochs}_{k}"
                train_file.unlink(missing_ok=True)
                write_subset(pool, picks, offsets, train_file)
                settings = TrainSettings(members=8, folds=8, init="ani1x", lr=lr, max_epochs=epochs, seed=args.seed)
                start = time.perf_counter()
                train_ensemble([train_file], model_dir, settings, jobs=0, progress=False)
                e_k, f_k = scores(load_model(str(model_dir)), test)
                point = {"recipe": f"{lr:g}:{epochs}", "labels": len(picks), "e_rmse": e_k, "f_rmse": f_k,
                         "e_ratio": e_k / e, "f_ratio": f_k / f, "train_s": time.perf_counter() - start}
                result["points"].append(point)
                print(f"lr {lr:g}, {epochs} epochs, {len(picks):4d} labels: E {e_k:.3f} ({e_k / e:.2f}x ANI-1x), "
                      f"F {f_k:.3f} ({f_k / f:.2f}x), {point['train_s']:.0f} s", flush=True)
    (args.out / "finetune_curve.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "finetune_curve.png")
    print(f"wrote {args.out / 'finetune_curve.json'} and {args.out / 'finetune_curve.png'} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
