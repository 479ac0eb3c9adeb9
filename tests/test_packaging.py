"""The built wheel carries the package data (SMILES sets, the kernels' C++ source), found through
importlib.resources when anif is installed from it (no repository on the path)."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_smiles_sets_and_kernel_source(tmp_path):
    # built from a copy, so setuptools' build/ folder never lands in (or leaks stale files from) the checkout
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "runs",
                                                                "__pycache__", ".pytest_cache"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("anif-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"anif/data/gdb11_like.smi", "anif/data/amino_acids.smi", "anif/models/csrc/ani_kernels.cpp"} <= names
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    probe = ("import anif, anif.models.extension as k\n"
             "from anif.sampling.search import gdb11_like, dipeptides, read_smiles_file, DATA_DIR\n"
             "assert anif.__file__.startswith(%r), anif.__file__\n"
             "print(len(gdb11_like()), len(dipeptides()), len(read_smiles_file(DATA_DIR / 'gdb11_like.smi')),"
             " k.SOURCE.is_file())\n") % str(target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    n_gdb, n_dipeptides, n_again, source = result.stdout.split()
    expected = sum(1 for line in (ROOT / "anif" / "data" / "gdb11_like.smi").read_text().splitlines()
                   if line.split() and not line.startswith("#"))
    assert int(n_gdb) == int(n_again) == expected > 50
    assert int(n_dipeptides) > 100 and source == "True"
