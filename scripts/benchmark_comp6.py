"""Benchmark an ensemble on COMP6 files: the paper's table, figures and evaluation throughput.

    python scripts/benchmark_comp6.py --data ../shared/data/comp6 [--model ani1x] [--out runs/bench_comp6]

Runs ``anif bench comp6`` (all conformers, then within 100 and 50 kcal/mol of each minimum, as
the paper reports), then times energy + force evaluation of every conformer in float64 and
float32 with 1 and 2 torch threads (conformers/s).
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import torch  # noqa: E402

from anif.accuracy.metrics import predict  # noqa: E402
from anif.cli import main as anif_main  # noqa: E402
from anif.datasets.comp6 import read_comp6  # noqa: E402
from anif.models.ensemble import load_model  # noqa: E402


def run_anif(*args) -> None:
    sys.argv = ["anif", *map(str, args)]
    try:
        anif_main()
    except SystemExit as exc:
        if exc.code:
            raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="COMP6 .h5 files or folders")
    parser.add_argument("--model", default="ani1x")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_comp6"))
    parser.add_argument("--threads", type=int, default=1, help="threads for the metric runs")
    args = parser.parse_args()

    for window in (None, 100, 50):
        tag = "all" if window is None else f"{window}kcal"
        extra = [] if window is None else ["--max-energy", window]
        data = [x for d in args.data for x in ("--data", d)]
        run_anif("bench", "comp6", "--model", args.model, *data, "--threads", args.threads,
                 "--json-out", args.out / f"metrics_{tag}.json", "--plots", args.out / f"plots_{tag}", *extra)

    molecules = read_comp6(args.data)
    n = sum(m.n_conformers for m in molecules)
    print(f"\nthroughput, energies + forces of {n} conformers ({args.model}):")
    for dtype in (torch.float64, torch.float32):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = load_model(args.model).to(dtype)
            start = time.perf_counter()
            predict(model, molecules, progress=False)
            seconds = time.perf_counter() - start
            print(f"  {str(dtype).replace('torch.', ''):8s} {threads} thread(s): {n / seconds:8.1f} conformers/s")


if __name__ == "__main__":
    main()
