"""Does active learning pay for itself? QBC against random selection, the paper's Figs. 4 and 5 at
laptop scale (Smith et al., J. Chem. Phys. 148, 241733, 2018), with the ANI-1x teacher as the oracle.

Per seed, two campaigns (anif.al) from one config that differ only in ``[qbc] strategy``:

- pool: the shipped GDB-11-like set staged by size (``[search] size_stages``, up to 6 heavy atoms),
  the neutral dipeptides (a last stage admits the smallest) and random dimers of the sampling set;
- schedule: configurational and conformational cycles alternate (``[conformational] patience = 0``), the
  same in both arms: the test error never steers what a campaign samples;
- search: each configurational cycle scores ``molecules_per_cycle`` molecules and keeps 8 of them
  (``[search] keep``; QBC: of those with rho > rho_hat, random: of all), a uniform draw;
- samplers: DNMS, RTS and dimer boxes on the conformer sampling set, several times more candidates than
  the per-cycle label cap, which is the same in both arms;
- ``qbc``: label rho > rho_hat, highest rho first; ``random``: the same samplers keep every candidate
  (no rho prefilter) and the cap is filled uniformly at random;
- labels: ANI-1x (free), so the comparison is about selection only;
- test: the mini-COMP6 (data/mini_comp6.h5, scripts/build_mini_comp6.py): molecules larger than the
  GDB-like pool (drug-like, GDB-like 7-8 heavy atoms, tripeptides) sampled by MD at 300 and 600 K and by
  normal modes, plus dimers; E, dE and F errors as COMP6 defines them.

The figure of merit, ``label_ratio``: random's final mini-COMP6 energy RMSE is the target; the labels
QBC needs to reach it are found on QBC's learning curve (labels, E RMSE per cycle) by log-log linear
interpolation between the first cycle at or below the target and the one before it. Both curves are
taken as their running minimum (the best model a campaign has made so far: every cycle's model is kept),
so that a noisy last cycle does not make the target easy, or a lucky early one hard. The ratio is
those labels over random's final label count, per seed; the summary gives their geometric mean and
geometric standard deviation. A seed whose QBC curve never reaches the target counts at its lower
bound (QBC's final labels / random's) and is flagged (``reached``: false): the ratio is then "at
least" that. Below 1: QBC needs fewer labels; the paper's goal is at most 1/3.

    TORCHANI_DATA_DIR=../shared/torchani python scripts/al_vs_random.py --quick --out runs/avr_quick
    TORCHANI_DATA_DIR=../shared/torchani python scripts/al_vs_random.py --out runs/avr      # 3 seeds

Writes ``summary.json`` (label_ratio, seeds, qbc_final_rmse_kcal_mol, random_final_rmse_kcal_mol,
per-seed curves and ratios, where the labels went), ``fig4_error_vs_labels.png`` (E, dE, F RMSE against
labels, both strategies, every seed), ``fig5_where_labels_went.png`` (labels by sampler, by molecule
size, and their rho) and per seed the ``anif al report`` overlay (``plots_seedN/``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MINI_COMP6 = ROOT / "data" / "mini_comp6.h5"
STRATEGIES = ("qbc", "random")
TEST = "mini_comp6"
#: Changes to the QBC arm measured alone (``--ablation NAME``): each runs one more QBC campaign per seed
#: with the change and compares it with the same random campaign.
ABLATIONS = {
    "spread": {"qbc": {"spread": True}},  # diversity within a batch: round-robin over molecules
    "prefilter-off": {"qbc": {"prefilter": False}},  # samplers keep every candidate, selection filters
    "recalibrate": {"qbc": {"recalibrate": True}},  # rho_hat from Fig. 1's rule on the test set each cycle
    "uniform": {"qbc": {"order": "uniform"}},  # the paper's rule: any rho > rho_hat, a uniform draw under the cap
    "diverse": {"qbc": {"order": "diverse"}},  # the best rho of each k-means cluster in AEV space fills the cap
    "trust": {"qbc": {"upper_bound": 5.0}},  # a trust window: rho above 5 kcal/mol is more likely broken than informative
    "members-8": {"training": {"members": 8, "folds": 8}},  # a larger committee
    "forces": {"qbc": {"measure": "forces"}},  # score candidates by the members' force disagreement, not rho
}

#: (full, quick) settings.
SCALE = {
    "full": dict(seeds=3, cycles=6, bootstrap_molecules=12, bootstrap_conformers=8, cap=60, stages=[4, 6, 10],
                 search=64, keep=8, conformational=16, random_dimers=4, dnms_keep=16, rts_repeats=2, rts_ramp=0.5,
                 boxes=1, epochs=120, members=4),
    "quick": dict(seeds=1, cycles=3, bootstrap_molecules=10, bootstrap_conformers=8, cap=40, stages=[5, 10],
                  search=48, keep=8, conformational=12, random_dimers=2, dnms_keep=16, rts_repeats=1, rts_ramp=0.25,
                  boxes=1, epochs=60, members=4),
}


def campaign_config(seed: int, strategy: str, s: dict, test_file: Path, change: dict | None = None) -> dict:
    config = {
        "campaign": {"seed": seed, "oracle": "model:ani1x"},
        "bootstrap": {"molecules": s["bootstrap_molecules"], "max_heavy_atoms": 3, "conformers": s["bootstrap_conformers"]},
        "search": {"gdb11": True, "dipeptides": True, "random_dimers": s["random_dimers"],
                   "molecules_per_cycle": s["search"], "keep": s["keep"], "size_stages": s["stages"]},
        "conformational": {"samplers": ["dnms", "rts", "dimers"], "dimer_boxes": s["boxes"], "patience": 0,
                           "molecules_per_cycle": s["conformational"]},
        "dnms": {"pool": 4 * s["dnms_keep"], "keep": s["dnms_keep"], "temperature": 400.0},
        "rts": {"ramp_ps": s["rts_ramp"], "repeats": s["rts_repeats"]},
        "dimers": {"molecules": 8, "density": 0.4, "time_ps": 0.1, "interval": 25},
        "qbc": {"strategy": strategy, "max_per_cycle": s["cap"]},
        "training": {"members": s["members"], "folds": s["members"], "arch": "small", "max_epochs": s["epochs"],
                     "jobs": 1},
        "stop": {"max_cycles": s["cycles"], "patience": 10**6},
        "test_sets": {TEST: {"file": str(test_file)}},
    }
    for section, values in (change or {}).items():
        config[section].update(values)
    return config


def write_toml(data: dict, path: Path) -> None:
    """A minimal TOML writer for the config (strings, numbers, booleans, lists, one table level)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = []
    for section, body in data.items():
        if section == "test_sets":
            for name, t in body.items():
                lines += [f"[test_sets.{name}]", *(f"{k} = {value(v)}" for k, v in t.items()), ""]
            continue
        lines += [f"[{section}]", *(f"{k} = {value(v)}" for k, v in body.items()), ""]
    path.write_text("\n".join(lines))


def run_arm(seed: int, strategy: str, s: dict, out: Path, test_file: Path, ablation: str = "") -> Path:
    """Run (or resume) one campaign through ``anif al run``'s library entry; returns its folder."""
    from anif.al import load_config, run_campaign, write_report

    name = f"{strategy}-{ablation}" if ablation else strategy
    folder = out / f"{name}_seed{seed}"
    config_path = out / f"{name}_seed{seed}.toml"
    write_toml(campaign_config(seed, strategy, s, test_file, ABLATIONS.get(ablation)), config_path)
    run_campaign(load_config(config_path), folder, workers=0, progress=False)
    write_report(folder)
    return folder


def curve(folder: Path) -> list[dict]:
    """Per cycle: labels in the training set and the mini-COMP6 errors (from the ledger)."""
    from anif.al.ledger import Ledger

    ledger = Ledger(folder, create=False)
    try:
        sizes = {c.cycle: c.dataset_size for c in ledger.cycles()}
        metrics = [(cycle, m) for cycle, m in ledger.metrics() if m.test_set == TEST]
    finally:
        ledger.close()
    return [{"cycle": cycle, "labels": sizes[cycle], "e_rmse": m.e_rmse, "de_rmse": m.de_rmse, "f_rmse": m.f_rmse,
             "rho_spearman": m.rho_spearman, "force_spearman": m.force_spearman} for cycle, m in metrics]


def best_so_far(errors) -> list[float]:
    """The running minimum of a learning curve."""
    return [float(x) for x in np.minimum.accumulate(np.asarray(errors, dtype=float))]


def labels_to_reach(labels, errors, target: float) -> tuple[float, bool]:
    """Labels at which the curve first reaches ``target`` (log-log interpolation between the first point at or
    below it and the one before); (last labels, False) when it never does."""
    for i, e in enumerate(errors):
        if e <= target:
            if i == 0:
                return float(labels[0]), True
            x0, x1, y0, y1 = map(math.log, (labels[i - 1], labels[i], errors[i - 1], errors[i]))
            t = (math.log(target) - y0) / (y1 - y0) if y1 != y0 else 1.0
            return float(math.exp(x0 + t * (x1 - x0))), True
    return float(labels[-1]), False


def where_labels_went(folder: Path) -> dict:
    """The campaign's training labels after the bootstrap: by sampler, by heavy atoms (per molecule;
    dimers by their total), and their rho (kcal/mol, as scored when sampled)."""
    from anif.al.ledger import Ledger

    ledger = Ledger(folder, create=False)
    try:
        rows = [(r.sampler, r.numbers, r.rho, r.name) for r in ledger.train_labels_after(0)]
        first = ledger.cycle(1)
    finally:
        ledger.close()
    rho_hat = (first.rho_hat,) if first is not None else None
    by_sampler: dict[str, int] = {}
    by_size: dict[str, int] = {}
    rho = []
    for sampler, numbers, r, name in rows:
        by_sampler[sampler] = by_sampler.get(sampler, 0) + 1
        heavy = int((np.frombuffer(numbers, dtype=np.int64) > 1).sum()) if numbers else 0
        key = f"{'dimer ' if '+' in (name or '') else ''}{heavy}"
        by_size[key] = by_size.get(key, 0) + 1
        if r is not None:
            rho.append(r)
    rho = np.asarray(rho)
    q = lambda p: float(np.percentile(rho, p)) if len(rho) else None  # noqa: E731
    return {"labels": len(rows), "by_sampler": dict(sorted(by_sampler.items())),
            "by_heavy_atoms": dict(sorted(by_size.items(), key=lambda kv: (kv[0].startswith("dimer"), int(kv[0].split()[-1])))),
            "rho_kcal_mol": {"p10": q(10), "median": q(50), "p90": q(90),
                             "above_rho_hat": float((rho > rho_hat[0]).mean()) if len(rho) and rho_hat else None},
            "rho_values": [float(x) for x in rho]}


def geometric(values) -> tuple[float, float]:
    logs = np.log(np.asarray(values, dtype=float))
    return float(np.exp(logs.mean())), float(np.exp(logs.std()))


def plot_fig4(curves: dict, path: Path) -> Path:
    """E, dE and F against labels: one line per arm (qbc, random, then each ablation's QBC arm) and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    from anif.al.report import log_axes

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=150)
    colors = dict(zip(curves, ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown",
                               "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]))  # qbc, random, every ablation
    for ax, (key, label) in zip(axes, (("e_rmse", "E RMSE (kcal/mol)"), ("de_rmse", "dE RMSE (kcal/mol)"),
                                       ("f_rmse", "F RMSE (kcal/mol/Å)"))):
        for arm, by_seed in curves.items():
            for k, (seed, points) in enumerate(sorted(by_seed.items())):
                ax.plot([p["labels"] for p in points], [p[key] for p in points], "o-" if arm in STRATEGIES else "s--",
                        ms=3, color=colors[arm], alpha=0.9 if k == 0 else 0.5, label=arm if k == 0 else None)
        log_axes(ax)
        ax.set_xscale("linear")  # labels grow by the same cap per cycle
        ax.xaxis.set_minor_locator(NullLocator())  # the first seed's label counts are the ticks (seeds differ by a few)
        ax.set_xticks([p["labels"] for p in curves["qbc"][min(curves["qbc"])]])
        ax.set_xlabel("labels (teacher: ANI-1x)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("mini-COMP6 error against labels, QBC and random selection (one line per seed; dashed: QBC with "
                 "one change)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_fig5(where: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=150)
    width = 0.4
    for panel, ax in zip(("by_sampler", "by_heavy_atoms"), axes[:2]):
        keys = sorted({k for s in STRATEGIES for k in where[s][panel]},
                      key=lambda k: (k.startswith("dimer"), int(k.split()[-1]) if k.split()[-1].isdigit() else 0, k))
        x = np.arange(len(keys))
        for j, strategy in enumerate(STRATEGIES):
            total = max(1, where[strategy]["labels"])
            ax.bar(x + (j - 0.5) * width, [where[strategy][panel].get(k, 0) / total for k in keys], width, label=strategy)
        ax.set_xticks(x, keys, rotation=45, fontsize=7)
        ax.set_ylabel("fraction of labels (cycles > 0)")
        ax.set_title("by sampler" if panel == "by_sampler" else "by heavy atoms", fontsize=9)
        ax.legend(fontsize=7)
    for strategy in STRATEGIES:
        rho = np.clip(where[strategy]["rho_values"], 1e-3, None)
        if len(rho):
            axes[2].hist(np.log10(rho), bins=30, alpha=0.5, label=strategy)
    axes[2].set_xlabel("log10 ρ of the labelled structures (kcal/mol)")
    axes[2].set_title("QBC ρ when sampled", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.suptitle("Where the labels went (all seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def merge_where(parts: list[dict]) -> dict:
    out = {"labels": 0, "by_sampler": {}, "by_heavy_atoms": {}, "rho_values": []}
    for p in parts:
        out["labels"] += p["labels"]
        out["rho_values"] += p["rho_values"]
        for key in ("by_sampler", "by_heavy_atoms"):
            for k, v in p[key].items():
                out[key][k] = out[key].get(k, 0) + v
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="one seed, small settings (about 15 minutes on 2 cores)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default: 3, quick: 1)")
    parser.add_argument("--cycles", type=int, default=None, help="cycles after the bootstrap (default: 6, quick: 3)")
    parser.add_argument("--ablation", action="append", default=[], choices=sorted(ABLATIONS),
                        help="also run the QBC arm with this change and compare it with the same random arm")
    parser.add_argument("--test-file", type=Path, default=MINI_COMP6, help="labelled test set (default: the mini-COMP6)")
    args = parser.parse_args()
    s = dict(SCALE["quick" if args.quick else "full"])
    seeds = list(range(args.seeds or s["seeds"]))
    s["cycles"] = args.cycles or s["cycles"]
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.test_file.is_file():
        from build_mini_comp6 import build  # noqa: PLC0415 - the script next to this one

        args.test_file = args.out / "mini_comp6.h5"
        if not args.test_file.is_file():
            build(args.test_file)
    start = time.perf_counter()
    from anif.al import compare

    curves: dict = {k: {} for k in STRATEGIES}
    where: dict = {k: [] for k in STRATEGIES}
    per_seed = []
    for seed in seeds:
        folders = {}
        for strategy in STRATEGIES:
            t0 = time.perf_counter()
            folders[strategy] = run_arm(seed, strategy, s, args.out, args.test_file)
            curves[strategy][seed] = curve(folders[strategy])
            where[strategy].append(where_labels_went(folders[strategy]))
            print(f"seed {seed} {strategy}: " + ", ".join(f"{p['labels']}:{p['e_rmse']:.2f}" for p in curves[strategy][seed])
                  + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
        compare([folders["qbc"], folders["random"]], args.out / f"plots_seed{seed}")
        q, r = curves["qbc"][seed], curves["random"][seed]
        target = best_so_far([p["e_rmse"] for p in r])[-1]
        needed, reached = labels_to_reach([p["labels"] for p in q], best_so_far([p["e_rmse"] for p in q]), target)
        by_quantity = {}
        for key in ("e_rmse", "de_rmse", "f_rmse"):  # the same measure on dE and F (E is the figure of merit)
            n, ok = labels_to_reach([p["labels"] for p in q], best_so_far([p[key] for p in q]),
                                    best_so_far([p[key] for p in r])[-1])
            by_quantity[key] = {"label_ratio": n / r[-1]["labels"], "reached": ok}
        per_seed.append({"seed": seed, "label_ratio": needed / r[-1]["labels"], "reached": reached,
                         "by_quantity": by_quantity,
                         "qbc_labels_needed": needed, "random_final_labels": r[-1]["labels"],
                         "qbc_final_labels": q[-1]["labels"], "qbc_final_rmse_kcal_mol": q[-1]["e_rmse"],
                         "random_final_rmse_kcal_mol": r[-1]["e_rmse"],
                         "qbc_best_rmse_kcal_mol": best_so_far([p["e_rmse"] for p in q])[-1],
                         "random_best_rmse_kcal_mol": target})
    ablations = {}
    for name in args.ablation:
        rows = []
        for seed in seeds:
            folder = run_arm(seed, "qbc", s, args.out, args.test_file, name)
            points, r = curve(folder), curves["random"][seed]
            needed, reached = labels_to_reach([p["labels"] for p in points], best_so_far([p["e_rmse"] for p in points]),
                                              best_so_far([p["e_rmse"] for p in r])[-1])
            rows.append({"seed": seed, "label_ratio": needed / r[-1]["labels"], "reached": reached,
                         "final_rmse_kcal_mol": points[-1]["e_rmse"], "curve": points,
                         "where_labels_went": {k: v for k, v in where_labels_went(folder).items() if k != "rho_values"}})
            print(f"seed {seed} qbc-{name}: " + ", ".join(f"{p['labels']}:{p['e_rmse']:.2f}" for p in points), flush=True)
        ablations[name] = {"change": ABLATIONS[name], "label_ratio": geometric([x["label_ratio"] for x in rows])[0],
                           "final_rmse_kcal_mol": geometric([x["final_rmse_kcal_mol"] for x in rows])[0],
                           "per_seed": rows}
    ratio, spread = geometric([p["label_ratio"] for p in per_seed])
    merged = {k: merge_where(where[k]) for k in STRATEGIES}
    arms = curves | {f"qbc-{name}": {x["seed"]: x["curve"] for x in a["per_seed"]} for name, a in ablations.items()}
    figures = [plot_fig4(arms, args.out / "fig4_error_vs_labels.png"),
               plot_fig5(merged, args.out / "fig5_where_labels_went.png")]
    summary = {
        "label_ratio": ratio,
        "label_ratio_geometric_std": spread,
        "label_ratio_is_lower_bound": not all(p["reached"] for p in per_seed),
        "goal_met": ratio <= 1 / 3 and all(p["reached"] for p in per_seed),
        "seeds": seeds,
        "per_seed": per_seed,
        "qbc_final_rmse_kcal_mol": geometric([p["qbc_final_rmse_kcal_mol"] for p in per_seed])[0],
        "random_final_rmse_kcal_mol": geometric([p["random_final_rmse_kcal_mol"] for p in per_seed])[0],
        "qbc_best_rmse_kcal_mol": geometric([p["qbc_best_rmse_kcal_mol"] for p in per_seed])[0],
        "random_best_rmse_kcal_mol": geometric([p["random_best_rmse_kcal_mol"] for p in per_seed])[0],
        "curves": {k: {str(seed): v for seed, v in c.items()} for k, c in curves.items()},
        "where_labels_went": {k: {kk: vv for kk, vv in merged[k].items() if kk != "rho_values"}
                              | {"rho_kcal_mol": _quantiles(merged[k]["rho_values"])} for k in STRATEGIES},
        "ablations": ablations,
        "settings": {"scale": "quick" if args.quick else "full", **s, "test_file": str(args.test_file)},
        "figures": [str(p) for p in figures],
        "wall_s": time.perf_counter() - start,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("label_ratio", "label_ratio_geometric_std", "label_ratio_is_lower_bound",
                                              "goal_met", "seeds", "qbc_final_rmse_kcal_mol",
                                              "random_final_rmse_kcal_mol", "qbc_best_rmse_kcal_mol",
                                              "random_best_rmse_kcal_mol", "wall_s")}, indent=2))


def _quantiles(values) -> dict:
    v = np.asarray(values, dtype=float)
    if not len(v):
        return {}
    return {"p10": float(np.percentile(v, 10)), "median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
            "n": int(len(v))}


if __name__ == "__main__":
    main()
