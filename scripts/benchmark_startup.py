"""Command start-up: wall time of `anif --help`, `anif md --help`, `anif energy` on one small
molecule (an XYZ file, and --smiles C) and the import of the command line alone, each a fresh
process, median and best of --repeats, with the machine's load; then which heavy packages
`import anif.cli` loads (none is the goal).

    TORCHANI_DATA_DIR=../shared/torchani .venv/bin/python scripts/benchmark_startup.py [--repeats 5]
"""

import argparse
import os
import statistics
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
HEAVY = ("torch", "openmm", "pyscf", "dask", "distributed", "h5py", "rdkit", "matplotlib", "scipy", "mdtraj")


def walls(argv, repeats):
    """Wall seconds of ``repeats`` fresh runs of ``python argv``; None if it fails (e.g. a flag an
    older checkout lacks)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            print(f"{' '.join(argv)} failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        xyz = Path(tmp) / "methane.xyz"
        xyz.write_text(METHANE)
        cases = {"import anif.cli": ["-c", "import anif.cli"],
                 "anif --help": ["-m", "anif", "--help"],
                 "anif md --help": ["-m", "anif", "md", "--help"],
                 "anif energy --input CH4.xyz": ["-m", "anif", "energy", "--input", str(xyz)],
                 "anif energy --smiles C": ["-m", "anif", "energy", "--smiles", "C"]}
        walls(cases["anif energy --input CH4.xyz"], 1)  # builds the kernels once if this machine lacks them
        print(f"{'command':28s} {'median (s)':>10s} {'best (s)':>9s}   (load {os.getloadavg()[0]:.1f}, "
              f"{args.repeats} runs, {os.cpu_count()} cores)")
        for name, argv in cases.items():
            times = walls(argv, args.repeats)
            figures = f"{statistics.median(times):10.2f} {min(times):9.2f}" if times else f"{'n/a':>10s} {'n/a':>9s}"
            print(f"{name:28s} {figures}")
        print(f"load after: {os.getloadavg()[0]:.1f}")
    probe = f"import sys, anif.cli; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    print(f"heavy packages loaded by `import anif.cli`: {loaded or 'none'}")


if __name__ == "__main__":
    main()
