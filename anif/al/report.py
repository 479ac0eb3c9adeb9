"""Where a campaign stands (``anif al status``) and its figures (``anif al report``).

:func:`status` returns the object ``anif al status --json`` prints: ``finished``,
``labels_total`` and one row per cycle (``cycle``, ``kind``, ``stage``, ``n_candidates``,
``n_selected``, ``n_labelled``, ``n_failed``, ``dataset_size``, ``test_rmse_kcal_mol`` keyed by
test set, ``wall_s``). ``history.json`` adds, per cycle, rho_hat, labels by sampler, the
search's counts, the model folder and notes, and ``baselines`` (the starting ensemble's and ANI-1x's
errors). Every cycle's metrics per test set hold E, dE and F errors and how rho ranks the errors
(``rho_spearman``, ``captured`` of ``n_bad``; :func:`anif.accuracy.qbc_ranking`) and how the members'
force disagreement ranks them (``force_spearman``, the measure of ``[qbc] measure = "forces"``); the report adds the
Spearman correlation's 95% bootstrap interval (``rho_spearman_ci95``) and the correlation a calibrated
committee would reach on the same structures (``rho_spearman_calibrated``,
:func:`anif.accuracy.metrics.calibrated_spearman`), and with several test sets both correlations over all
their structures at once (``cycles[].rho_spearman_pooled``, ``force_spearman_pooled``: Fig. 1 pools
structures near and far from the training data). :func:`write_report`
draws (PNG, with the numbers in ``plots/report.json``): test error against labels with the first
model's and the baselines' errors dashed (the paper's Fig. 5), E/dE/F per cycle on each test set,
rho (and the force disagreement) against the real error for the last cycle (Fig. 1), rho of the candidates per cycle, labels
by sampler per cycle, and where the wall time goes per cycle (:func:`plot_stage_times`:
``stage_times.png`` and ``.json``). :func:`compare` overlays several campaigns with the same test
sets (an A/B of ``[qbc] strategy``, say): one figure per quantity (E, dE, F RMSE against labels), a
table of the same numbers and ``comparison.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from ..outputs import atomic_write_text
from .ledger import Cycle, Ledger, Metrics

HISTORY = "history.json"
PLOTS = "plots"


def _cycle_row(ledger: Ledger, c: Cycle) -> dict:
    cycle = c.cycle
    n_candidates = ledger.count_train_candidates(cycle)
    if c.kind == "bootstrap":
        n_candidates += ledger.reduction_size()
    metrics = ledger.metrics_by_test_set(cycle)
    return {
        "cycle": cycle,
        "kind": c.kind,
        "stage": c.stage,
        "n_candidates": n_candidates,
        "n_selected": ledger.count_train_labels(cycle),
        "n_labelled": ledger.count_train_labels(cycle, "ok"),
        "n_failed": ledger.count_train_labels(cycle, "failed"),
        "dataset_size": int(c.dataset_size),
        "test_rmse_kcal_mol": {m.test_set: m.e_rmse for m in metrics},
        "rho_spearman": {m.test_set: m.rho_spearman for m in metrics},
        "force_spearman": {m.test_set: m.force_spearman for m in metrics},
        "wall_s": float(c.wall_s),
    }


def status(folder: str | Path, ledger: Optional[Ledger] = None) -> dict:
    """The campaign's state: ``finished``, ``labels_total``, ``cycles`` (see the module docstring)."""
    own = ledger is None
    ledger = ledger or Ledger(folder, create=False)
    try:
        cycles = ledger.cycles()
        finished = bool(ledger.get("stop_reason")) and bool(cycles) and cycles[-1].stage == "done"
        return {
            "finished": finished,
            "labels_total": ledger.labels_total(),
            "cycles": [_cycle_row(ledger, c) for c in cycles],
        }
    finally:
        if own:
            ledger.close()


def history(folder: str | Path, ledger: Ledger) -> dict:
    """Status plus, per cycle, rho_hat, labels by sampler, search counts, model, notes; and the stop reason."""
    out = status(folder, ledger)
    out["stop_reason"] = ledger.get("stop_reason")
    out["oracle"] = ledger.get("oracle")
    for row in out["cycles"]:
        cycle = row["cycle"]
        row["rho_hat"] = ledger.cycle(cycle).rho_hat
        row["labels_by_sampler"] = ledger.labels_by_sampler(cycle)
        row["search"] = ledger.search_counts(cycle)
        row["molecules_added"] = ledger.count_molecules(cycle, "train", "ok")
        model = ledger.model(cycle)
        row["model"] = model[0] if model else None
        row["note"] = model[1] if model else ""
        row["test_metrics"] = {m.test_set: _metrics(m) for _, m in ledger.metrics(cycle)}
    out["baselines"] = _baselines(ledger)
    out["strategy"] = strategy(ledger)
    return out


def strategy(ledger: Ledger) -> str:
    """The campaign's ``[qbc] strategy`` ("qbc" for campaigns from before the setting)."""
    config = ledger.get("config") or {}
    return config.get("settings", {}).get("qbc", {}).get("strategy", "qbc")


#: Per test set and model: errors (kcal/mol, kcal/mol/A) and how rho ranks them (see anif.al.ledger).
METRIC_COLUMNS = ("e_rmse", "e_mae", "de_rmse", "de_mae", "f_rmse", "f_mae", "n", "rho_spearman", "captured", "n_bad",
                  "force_spearman")


def _metrics(m: Metrics) -> dict:
    return {k: getattr(m, k) for k in METRIC_COLUMNS}


def _baselines(ledger: Ledger) -> dict:
    """{model: {test set: metrics}} of the starting ensemble ("start") and ANI-1x ("ani1x")."""
    out: dict = {}
    for model, m in ledger.baselines():
        out.setdefault(model, {})[m.test_set] = _metrics(m)
    return out


def _write_json(path: Path, data) -> None:
    from ..outputs import strict_json  # NaN/inf (undefined numbers) as null: valid JSON

    atomic_write_text(path, strict_json(data, default=_plain))


def _plain(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def write_history(folder: str | Path, ledger: Ledger) -> Path:
    path = Path(folder) / HISTORY
    _write_json(path, history(folder, ledger))
    return path


# ---- figures -------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, ax, path: Path, cycles, ylabel: str, title: str) -> Path:
    """Label a per-cycle plot and save it."""
    ax.set_xticks(cycles)
    ax.set_xlabel("cycle")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path


def report_data(ledger: Ledger) -> dict:
    """The numbers behind the figures."""
    cycles = ledger.cycles()
    metrics = ledger.metrics()
    sets = sorted({m.test_set for _, m in metrics})
    sizes = {c.cycle: c.dataset_size for c in cycles}
    errors = {cycle: ledger.test_errors(cycle) for cycle in sizes}
    spreads = _spearman_spreads(errors)
    return {
        "cycles": [{"cycle": c.cycle, "kind": c.kind, "rho_hat": c.rho_hat, "labels": c.dataset_size,
                    **_pooled_spearman(errors[c.cycle])} for c in cycles],
        "test_error_vs_labels": {
            s: [{"cycle": cycle, "labels": sizes[cycle], **_metrics(m), **spreads.get((cycle, s), {})}
                for cycle, m in metrics if m.test_set == s]
            for s in sets
        },
        "baselines": _baselines(ledger),
        "rho_vs_error_last_cycle": _rho_vs_error(ledger),
        "rho_candidates": ledger.candidate_rho(),
        "labels_by_sampler": {int(c): ledger.labels_by_sampler(c) for c in sizes},
    }


def _spearman_spreads(errors: dict) -> dict:
    """{(cycle, test set): {"rho_spearman_ci95": the rho-vs-error Spearman's 95% bootstrap interval,
    "rho_spearman_calibrated": what a calibrated committee's would be}} from each cycle's stored test errors."""
    from ..accuracy.metrics import calibrated_spearman, spearman_interval

    out = {}
    for cycle, rows in errors.items():
        sets: dict = {}
        for r in rows:
            sets.setdefault(r.test_set, []).append((r.rho, abs(r.error) / math.sqrt(r.n_atoms)))
        for name, rows in sets.items():
            rho, error = np.array(rows).T
            out[(cycle, name)] = {"rho_spearman_ci95": spearman_interval(rho, error),
                                  "rho_spearman_calibrated": calibrated_spearman(rho)}
    return out


def _pooled_spearman(rows: list) -> dict:
    """With several test sets among a cycle's stored test errors, the rank correlations over all their
    structures at once, as the paper's Fig. 1 pools near and far structures: {"rho_spearman_pooled",
    "force_spearman_pooled"} (None where undefined or, for the force disagreement, not stored)."""
    from ..accuracy.metrics import spearman_or_none

    if len({r.test_set for r in rows}) < 2:
        return {}
    error = np.array([abs(r.error) / math.sqrt(r.n_atoms) for r in rows])
    forces = None if any(r.force_spread is None for r in rows) else np.array([r.force_spread for r in rows])
    return {"rho_spearman_pooled": spearman_or_none(np.array([r.rho for r in rows]), error),
            "force_spearman_pooled": None if forces is None else spearman_or_none(forces, error)}


def _rho_vs_error(ledger: Ledger) -> dict:
    """The last evaluated cycle's test structures: rho and |error| / sqrt(N) (kcal/mol) and the force
    disagreement (kcal/mol/A; None in a ledger from before it), per test set."""
    last = ledger.last_tested_cycle()
    if last is None:
        return {}
    out: dict = {"cycle": int(last), "rho_hat": ledger.cycle(last).rho_hat, "sets": {}}
    for r in ledger.test_errors(last):
        d = out["sets"].setdefault(r.test_set, {"rho": [], "error_per_sqrt_atom": [], "force_spread": []})
        d["rho"].append(r.rho)
        d["error_per_sqrt_atom"].append(abs(r.error) / math.sqrt(r.n_atoms))
        d["force_spread"].append(r.force_spread)
    return out


def write_report(folder: str | Path) -> list[Path]:
    """Draw the campaign's figures into ``plots/``; returns the files written."""
    folder = Path(folder)
    ledger = Ledger(folder, create=False)
    try:
        data = report_data(ledger)
        write_history(folder, ledger)
    finally:
        ledger.close()
    out = folder / PLOTS
    out.mkdir(exist_ok=True)
    paths = [_plot_error_vs_labels(data, out / "error_vs_labels.png"), _plot_error_per_cycle(data, out / "error_per_cycle.png"),
             _plot_rho(data, out / "rho_per_cycle.png"), _plot_samplers(data, out / "labels_per_sampler.png"),
             _plot_rho_vs_error(data, out / "rho_vs_error.png")]
    _write_json(out / "report.json", data)
    paths += plot_stage_times(folder, out)
    return [p for p in paths if p is not None] + [out / "report.json"]


_BASELINE_LABEL = {"start": "starting ensemble", "ani1x": "ANI-1x"}


def log_axes(ax) -> None:
    """Log-log axes labelled 1, 2, 5 per decade in plain numbers (matplotlib's own minor labels overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(plain)


def _plot_error_vs_labels(data: dict, path: Path) -> Optional[Path]:
    """Test energy RMSE against training labels per test set (the paper's Fig. 5), with the first
    trained model's error and the baselines (starting ensemble, ANI-1x) as dashed lines."""
    series = data["test_error_vs_labels"]
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.4), dpi=150)
    for (name, points), color in zip(series.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        x = [p["labels"] for p in points]
        ax.plot(x, [p["e_rmse"] for p in points], "o-", color=color, label=name)
        for p in points:
            ax.annotate(str(p["cycle"]), (p["labels"], p["e_rmse"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axhline(points[0]["e_rmse"], color=color, ls=":", lw=0.8, label=f"{name}: cycle {points[0]['cycle']} model")
        for (model, sets), ls in zip(data["baselines"].items(), ("--", "-.")):
            if sets.get(name, {}).get("e_rmse") is not None:
                ax.axhline(sets[name]["e_rmse"], color=color, ls=ls, lw=1, label=f"{name}: {_BASELINE_LABEL.get(model, model)}")
    log_axes(ax)
    ax.set_xlabel("labelled structures in the training set")
    ax.set_ylabel("test energy RMSE (kcal/mol)")
    ax.set_title("Test error against labels (cycle numbers marked)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_rho_vs_error(data: dict, path: Path) -> Optional[Path]:
    """The paper's Fig. 1 for the last cycle: rho against |error| / sqrt(N) on each test set; beside it
    the members' force disagreement against the same error, where the ledger has it."""
    d = data["rho_vs_error_last_cycle"]
    if not d or not d["sets"]:
        return None
    plt = _plt()
    forces = all(None not in v["force_spread"] for v in d["sets"].values())
    fig, axes = plt.subplots(1, 2 if forces else 1, figsize=(11.2 if forces else 5.6, 4.4), dpi=150, squeeze=False)
    metrics = {s: pts[-1] for s, pts in data["test_error_vs_labels"].items() if pts}
    for name, v in d["sets"].items():
        m = metrics.get(name, {})
        ci = m.get("rho_spearman_ci95")
        spread = f" (95%: {ci[0]:.2f} to {ci[1]:.2f}; calibrated {_fmt(m.get('rho_spearman_calibrated'))})" if ci else ""
        label = (f"{name}: Spearman {_fmt(m.get('rho_spearman'))}{spread}, "
                 f"caught {_fmt(m.get('captured'))} of {m.get('n_bad', 0)}")
        error = np.clip(v["error_per_sqrt_atom"], 1e-4, None)
        axes[0, 0].scatter(np.clip(v["rho"], 1e-4, None), error, s=8, label=label)
        if forces:
            axes[0, 1].scatter(np.clip(v["force_spread"], 1e-4, None), error, s=8,
                               label=f"{name}: Spearman {_fmt(m.get('force_spearman'))}")
    pooled = next((c for c in data["cycles"] if c["cycle"] == d["cycle"] and "rho_spearman_pooled" in c), None)
    ax = axes[0, 0]
    ax.axvline(d["rho_hat"], color="r", lw=1, label=f"ρ̂ = {d['rho_hat']:.3g}")
    ax.set_xlabel("ρ (kcal/mol)")
    ax.set_title(f"QBC ρ against the real error, cycle {d['cycle']}"
                 + (f"\n(all test sets: Spearman {_fmt(pooled['rho_spearman_pooled'])})" if pooled else ""))
    if forces:
        axes[0, 1].set_xlabel("members' force disagreement (kcal/mol/Å)")
        axes[0, 1].set_title(f"Force disagreement against the real error, cycle {d['cycle']}"
                             + (f"\n(all test sets: Spearman {_fmt(pooled['force_spearman_pooled'])})" if pooled else ""))
    for ax in axes[0]:
        ax.axhline(1.5, color="k", ls="--", lw=0.8, label="1.5 kcal/mol")
        log_axes(ax)
        ax.set_ylabel("|E - E_ref| / √N (kcal/mol)")
        ax.legend(fontsize=7, framealpha=0.6)
    return _save(fig, path)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


_KIND_COLOR = {"bootstrap": "0.5", "configurational": "tab:orange", "conformational": "tab:blue"}


def _plot_error_per_cycle(data: dict, path: Path) -> Optional[Path]:
    """E, dE and F RMSE per cycle on each test set (one row per set), baselines dashed."""
    series = data["test_error_vs_labels"]
    if not series:
        return None
    plt = _plt()
    kinds = {c["cycle"]: c["kind"] for c in data["cycles"]}
    quantities = (("e_rmse", "E RMSE (kcal/mol)"), ("de_rmse", "dE RMSE (kcal/mol)"), ("f_rmse", "F RMSE (kcal/mol/Å)"))
    fig, axes = plt.subplots(len(series), 3, figsize=(10, 2.4 * len(series) + 0.8), dpi=150, squeeze=False)
    for row, (name, points) in zip(axes, series.items()):
        cycles = [p["cycle"] for p in points]
        for ax, (key, label) in zip(row, quantities):
            ax.bar(cycles, [p[key] if p[key] is not None else math.nan for p in points],
                   color=[_KIND_COLOR[kinds[c]] for c in cycles])
            for (model, sets), ls in zip(data["baselines"].items(), ("--", "-.")):
                if sets.get(name, {}).get(key) is not None:
                    ax.axhline(sets[name][key], color="k", ls=ls, lw=0.8, label=_BASELINE_LABEL.get(model, model))
            ax.set_ylabel(label, fontsize=7)
            ax.set_title(name, fontsize=8)
            ax.set_xticks(cycles)
            if data["baselines"]:
                ax.legend(fontsize=6)
    fig.supxlabel("cycle (grey: bootstrap, orange: configurational, blue: conformational)", fontsize=8)
    return _save(fig, path)


def _plot_rho(data: dict, path: Path) -> Optional[Path]:
    rho = {c: np.asarray(v) for c, v in data["rho_candidates"].items() if len(v)}
    if not rho:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=150)
    cycles = sorted(rho)
    ax.violinplot([np.log10(np.clip(rho[c], 1e-4, None)) for c in cycles], positions=cycles, showmedians=True)
    rho_hat = {c["cycle"]: c["rho_hat"] for c in data["cycles"]}
    ax.plot(cycles, [math.log10(max(rho_hat[c], 1e-4)) for c in cycles], "r_", ms=20, mew=2, label="ρ̂")
    return _finish(fig, ax, path, cycles, "log10 ρ of candidates (kcal/mol)", "QBC ρ of the sampled candidates per cycle")


def _plot_samplers(data: dict, path: Path) -> Optional[Path]:
    counts = data["labels_by_sampler"]
    samplers = sorted({s for c in counts.values() for s in c})
    if not samplers:
        return None
    plt = _plt()
    cycles = sorted(counts)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=150)
    bottom = np.zeros(len(cycles))
    for s in samplers:
        values = np.array([counts[c].get(s, 0) for c in cycles], dtype=float)
        ax.bar(cycles, values, bottom=bottom, label=s)
        bottom += values
    return _finish(fig, ax, path, cycles, "labels added", "Labels contributed by each sampler")


# ---- where the time goes -------------------------------------------------------------------
#: Stages grouped as a user scales them out: sampling (search, samplers, selection), labelling
#: (the oracle: optimisations, Hessians, labels), training, evaluation; anything else as itself.
STAGE_GROUPS = {"search": "sampling", "sample": "sampling", "select": "sampling", "reduce": "sampling",
                "optimize": "labelling", "label": "labelling", "train": "training", "evaluate": "evaluation"}


def stage_times(ledger: Ledger) -> dict[int, dict[str, float]]:
    """Wall seconds per cycle and stage (the ledger's ``stage_times``; empty for a ledger without it)."""
    out: dict[int, dict[str, float]] = {}
    for cycle, stage, wall_s in ledger.stage_times():
        out.setdefault(cycle, {})[stage] = wall_s
    return out


def plot_stage_times(folder: str | Path, out: Path) -> list[Path]:
    """``stage_times.json`` (seconds per cycle and stage, and per group) and ``stage_times.png``
    (stacked bars: sampling, labelling, training, evaluation per cycle); [] before any stage ended."""
    ledger = Ledger(folder, create=False)
    try:
        times = stage_times(ledger)
    finally:
        ledger.close()
    if not times:
        return []
    groups = {c: {} for c in times}
    for c, stages in times.items():
        for stage, wall in stages.items():
            g = STAGE_GROUPS.get(stage, stage)
            groups[c][g] = groups[c].get(g, 0.0) + wall
    _write_json(out / "stage_times.json", {"stages": times, "groups": groups})
    plt = _plt()
    cycles = sorted(groups)
    names = [g for g in ("sampling", "labelling", "training", "evaluation") if any(g in groups[c] for c in cycles)]
    names += sorted({g for c in cycles for g in groups[c]} - set(names))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=150)
    bottom = np.zeros(len(cycles))
    for g in names:
        values = np.array([groups[c].get(g, 0.0) for c in cycles]) / 60.0
        ax.bar(cycles, values, bottom=bottom, label=g)
        bottom += values
    return [_finish(fig, ax, out / "stage_times.png", cycles, "wall time (min)", "Where the wall time goes per cycle"),
            out / "stage_times.json"]

# ---- several campaigns ----------------------------------------------------------------------
#: (metric column, axis label, file stem) of the comparison figures.
COMPARED = (("e_rmse", "E RMSE (kcal/mol)", "compare_e_rmse"), ("de_rmse", "dE RMSE (kcal/mol)", "compare_de_rmse"),
            ("f_rmse", "F RMSE (kcal/mol/Å)", "compare_f_rmse"))


def _test_identity(ledger: Ledger) -> dict[str, str]:
    """Test set name -> what it holds: the file's SHA-256, or for generated sets a digest of their
    labelled structures (keys and energies), so campaigns are comparable only on the same data."""
    import hashlib

    config = ledger.get("config") or {}
    files = config.get("files", {})
    out = {}
    for t in config.get("settings", {}).get("test_sets", []):
        if t.get("file"):
            out[t["name"]] = "file:" + str(files.get(t["file"], ""))
        else:
            rows = ledger.label_energies(f"test:{t['name']}")
            h = hashlib.sha256("".join(f"{key}:{energy!r};" for key, energy in rows).encode())
            out[t["name"]] = "generated:" + h.hexdigest()
    return out


def compare_data(folders) -> dict:
    """The learning curves of several campaigns (raises InputError for a folder that is no campaign,
    or campaigns whose test sets differ in name or content)."""
    from ..errors import InputError

    campaigns, identity = [], None
    for folder in map(Path, folders):
        ledger = Ledger(folder, create=False)
        try:
            ids = _test_identity(ledger)
            data = report_data(ledger)
            kind = strategy(ledger)
        finally:
            ledger.close()
        if identity is None:
            identity, first = ids, folder
        elif ids != identity:
            differ = sorted(k for k in set(ids) | set(identity) if ids.get(k) != identity.get(k))
            raise InputError(f"{folder} and {first} were tested on different test sets ({', '.join(differ)}); "
                             "only campaigns with the same test sets can be compared")
        campaigns.append({"folder": str(folder), "strategy": kind, "test_sets": data["test_error_vs_labels"],
                          "baselines": data["baselines"]})
    names = [Path(c["folder"]).name for c in campaigns]
    for c, name in zip(campaigns, names):
        c["label"] = name if names.count(name) == 1 else c["folder"]
    return {"campaigns": campaigns, "test_sets": sorted(identity or {})}


def compare(folders, out: str | Path | None = None) -> tuple[dict, list[Path]]:
    """Overlay the campaigns' learning curves: one PNG per quantity of :data:`COMPARED` in ``out``
    (default: the first folder's ``plots/``) and ``comparison.json``; returns (numbers, files)."""
    data = compare_data(folders)
    out = Path(out) if out is not None else Path(folders[0]) / PLOTS
    out.mkdir(parents=True, exist_ok=True)
    paths = [_plot_compared(data, key, label, out / f"{stem}.png") for key, label, stem in COMPARED]
    _write_json(out / "comparison.json", data)
    return data, [p for p in paths if p is not None] + [out / "comparison.json"]


def _plot_compared(data: dict, key: str, ylabel: str, path: Path) -> Optional[Path]:
    plt = _plt()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4
    markers = "osD^vP*X"
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=150)
    drawn = False
    for c, color in zip(data["campaigns"], colors):
        for name, marker in zip(data["test_sets"], markers * 4):
            points = [p for p in c["test_sets"].get(name, []) if p.get(key) is not None]
            if points:
                ax.plot([p["labels"] for p in points], [p[key] for p in points], "-", marker=marker, color=color,
                        label=f"{c['label']} ({c['strategy']}): {name}")
                drawn = True
    first = data["campaigns"][0]["baselines"] if data["campaigns"] else {}
    for (model, sets), ls in zip(first.items(), ("--", "-.")):
        for name in data["test_sets"]:
            value = sets.get(name, {}).get(key)
            if value is not None:
                ax.axhline(value, color="0.4", ls=ls, lw=0.9, label=f"{name}: {_BASELINE_LABEL.get(model, model)}")
    if not drawn:
        plt.close(fig)
        return None
    log_axes(ax)
    ax.set_xlabel("labelled structures in the training set")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel.split(' (')[0]} against labels")
    ax.legend(fontsize=6)
    return _save(fig, path)
