"""`anif data` and `anif sample` around the store: one entry per structure, kinds kept apart,
outputs checked before any work, and an empty result that is still a valid store."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from anif.datasets.store import DatasetStore
from conftest import run_anif

ROOT = Path(__file__).resolve().parents[1]
WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])


def _labels(path, n=3, seed=0):
    rng = np.random.default_rng(seed)
    DatasetStore(path, kind="labels").append(
        None, [8, 1, 1], WATER + rng.normal(scale=0.05, size=(n, 3, 3)), -76.4 + rng.normal(scale=0.01, size=n),
        rng.normal(scale=0.05, size=(n, 3, 3)), method="wb97x/6-31g*")


def test_split_to_the_same_output_twice_is_an_error_not_a_hang(tmp_path):
    _labels(tmp_path / "x.h5")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-m", "anif", "data", "split", tmp_path / "x.h5", "--out", tmp_path / "y.h5",
                          "--out", tmp_path / "y.h5", "--fraction", "0.5", "--fraction", "0.5"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip() == f"error: {tmp_path / 'y.h5'}: given twice (each --out must be a different new file)"
    assert not (tmp_path / "y.h5").exists()


def test_merge_twice_adds_nothing_and_info_reports_kind(tmp_path, monkeypatch, capsys):
    _labels(tmp_path / "a.h5")
    for added in (3, 0):
        code, out, _ = run_anif(monkeypatch, capsys, "data", "merge", tmp_path / "m.h5", tmp_path / "a.h5")
        assert code == 0 and out.strip() == f"{tmp_path / 'm.h5'}: 1 molecules, 3 conformers ({added} added)"
    code, _, err = run_anif(monkeypatch, capsys, "data", "info", tmp_path / "m.h5", "--json-out", tmp_path / "info.json")
    info = json.loads((tmp_path / "info.json").read_text())
    assert code == 0 and info["kind"] == "labels" and info["warnings"] == [] and info["conformers"] == 3
    assert {"molecules", "atoms_min", "energy_min_hartree", "elements", "provenance"} <= set(info)
    (tmp_path / "blocker").write_text("")
    for args in (["data", "merge", tmp_path / "blocker" / "m.h5", tmp_path / "a.h5"],
                 ["data", "info", tmp_path / "a.h5", "--json-out", tmp_path / "blocker" / "i.json"],
                 ["data", "split", tmp_path / "a.h5", "--out", tmp_path / "blocker" / "s.h5", "--fraction", "1"]):
        code, _, err = run_anif(monkeypatch, capsys, *args)
        assert code == 1 and err.startswith("error: ") and "cannot write there" in err and err.count("\n") == 1


def test_sampler_refuses_a_label_store_before_sampling(tmp_path, monkeypatch, capsys):
    labels = tmp_path / "labels.h5"
    _labels(labels)
    before = labels.read_bytes()
    code, _, err = run_anif(monkeypatch, capsys, "sample", "rts", "--smiles", "O", "--rho-hat", "0.2", "--out", labels)
    assert code == 1 and err == f"error: {labels} is a label store; sampled candidates go to another file\n"
    assert labels.read_bytes() == before
    (tmp_path / "blocker").write_text("")
    code, _, err = run_anif(monkeypatch, capsys, "sample", "dnms", "--smiles", "O", "--out", tmp_path / "blocker" / "c.h5")
    assert code == 1 and "cannot write there" in err and err.count("\n") == 1


def test_sampler_reruns_add_nothing_and_an_empty_result_is_a_valid_store(ani1x, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cands.h5"
    search = ["sample", "search", "CCO", "CC=O", "--rho-hat", "0", "--seed", "1", "--workers", "0", "--out", out]
    code, _, err = run_anif(monkeypatch, capsys, *search)
    assert code == 0 and f"2 candidate(s) with rho > 0.0 kcal/mol written to {out}" in err
    code, _, err = run_anif(monkeypatch, capsys, *search)  # the same seed finds the same structures
    assert code == 0 and "0 candidate(s)" in err and "(2 found again, already there)" in err
    assert DatasetStore(out, "r").num_conformers() == 2

    empty = tmp_path / "none.h5"
    code, _, err = run_anif(monkeypatch, capsys, "sample", "search", "CCO", "--rho-hat", "100", "--workers", "0",
                         "--out", empty)
    assert code == 0 and f"no candidate with rho > 100.0 kcal/mol found; {empty} holds 0 candidate(s)" in err
    store = DatasetStore(empty, "r")
    assert store.kind == "candidates" and len(store) == 0
    code, _, err = run_anif(monkeypatch, capsys, "label", "--input", empty, "--out", tmp_path / "labels.h5")
    assert code == 1 and err == f"error: {empty}: contains no structures\n"
