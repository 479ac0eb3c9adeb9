"""Candidates per minute of each sampler (search, DNMS, RTS, dimers) on the Dask pool.

Runs every sampler through :func:`anif.sampling.parallel.run_sampler` (the code path of
``anif sample ...``) with ``--workers`` single-threaded worker processes, timing from
submission to the last result (pool start-up and per-worker model loading included), and
prints a table plus a JSON line per sampler.

    TORCHANI_DATA_DIR=../shared/torchani python scripts/benchmark_sampling.py --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

from anif.models.ensemble import load_model, supported_numbers  # noqa: E402
from anif.sampling import DimerSettings, DNMSSettings, RTSSettings, gdb11_like  # noqa: E402
from anif.sampling.parallel import run_sampler  # noqa: E402
from anif.sampling.search import embed  # noqa: E402

#: Small molecules for the per-molecule samplers (DNMS, RTS) and the dimer boxes.
MOLECULES = [("CO", "methanol"), ("CC=O", "acetaldehyde"), ("NCC(=O)O", "glycine"), ("c1ccncc1", "pyridine")]
DIMER_SET = [("O", "water"), ("C", "methane"), ("CO", "methanol"), ("N", "ammonia")]


def measure(sampler, payloads, rho_hat, seed, settings, workers):
    start = time.perf_counter()
    n = 0
    for index, result in run_sampler(sampler, "ani1x", payloads, rho_hat, seed, settings, workers):
        if isinstance(result, Exception):
            raise SystemExit(f"{sampler} item {index} failed: {result}")
        n += len(result.candidates if sampler == "search" else result)
    wall = time.perf_counter() - start
    return {"sampler": sampler, "items": len(payloads), "candidates": n, "wall_s": round(wall, 1),
            "candidates_per_min": round(60.0 * n / wall, 1), "workers": workers, "rho_hat": rho_hat}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rho-hat", type=float, default=0.23, help="kcal/mol")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search-molecules", type=int, default=128)
    parser.add_argument("--rts-repeats", type=int, default=2)
    parser.add_argument("--dimer-boxes", type=int, default=2)
    parser.add_argument("--dimer-time-ps", type=float, default=1.0, help="per box (paper: 5 ps)")
    parser.add_argument("--samplers", default="search,dnms,dnms@0,rts,dimers",
                        help="comma list; NAME@R runs NAME with rho_hat R (dnms@0: every diverse conformer)")
    args = parser.parse_args()

    model = load_model("ani1x")
    structures = [s for s, _ in embed(MOLECULES, supported_numbers(model), args.seed)[0]]
    dimer_set = [s for s, _ in embed(DIMER_SET, supported_numbers(model), args.seed)[0]]
    plans = {
        "search": lambda: ([("gdb11", gdb11_like(args.search_molecules, args.seed)[k:k + 32], [])
                            for k in range(0, args.search_molecules, 32)], None),
        "dnms": lambda: (structures, DNMSSettings()),
        "rts": lambda: (structures, RTSSettings(repeats=args.rts_repeats)),
        "dimers": lambda: ([dimer_set] * args.dimer_boxes, DimerSettings(time_ps=args.dimer_time_ps)),
    }
    rows = []
    for entry in args.samplers.split(","):
        name, _, rho_hat = entry.partition("@")
        payloads, settings = plans[name]()
        rows.append(measure(name, payloads, float(rho_hat or args.rho_hat), args.seed, settings, args.workers))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'sampler':8s} {'rho_hat':>7s} {'items':>6s} {'candidates':>10s} {'wall s':>8s} {'cand/min':>9s}")
    for r in rows:
        print(f"{r['sampler']:8s} {r['rho_hat']:7.2f} {r['items']:6d} {r['candidates']:10d} {r['wall_s']:8.1f} "
              f"{r['candidates_per_min']:9.1f}")


if __name__ == "__main__":
    main()
