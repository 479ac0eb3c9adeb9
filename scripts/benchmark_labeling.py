"""Labels per hour at wB97X/6-31G(d): today's path and the new one side by side, on the same structures.

Two sets of DNMS conformers (ANI-1x Hessian at the ANI-1x minimum of an RDKit embedding, seed 0):

- ``campaign``: CONFORMERS conformers each of 6 molecules with 2-6 heavy atoms;
- ``quickstart``: the shipped quickstart's bootstrap (C, N, O, C=O x 4, and its test set C#N x 6).

Every structure is labelled by both paths in one task on the same worker, the order alternating
from one structure to the next (so the load of a shared machine hits both alike):

- today: PySCF's own initial guess and algorithms (``anif.labeling.reference.FAST_SCF = False``), as
  ``anif label`` ran before;
- new: the long-range ERIs in core, the AO values on the grid cached per geometry, and the SCF
  started from the orbitals of the nearest conformer already labelled (by any worker, through
  a shared folder, as ``OUT.dm/`` or a campaign's ``densities/``);
- with ``--df`` also the new path with density fitting: its speed-up and its shift.

The workers and threads are :func:`anif.distributed.worker_policy`'s (``--workers`` to override).
``--policy`` also times 1 worker x C threads against C workers x 1 thread (new path) on a small
and a large molecule; ``--optimizer`` counts the gradients of the oracle's optimisation of the
quickstart's molecules before (RDKit/UFF start) and after (ANI-1x start, as the PySCF oracle does).
``--campaign CONFIG`` also runs that campaign twice from scratch with ``anif al run``, today's labels
(``ANIF_FAST_SCF=0``, inherited by every worker) and the new ones: wall time, labelling time, and the
energies of the structures both runs labelled (e.g. ``--campaign data/al_quickstart.toml``, ~25 min).

    python scripts/benchmark_labeling.py [--conformers 8] [--sets campaign quickstart] [--df] [--policy] [--optimizer]
                                         [--campaign CONFIG]
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: 2 to 6 heavy atoms: methanol, acetonitrile, acetamide, furan, 1,3-propanediol, methyl acetate + 1 (ethyl acetate)
CAMPAIGN = ("CO", "CC#N", "CC(N)=O", "c1ccoc1", "OCCCO", "CCOC(C)=O")
QUICKSTART = (("C", 4), ("N", 4), ("O", 4), ("C=O", 4), ("C#N", 6))
OPTIMIZED = ("C", "N", "O", "C=O", "C=C", "CC", "C#C", "C=N")
KCAL = 627.509474


def conformers(smiles: str, count: int, seed: int = 0):
    """``count`` DNMS conformers (500 K) of ``smiles`` around its ANI-1x minimum."""
    from anif.models.ensemble import load_model
    from anif.sampling.dnms import dnms_conformers, ensemble_hessian, optimize
    from anif.sampling.settings import DNMSSettings
    from anif.structures import from_smiles

    model = load_model("ani1x").double()
    minimum = optimize(model, from_smiles(smiles, seed=seed, name=smiles))
    settings = DNMSSettings(temperature=500.0, pool=max(64, 8 * count), keep=count, min_rmsd=0.02)
    found = dnms_conformers(minimum, ensemble_hessian(model, minimum), settings, np.random.default_rng(seed))
    return [c.structure for c in found[:count]]


def _both(args):
    """Label one structure by today's path and the new one (``first`` runs first), and DF if asked."""
    index, structure, folder, first, density_fit = args
    import anif.labeling.reference as labeling
    from anif.labeling.settings import Level

    out = {"index": index}
    for path in (first, "new" if first == "today" else "today"):
        labeling.FAST_SCF = path == "new"
        start = time.perf_counter()
        r = labeling.label_structure(structure, Level(device="cpu"), guesses=folder if path == "new" else None)
        out[path] = {"wall_s": time.perf_counter() - start, "ok": r.ok, "energy": r.energy, "forces": r.forces,
                     "iterations": r.scf_iterations, "guess": r.scf_guess}
    if density_fit:
        labeling.FAST_SCF = True
        start = time.perf_counter()
        r = labeling.label_structure(structure, Level(device="cpu", density_fit=True), guesses=folder + ".df")
        out["df"] = {"wall_s": time.perf_counter() - start, "ok": r.ok, "energy": r.energy, "forces": r.forces,
                     "iterations": r.scf_iterations}
    return out


def _init(threads: int) -> None:
    from pyscf import lib

    lib.num_threads(threads)


def compare(name: str, structures, workers: int, threads: int, density_fit: bool, tmp: Path) -> dict:
    folder = str(tmp / f"{name}.dm")
    tasks = [(i, s, folder, "today" if i % 2 else "new", density_fit) for i, s in enumerate(structures)]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(threads,)) as pool:
        results = []
        for r in pool.imap_unordered(_both, tasks):
            results.append(r)
            print(f"  {structures[r['index']].name}: today {r['today']['wall_s']:.1f} s, new {r['new']['wall_s']:.1f} s "
                  f"({r['new']['guess']})", flush=True)
        results.sort(key=lambda r: r["index"])
    wall = time.perf_counter() - start
    bad = [structures[r["index"]].name for r in results for p in ("today", "new") if not r[p]["ok"]]
    if bad:
        raise SystemExit(f"{name}: labels failed for {bad}")
    rows = []
    for s in dict.fromkeys(x.name for x in structures):
        mine = [r for r in results if structures[r["index"]].name == s]
        row = {"set": name, "molecule": s, "heavy_atoms": int((structures[mine[0]["index"]].numbers > 1).sum()),
               "labels": len(mine)}
        for p in ("today", "new") + (("df",) if density_fit else ()):
            row[f"{p}_s_per_label"] = float(np.mean([r[p]["wall_s"] for r in mine]))
            row[f"{p}_iterations"] = float(np.mean([r[p]["iterations"] for r in mine]))
        row["dE_max_ha"] = max(abs(r["new"]["energy"] - r["today"]["energy"]) for r in mine)
        row["dF_max_ha_a"] = max(float(np.abs(r["new"]["forces"] - r["today"]["forces"]).max()) for r in mine)
        row["neighbour_guesses"] = sum(str(r["new"]["guess"]).startswith("neighbour") for r in mine)
        if density_fit:
            row["df_shift_max_kcal"] = max(abs(r["df"]["energy"] - r["new"]["energy"]) for r in mine) * KCAL
            row["df_shift_forces_max_kcal_a"] = max(float(np.abs(r["df"]["forces"] - r["new"]["forces"]).max())
                                                    for r in mine) * KCAL
        rows.append(row)
    total = {p: sum(r[p]["wall_s"] for r in results) for p in ("today", "new") + (("df",) if density_fit else ())}
    summary = {"set": name, "labels": len(results), "workers": workers, "threads": threads, "wall_s": wall,
               **{f"{p}_labels_per_hour": 3600.0 * len(results) * workers / t for p, t in total.items()},
               "ratio": total["today"] / total["new"],
               "dE_max_ha": max(r["dE_max_ha"] for r in rows), "dF_max_ha_a": max(r["dF_max_ha_a"] for r in rows)}
    if density_fit:
        summary["df_speedup_vs_new_exact"] = total["new"] / total["df"]
        summary["df_shift_max_kcal"] = max(r["df_shift_max_kcal"] for r in rows)
        summary["df_shift_forces_max_kcal_a"] = max(r["df_shift_forces_max_kcal_a"] for r in rows)
    return {"rows": rows, "summary": summary}


def _policy_task(args):
    structure, threads, folder = args
    from pyscf import lib

    import anif.labeling.reference as labeling
    from anif.labeling.settings import Level

    lib.num_threads(threads)
    start = time.perf_counter()
    labeling.label_structure(structure, Level(device="cpu"), guesses=folder)
    return time.perf_counter() - start


def policy(structures_by_name: dict, cores: int, tmp: Path) -> list[dict]:
    """Wall time of the same labels with 1 worker x ``cores`` threads and ``cores`` workers x 1 thread."""
    rows = []
    for name, structures in structures_by_name.items():
        for workers, threads in ((1, cores), (cores, 1)):
            folder = str(tmp / f"policy-{name}-{workers}")
            start = time.perf_counter()
            with mp.get_context("spawn").Pool(workers) as pool:
                list(pool.imap_unordered(_policy_task, [(s, threads, folder) for s in structures]))
            wall = time.perf_counter() - start
            rows.append({"molecule": name, "labels": len(structures), "workers": workers, "threads": threads,
                         "wall_s": wall, "labels_per_hour": 3600.0 * len(structures) / wall})
    return rows


def _optimize_task(args):
    """One oracle optimisation (GAU, the quickstart's criteria): before = geomeTRIC from the RDKit/UFF
    embedding with PySCF's own SCF; after = the PySCF oracle's path (ANI-1x start, fast SCF)."""
    smiles, settings = args
    from pyscf import lib

    import anif.labeling.reference as labeling
    from anif.labeling.oracles import ani1x_minimum
    from anif.labeling.settings import Level
    from anif.structures import from_smiles

    lib.num_threads(1)
    labeling.FAST_SCF = settings == "after"
    start = time.perf_counter()
    structure = from_smiles(smiles, seed=0, name=smiles)
    if settings == "after":
        structure = ani1x_minimum(structure)
    result = labeling.optimize(structure, Level(device="cpu"), "GAU", 60)
    return {"molecule": smiles, "settings": settings, "gradients": result.steps, "converged": result.converged,
            "energy": result.energy, "wall_s": time.perf_counter() - start}


def optimizer_counts(workers: int) -> list[dict]:
    tasks = [(s, k) for s in OPTIMIZED for k in ("before", "after")]
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(pool.imap(_optimize_task, tasks))


def campaign_runs(config: Path, out_dir: Path, tmp: Path) -> dict:
    """``config``'s campaign from scratch, today's labels then the new ones (logs in ``out_dir``)."""
    from anif.al.config import load_config
    from anif.al.ledger import Ledger

    roles = ["train"] + [f"test:{t.name}" for t in load_config(config).test_sets]
    runs = {}
    for path in ("today", "new"):
        folder = tmp / f"campaign-{path}"
        env = dict(os.environ, ANIF_FAST_SCF="0" if path == "today" else "1")
        print(f"campaign {config} with the {path} labels (log: {out_dir / f'campaign-{path}.log'})", flush=True)
        start = time.perf_counter()
        with open(out_dir / f"campaign-{path}.log", "w") as log:
            subprocess.run([sys.executable, "-m", "anif", "al", "run", str(config), "--out", str(folder)],
                           env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        wall = time.perf_counter() - start
        ledger = Ledger(folder)
        labels = {k: e for role in roles for k, e in ledger.label_energies(role)}
        labelling = sum(seconds for _, stage, seconds in ledger.stage_times() if stage == "label")
        ledger.close()
        cycles = json.loads((folder / "history.json").read_text())["cycles"]
        runs[path] = {"wall_s": wall, "label_stage_s": labelling, "labels": len(labels), "energies": labels,
                      "test_rmse_kcal_mol": [c["test_rmse_kcal_mol"] for c in cycles]}
    common = sorted(set(runs["today"]["energies"]) & set(runs["new"]["energies"]))
    summary = {"config": str(config), "wall_ratio": runs["today"]["wall_s"] / runs["new"]["wall_s"],
               "label_stage_ratio": runs["today"]["label_stage_s"] / runs["new"]["label_stage_s"],
               "common_labels": len(common),
               "dE_max_ha": max((abs(runs["today"]["energies"][k] - runs["new"]["energies"][k]) for k in common),
                                default=float("nan"))}
    for r in runs.values():
        r.pop("energies")
    return {**runs, "summary": summary}


def _round_robin(groups: list[list]) -> list:
    """One conformer of each molecule in turn, as a campaign's labels of several molecules arrive
    (and so that two workers do not start on the first two conformers of one molecule at once)."""
    return [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]


def main() -> None:
    from anif.distributed import available_cores, worker_policy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("bench_labeling"))
    parser.add_argument("--sets", nargs="+", default=["campaign", "quickstart"], choices=["campaign", "quickstart"])
    parser.add_argument("--conformers", type=int, default=8, help="conformers per molecule of the campaign set")
    parser.add_argument("--molecules", nargs="+", default=list(CAMPAIGN), help="SMILES of the campaign set")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--df", action="store_true", help="also the new path with density fitting")
    parser.add_argument("--policy", action="store_true", help="also 1 worker x C threads vs C workers x 1 thread")
    parser.add_argument("--optimizer", action="store_true", help="also the quickstart optimisations' gradient counts")
    parser.add_argument("--campaign", type=Path, help="also this campaign config run twice: today's and the new labels")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cores = available_cores()
    report = {"cores": cores}
    sets = {}
    if "campaign" in args.sets:
        sets["campaign"] = _round_robin([conformers(smi, args.conformers) for smi in args.molecules])
    if "quickstart" in args.sets:
        sets["quickstart"] = _round_robin([conformers(smi, n) for smi, n in QUICKSTART])
    rows, summaries = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, structures in sets.items():
            workers, threads = worker_policy(args.workers, tasks=len(structures))
            print(f"{name}: {len(structures)} structures, {workers} workers x {threads} threads", flush=True)
            result = compare(name, structures, workers, threads, args.df, Path(tmp))
            rows += result["rows"]
            summaries.append(result["summary"])
        if args.policy:
            small = sets.get("campaign", [])[: 2 * cores] or conformers("CO", 2 * cores)
            large = conformers(args.molecules[-1], 2 * cores)
            report["policy"] = policy({small[0].name: small, large[0].name: large}, cores, Path(tmp))
        if args.campaign:
            report["campaign"] = campaign_runs(args.campaign, args.out_dir, Path(tmp))
    if args.optimizer:
        report["optimizer"] = optimizer_counts(args.workers or cores)
    report.update(rows=rows, summaries=summaries)
    (args.out_dir / "labeling_benchmark.json").write_text(json.dumps(report, indent=2, default=float))
    if rows:
        with open(args.out_dir / "labeling_benchmark.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    print(f"\nwB97X/6-31G(d), exact integrals, {cores} cores; per structure: today and new on the same worker, "
          "order alternating")
    print(f"{'set':<10} {'molecule':<10} {'heavy':>5} {'n':>3} {'today s':>8} {'new s':>7} {'ratio':>6} "
          f"{'it today':>8} {'it new':>6} {'nbr':>3} {'max|dE| Ha':>10} {'max|dF| Ha/A':>12}")
    for r in rows:
        print(f"{r['set']:<10} {r['molecule']:<10} {r['heavy_atoms']:>5} {r['labels']:>3} {r['today_s_per_label']:>8.1f} "
              f"{r['new_s_per_label']:>7.1f} {r['today_s_per_label'] / r['new_s_per_label']:>6.2f} "
              f"{r['today_iterations']:>8.1f} {r['new_iterations']:>6.1f} {r['neighbour_guesses']:>3} "
              f"{r['dE_max_ha']:>10.1e} {r['dF_max_ha_a']:>12.1e}")
    for s in summaries:
        print(f"{s['set']}: {s['labels']} labels, {s['workers']} workers x {s['threads']} threads: "
              f"today {s['today_labels_per_hour']:.0f} labels/h, new {s['new_labels_per_hour']:.0f} labels/h, "
              f"ratio {s['ratio']:.2f}; max |dE| {s['dE_max_ha']:.1e} Ha, max |dF| {s['dF_max_ha_a']:.1e} Ha/A")
        if args.df:
            print(f"  density fitting: {s['df_labels_per_hour']:.0f} labels/h, {s['df_speedup_vs_new_exact']:.2f}x the new "
                  f"exact path; shift max |dE| {s['df_shift_max_kcal']:.3f} kcal/mol, "
                  f"max |dF| {s['df_shift_forces_max_kcal_a']:.3f} kcal/mol/A")
    for r in report.get("policy", []):
        print(f"policy {r['molecule']:<10} {r['labels']} labels: {r['workers']} workers x {r['threads']} threads "
              f"{r['wall_s']:.1f} s ({r['labels_per_hour']:.0f} labels/h)")
    for r in report.get("optimizer", []):
        print(f"optimize {r['molecule']:<4} {r['settings']:<18} {r['gradients']:>3} gradients, "
              f"converged {r['converged']}, E {r['energy']:.6f} Ha, {r['wall_s']:.0f} s")
    if "campaign" in report:
        c = report["campaign"]
        for path in ("today", "new"):
            r = c[path]
            print(f"campaign {path:<5}: {r['wall_s'] / 60:.1f} min wall, labelling {r['label_stage_s'] / 60:.1f} min, "
                  f"{r['labels']} labels, test RMSE per cycle {r['test_rmse_kcal_mol']}")
        s = c["summary"]
        print(f"campaign: today / new wall {s['wall_ratio']:.2f}x, labelling {s['label_stage_ratio']:.2f}x; "
              f"{s['common_labels']} structures labelled by both, max |dE| {s['dE_max_ha']:.1e} Ha")
    print(f"wrote {args.out_dir / 'labeling_benchmark.json'}")


if __name__ == "__main__":
    main()
