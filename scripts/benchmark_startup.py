"""Command start-up: wall time of `anif --help`, `anif md --help` and `anif energy` on one small
molecule (each a fresh process, best of --repeats), side by side in one run.

    TORCHANI_DATA_DIR=../shared/torchani .venv/bin/python scripts/benchmark_startup.py [--repeats 3]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHANE = """5
methane
C 0.0 0.0 0.0
H 0.629 0.629 0.629
H -0.629 -0.629 0.629
H -0.629 0.629 -0.629
H 0.629 -0.629 -0.629
"""


def wall(args, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "anif", *args], capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"anif {' '.join(args)} failed: {result.stderr.strip()}")
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xyz = Path(tmp) / "methane.xyz"
        xyz.write_text(METHANE)
        cases = {"anif --help": ["--help"], "anif md --help": ["md", "--help"],
                 "anif energy (methane)": ["energy", "--input", str(xyz)]}
        wall(["energy", "--input", str(xyz)], 1)  # builds the kernels once if this machine lacks them
        print(f"{'command':24s} {'best wall (s)':>14s}   (load {os.getloadavg()[0]:.1f})")
        for name, argv in cases.items():
            print(f"{name:24s} {wall(argv, args.repeats):14.2f}")


if __name__ == "__main__":
    main()
