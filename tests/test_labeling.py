"""Reference labeller: COMP6 S66x8 reproduction through `anif label`, resume after SIGKILL,
SCF failure recording, a 2-worker LocalCluster, bad input, optimisation and normal modes.

Tests that are not about reproducing reference numbers run at small basis sets (STO-3G) to
stay fast; the S66x8 test runs the default wB97X/6-31G(d).
"""

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from anif.datasets.store import DatasetStore
from anif.distributed import as_completed_with_progress, dask_client
from anif.labeling.batch import failures_path, label_file, read_failures
from anif.labeling.reference import hessian, label_structure, optimize, structure_key
from anif.labeling.settings import Level, gaussian_cartesian
from anif.structures import Structure, symbol, write_xyz
from anif.units import HARTREE_TO_KCAL_MOL
from anif.vibrations import normal_modes

ROOT = Path(__file__).resolve().parents[1]
WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]])
SMALL = Level(basis="sto-3g")


def _env():
    env = dict(os.environ)
    env.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _label_cmd(*args):
    return [sys.executable, "-m", "anif", "label", *map(str, args)]


def _waters(n, seed=0, scale=0.05):
    rng = np.random.default_rng(seed)
    return [Structure([8, 1, 1], WATER + rng.normal(scale=scale, size=(3, 3)), name=f"water{i}") for i in range(n)]


def _direct_pyscf(structure, level):
    """Energy (Ha) and forces (Ha/A) straight from PySCF, for comparison."""
    from pyscf import dft, gto

    mol = gto.M(atom=[(symbol(z), x) for z, x in zip(structure.numbers, structure.coordinates)], unit="Angstrom",
                basis=level.basis, cart=level.use_cartesian, verbose=0)
    mf = dft.RKS(mol)
    mf.xc = level.method
    mf.grids.atom_grid = level.grid
    mf.conv_tol = 1e-10
    energy = mf.kernel()
    return energy, -mf.nuc_grad_method().kernel() / 0.52917721092


def test_gaussian_basis_convention():
    assert gaussian_cartesian("6-31g*") and gaussian_cartesian("6-31+G(d,p)") and gaussian_cartesian("3-21g")
    assert not gaussian_cartesian("6-311g*") and not gaussian_cartesian("cc-pvdz") and not gaussian_cartesian("def2-svp")
    assert Level().basis_convention == "cartesian"


def test_s66x8_force_convention(s66x8_path):
    """COMP6's 'forces' are +dE/dx: finite differences of energies along the dissociation path prove it."""
    with h5py.File(s66x8_path, "r") as f:
        g = f["s66x8/mol00"]
        x, e, grad = g["coordinates"][()].astype(float), g["energies"][()], g["forces"][()].astype(float)
    for c in range(3):
        de = e[c + 1] - e[c]
        predicted = np.sum(0.5 * (grad[c] + grad[c + 1]) * (x[c + 1] - x[c]))  # Ha, if 'forces' = gradient (Ha/A)
        assert predicted == pytest.approx(de, rel=0.15)


def test_reproduces_comp6_s66x8_through_cli(tmp_path, s66x8_path):
    """Water dimer (S66x8 mol00) conformers 0 and 1 at the default level: energy within 0.05 kcal/mol,
    forces within 0.5 kcal/mol/A; a duplicate frame is computed once; the file reads in torchani."""
    with h5py.File(s66x8_path, "r") as f:
        g = f["s66x8/mol00"]
        species = [s.decode() for s in g["species"][()]]
        coords, energies, gradients = g["coordinates"][()], g["energies"][()], g["forces"][()]
    numbers = [8 if s == "O" else 1 for s in species]
    frames = [Structure(numbers, coords[c], name=f"s66x8/mol00/{c}") for c in (0, 1, 0)]
    write_xyz(frames, tmp_path / "in.xyz")
    out = tmp_path / "labels.h5"
    run = subprocess.run(_label_cmd("--input", tmp_path / "in.xyz", "--out", out, "--workers", "1"),
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "2 labelled" in run.stdout and "3 structures, 2 unique" in run.stdout

    store = DatasetStore(out, "r")
    assert store.num_conformers() == 2
    (group, data), = list(store)
    for i, name in enumerate(data["name"]):
        c = int(name.rsplit("/", 1)[1])
        assert abs(data["energies"][i] - energies[c]) * HARTREE_TO_KCAL_MOL < 0.05
        assert np.abs(data["forces"][i] - (-gradients[c])).max() * HARTREE_TO_KCAL_MOL < 0.5
    assert set(data["method"]) == {"wb97x/6-31g*"} and set(data["basis_convention"]) == {"cartesian"}
    assert set(data["scf_converged"]) == {1} and (data["scf_iterations"] > 0).all() and (data["wall_time_s"] > 0).all()
    assert all(p.startswith("pyscf ") for p in data["program"])

    from torchani.datasets import ANIDataset

    ds = ANIDataset(out)
    got = ds.get_conformers(group, properties=("species", "coordinates", "energies", "forces"))
    np.testing.assert_allclose(got["energies"].numpy(), data["energies"])


def test_resume_after_sigkill(tmp_path):
    """Kill `anif label` with SIGKILL once a label has landed; the rerun computes only the rest."""
    structures = _waters(6, seed=1)
    cands = tmp_path / "cands.h5"
    DatasetStore(cands).append("water", [8, 1, 1], np.stack([s.coordinates for s in structures]), np.zeros(6),
                               source="test", sampler="dnms")
    out = tmp_path / "labels.h5"
    cmd = _label_cmd("--input", cands, "--out", out, "--basis", "sto-3g", "--workers", "1", "--threads", "1")
    child = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (out.exists() and DatasetStore(out, "r").num_conformers() >= 1):
            assert child.poll() is None, f"labeller ended before the kill: {child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no label landed in time"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        try:
            os.killpg(child.pid, signal.SIGKILL)  # the Dask workers it started
        except ProcessLookupError:
            pass
    first = DatasetStore(out, "r").read("H2O")
    n_first = len(first["energies"])
    assert 1 <= n_first < 6, "the kill came too late to test resuming"

    rerun = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(rf"\b{6 - n_first} labelled", rerun.stdout) and f"{n_first} already labelled" in rerun.stdout
    final = DatasetStore(out, "r").read("H2O")
    assert sorted(final["structure_key"]) == sorted(structure_key(s) for s in structures)
    assert set(final["source"]) == {"test"} and set(final["sampler"]) == {"dnms"}
    kept = dict(zip(final["structure_key"], final["energies"]))
    assert all(kept[k] == e for k, e in zip(first["structure_key"], first["energies"]))


def test_scf_failure_is_recorded_and_batch_goes_on(tmp_path):
    """With one SCF iteration per rung, H2 converges (on the level-shift rung) and water fails."""
    h2 = Structure([1, 1], [[0, 0, 0], [0, 0, 0.74]], name="h2")
    water = Structure([8, 1, 1], WATER, name="water")
    write_xyz([h2, water], tmp_path / "in.xyz")
    out = tmp_path / "labels.h5"
    cmd = _label_cmd("--input", tmp_path / "in.xyz", "--out", out, "--basis", "sto-3g", "--max-cycle", "1",
                     "--workers", "1")
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "1 labelled, 1 failed" in run.stdout
    data = DatasetStore(out, "r").read("H2")
    assert list(data["name"]) == ["h2"] and list(data["scf_strategy"]) == ["level_shift"]
    energy, _ = _direct_pyscf(h2, SMALL)
    assert data["energies"][0] == pytest.approx(energy, abs=1e-6)
    (failure,) = read_failures(out)
    assert failure["name"] == "water" and failure["key"] == structure_key(water)
    assert "not converged" in failure["reason"] and "newton" in failure["reason"]
    assert failures_path(out).name == "labels.failed.jsonl"


def test_two_worker_local_cluster_matches_direct_pyscf(tmp_path):
    structures = _waters(4, seed=2)
    write_xyz(structures, tmp_path / "in.xyz")
    out = tmp_path / "labels.h5"
    summary = label_file(tmp_path / "in.xyz", out, SMALL, workers=2, threads=1)
    assert (summary.labelled, summary.failed) == (4, 0)
    data = DatasetStore(out, "r").read("H2O")
    assert len(set(data["host"])) == 2, "both worker processes should have labelled"
    i = list(data["name"]).index("water0")
    energy, forces = _direct_pyscf(structures[0], SMALL)
    assert data["energies"][i] == pytest.approx(energy, abs=1e-7)
    np.testing.assert_allclose(data["forces"][i], forces, atol=1e-5)


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ("1\nxenon\nXe 0 0 0\n", [], "element Xe has no 6-31g* basis"),
        ("2\nclash\nO 0 0 0\nH 0 0 0.1\n", [], "overlap"),
        ("2\nradical\nO 0 0 0\nH 0 0 0.97\n", [], "9 electrons"),
        ("this is not\nan xyz file\n", [], "expected an atom count"),
        ("3\nwater\nO 0 0 0\nH 0 0 0.96\nH 0 0.93 -0.24\n", ["--workers", "0"], "workers must be >= 1"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, monkeypatch, capsys, content, extra, message):
    from anif.cli import main

    (tmp_path / "in.xyz").write_text(content)
    monkeypatch.setattr(sys, "argv", ["anif", "label", "--input", str(tmp_path / "in.xyz"),
                                      "--out", str(tmp_path / "out.h5"), *extra])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out.h5").exists()


WATER_XYZ = "3\nwater\nO 0 0 0.117\nH 0 0.757 -0.467\nH 0 -0.757 -0.467\n"


@pytest.mark.parametrize(
    "content, out, message",
    [
        (WATER_XYZ.replace("0.757", "1.430").replace("0.467", "0.882").replace("0.117", "0.221"), "out.h5",
         "coordinates in Bohr"),
        (WATER_XYZ.replace("0.757", "0.0757").replace("0.467", "0.0467").replace("0.117", "0.0117"), "out.h5",
         "coordinates in nm"),
        (WATER_XYZ, "a_file/out.h5", "cannot write there"),
        (WATER_XYZ, "cands.h5", "is a candidate store; reference labels go to another file"),
        (WATER_XYZ, "folder", "is a folder"),
    ],
    ids=["bohr", "nm", "unwritable", "candidate-store", "folder"],
)
def test_output_and_units_are_checked_before_computing(tmp_path, monkeypatch, capsys, content, out, message):
    from anif.cli import main
    from anif.sampling import Candidate, write_candidates

    (tmp_path / "in.xyz").write_text(content)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "folder").mkdir()
    write_candidates(tmp_path / "cands.h5", [Candidate(Structure([8, 1, 1], WATER), 0.4, -76.38, {"sampler": "rts"})])
    before = (tmp_path / "cands.h5").read_bytes()
    monkeypatch.setattr(sys, "argv", ["anif", "label", "--input", str(tmp_path / "in.xyz"), "--out", str(tmp_path / out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "out.h5").exists() and (tmp_path / "cands.h5").read_bytes() == before


def test_label_exits_non_zero_when_every_structure_fails(tmp_path):
    (tmp_path / "in.xyz").write_text(WATER_XYZ)
    out = tmp_path / "labels.h5"
    cmd = _label_cmd("--input", tmp_path / "in.xyz", "--out", out, "--basis", "sto-3g", "--max-cycle", "1",
                     "--workers", "1", "--threads", "1")
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "0 labelled, 1 failed" in run.stdout
    assert run.stderr.strip().splitlines()[-1].startswith("error: no structure could be labelled")
    rerun = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1 and "--retry-failed" in rerun.stderr and "1 recorded as failed before" in rerun.stdout


def test_two_concurrent_label_runs_store_each_structure_once(tmp_path):
    """Two `anif label` processes on one --out: each structure ends up stored exactly once."""
    structures = _waters(4, seed=3)
    write_xyz(structures, tmp_path / "in.xyz")
    out = tmp_path / "labels.h5"
    cmd = _label_cmd("--input", tmp_path / "in.xyz", "--out", out, "--basis", "sto-3g", "--workers", "1",
                     "--threads", "1")
    runs = [subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [r.communicate(timeout=300) for r in runs]
    assert all(r.returncode == 0 for r in runs), outputs
    labelled = [int(re.search(r"(\d+) labelled", o).group(1)) for o, _ in outputs]
    assert sum(labelled) == 4
    data = DatasetStore(out, "r").read("H2O")
    assert sorted(data["structure_key"]) == sorted(structure_key(s) for s in structures)
    i = list(data["name"]).index("water0")
    energy, _ = _direct_pyscf(structures[0], SMALL)
    assert data["energies"][i] == pytest.approx(energy, abs=1e-7)


def test_unreadable_hdf5_is_one_line_error(tmp_path):
    (tmp_path / "junk.h5").write_bytes(os.urandom(256))
    run = subprocess.run(_label_cmd("--input", tmp_path / "junk.h5", "--out", tmp_path / "out.h5"), cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert run.stderr.strip().startswith("error: ") and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_optimisation_and_normal_modes():
    """Tight optimisation leaves no force; analytic and pool finite-difference Hessians agree;
    frequencies match PySCF's own harmonic analysis. (HF/STO-3G: this tests the machinery.)"""
    from pyscf.hessian import thermo

    from anif.labeling.reference import build_molecule

    level = Level(method="hf", basis="sto-3g")
    start = Structure([8, 1, 1], WATER + [[0, 0, 0.05], [0, 0.05, 0], [0, -0.02, 0.03]], name="water")
    result = optimize(start, level)
    assert result.converged and result.steps > 1
    check = label_structure(result.structure, level)
    assert np.abs(check.forces).max() < 1e-4  # Ha/A; GAU_TIGHT max gradient is 1.5e-5 Ha/Bohr
    assert check.energy == pytest.approx(result.energy, abs=1e-8)
    assert result.energy < label_structure(start, level).energy - 1e-3

    analytic = hessian(result.structure, level)
    with dask_client(workers=2, task_threads=1) as client:
        numeric = hessian(result.structure, level, finite_difference=True, client=client)
    np.testing.assert_allclose(numeric, analytic, atol=1e-3 * np.abs(analytic).max())

    modes = normal_modes(result.structure, analytic)
    assert modes.modes.shape == (3, 3, 3) and (modes.frequencies > 1000).all()
    np.testing.assert_allclose(np.linalg.norm(modes.modes.reshape(3, -1), axis=1), 1.0)
    np.testing.assert_allclose(modes.frequencies, normal_modes(result.structure, numeric).frequencies, rtol=2e-3)
    h = analytic.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3) * 0.52917721092**2  # (N, N, 3, 3) Ha/Bohr^2
    reference = thermo.harmonic_analysis(build_molecule(result.structure, level), h, imaginary_freq=False)
    np.testing.assert_allclose(np.sort(modes.frequencies), np.sort(reference["freq_wavenumber"]), atol=1.0)


def test_local_dask_cluster_listens_on_loopback_only():
    """Scheduler, workers and the scheduler's HTTP endpoint (dashboard) bind 127.0.0.1 by default."""
    import psutil

    with dask_client(workers=1, task_threads=1) as client:
        assert client.submit(int, "7").result() == 7
        processes = [psutil.Process()] + psutil.Process().children(recursive=True)
        listening = {c.laddr for p in processes for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        dashboard = client.scheduler_info()["services"]["dashboard"]
    assert len(listening) >= 3 and dashboard in {port for _, port in listening}
    assert {ip for ip, _ in listening} == {"127.0.0.1"}


def test_pool_reports_task_errors_without_stopping():
    with dask_client(workers=1, task_threads=1) as client:
        results = dict(as_completed_with_progress(client, int, ["1", "x", "3"], "parse"))
    assert results[0] == 1 and results[2] == 3 and isinstance(results[1], ValueError)


# ---- labels sooner, same numbers (issue 23) ---------------------------------------------
FAST = Level(basis="3-21g")  # wB97X (range-separated: the in-core long-range ERIs run), a small basis for speed


def test_guess_reuse_and_fast_scf_equal_a_from_scratch_pyscf_run(tmp_path):
    """Orbitals of a nearby conformer (through the shared folder, as another worker would
    find them) only change the SCF's path: energy within 1e-6 Ha, forces within 1e-5 Ha/A
    of plain PySCF started from scratch."""
    from anif.labeling.batch import guesses_path
    from anif.labeling.reference import Guesses

    first, second = _waters(2, seed=5, scale=0.03)
    folder = guesses_path(tmp_path / "labels.h5")
    assert folder.name == "labels.dm"
    a = label_structure(first, FAST, guesses=str(folder))
    assert a.ok and a.scf_guess == "minao"
    (stored,) = folder.glob("*/*.npz")
    assert stored.stem == structure_key(first)
    found = Guesses(folder).nearest(second, FAST)  # a fresh process's view of the folder
    assert found is not None and 0 < found[0] < 0.2
    b = label_structure(second, FAST, guesses=str(folder))
    assert b.ok and b.scf_guess.startswith("neighbour:")
    for structure, result in ((first, a), (second, b)):
        energy, forces = _direct_pyscf(structure, FAST)
        assert result.energy == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(result.forces, forces, atol=1e-5)
    far = Structure([8, 1, 1], WATER * 2.2, name="stretched")  # beyond the RMSD cut-off: a fresh guess
    assert Guesses(folder).nearest(far, FAST) is None
    methane = Structure([6, 1, 1, 1, 1], [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                                          [0.63, -0.63, -0.63]])
    assert Guesses(folder).nearest(methane, FAST) is None  # another molecule


def test_todays_path_from_the_environment_ignores_the_shared_orbitals(tmp_path, monkeypatch):
    """ANIF_FAST_SCF=0 (what benchmark_labeling.py --campaign sets for every worker): PySCF's own
    guess and algorithms even where a shared folder holds a neighbour's orbitals; the same label."""
    import anif.labeling.reference as labeling

    read = "import anif.labeling.reference as r; print(r.FAST_SCF)"
    for value, expected in (("0", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", read], env={**os.environ, "ANIF_FAST_SCF": value},
                             capture_output=True, text=True, check=True).stdout.split()
        assert out[-1] == expected
    first, second = _waters(2, seed=5, scale=0.03)
    fast = [label_structure(s, FAST, guesses=str(tmp_path)) for s in (first, second)]
    assert fast[1].scf_guess.startswith("neighbour:")
    monkeypatch.setattr(labeling, "FAST_SCF", False)
    today = label_structure(second, FAST, guesses=str(tmp_path))
    assert today.ok and today.scf_guess == "minao"
    assert today.energy == pytest.approx(fast[1].energy, abs=1e-6)
    np.testing.assert_allclose(today.forces, fast[1].forces, atol=1e-5)


def test_device_selection(monkeypatch, capsys, tmp_path):
    """auto is cpu without CUDA (this machine, or no gpu4pyscf) and cuda with both; --device cuda
    without them is a one-line error, exit 1, before anything is written."""
    import anif.labeling.reference as labeling
    from anif.cli import main
    from anif.distributed import available_cores, worker_policy
    from anif.errors import InputError

    ok, why = labeling.cuda_available()
    if not ok:
        assert labeling.resolve_device("auto") == "cpu" and why
        with pytest.raises(InputError, match="--device cuda"):
            labeling.resolve_device("cuda")
    assert labeling.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(labeling, "cuda_available", lambda: (True, ""))
    assert labeling.resolve_device("auto") == "cuda" and labeling.resolve_device("cuda") == "cuda"
    assert worker_policy(tasks=8, gpu=True) == (1, available_cores())
    monkeypatch.setattr(labeling, "cuda_available", lambda: (False, "no CUDA device here"))
    assert labeling.resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="device must be one of"):
        labeling.resolve_device("gpu")

    (tmp_path / "in.xyz").write_text(WATER_XYZ)
    monkeypatch.setattr(sys, "argv", ["anif", "label", "--input", str(tmp_path / "in.xyz"),
                                      "--out", str(tmp_path / "out.h5"), "--device", "cuda"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: --device cuda: no CUDA device here" and not (tmp_path / "out.h5").exists()


def test_density_fit_is_recorded_and_never_mixed(tmp_path):
    from anif.labeling.oracles import PySCFOracle
    from anif.errors import InputError

    write_xyz(_waters(1, seed=6), tmp_path / "in.xyz")
    out = tmp_path / "labels.h5"
    df = Level(basis="sto-3g", density_fit=True)
    assert label_file(tmp_path / "in.xyz", out, df, workers=1, threads=1).labelled == 1
    assert set(DatasetStore(out, "r").read("H2O")["density_fit"]) == {1}
    with pytest.raises(InputError, match="holds labels with density_fit='1', this run computes density_fit=0"):
        label_file(tmp_path / "in.xyz", out, SMALL, workers=1, threads=1)
    assert PySCFOracle(df).method == "wb97x/sto-3g/df" and PySCFOracle(SMALL).method == "wb97x/sto-3g"


def test_anif_label_and_the_campaign_write_the_same_label_record(tmp_path):
    """One pipeline: `anif label` (label_file) and the campaign's label stage (its oracle from the
    config, the ledger, then dataset.h5) run the same oracle task and store the same columns, with
    the same provenance and the same numbers."""
    from anif.al.config import parse_config
    from anif.al.ledger import Cycle, LabelRecord, Ledger, pack
    from anif.al.oracles import make_oracle
    from anif.al.stages import label as label_stage
    from anif.al.stages.context import Pool, StageContext
    from anif.datasets.store import PROVENANCE
    from anif.labeling.record import COLUMNS

    water = _waters(1, seed=7)[0]
    write_xyz([water], tmp_path / "in.xyz")
    out = tmp_path / "labels.h5"
    assert label_file(tmp_path / "in.xyz", out, replace(SMALL, device="cpu"), workers=1, threads=1).labelled == 1
    config = parse_config({"campaign": {"oracle": "pyscf"}, "oracle": {"basis": "sto-3g", "device": "cpu"},
                           "test_sets": {"t": {"file": "labels.h5"}}}, tmp_path)
    folder = tmp_path / "campaign"
    ledger = Ledger(folder)
    with ledger.transaction():
        ledger.insert_label(LabelRecord(structure_key(water), 1, None, "train", "pending", "oracle", "dnms", "gdb11",
                                        water.name, 0.5, pack(water.numbers), pack(water.coordinates), 0))
    pool = Pool(0, None)
    oracle = make_oracle(config, pool.threads, folder)
    cycle = Cycle(1, "conformational", "label", 0.23)
    label_stage.run(StageContext(config, folder, ledger, oracle, pool, False, cycle))
    ledger.close()

    cli, campaign = DatasetStore(out, "r").read("H2O"), DatasetStore(folder / "dataset.h5", "r").read("H2O")
    assert set(cli) == set(campaign) >= {"structure_key", *PROVENANCE, *COLUMNS}
    for key in ("structure_key", "method", "basis", "basis_convention", "density_fit", "grid", "program", "device",
                "scf_converged", "scf_strategy", "scf_guess", "name", "charge", "multiplicity"):
        assert list(cli[key]) == list(campaign[key]), key
    assert list(campaign["method"]) == ["wb97x/sto-3g"] and campaign["program"][0].startswith("pyscf ")
    assert list(campaign["scf_converged"]) == [1] and campaign["scf_iterations"][0] > 0 and cli["scf_iterations"][0] > 0
    assert campaign["wall_time_s"][0] > 0 and campaign["host"][0] and cli["host"][0]
    assert (campaign["al_cycle"][0], campaign["sampler"][0], campaign["rho_kcal_mol"][0]) == (1, "dnms", 0.5)
    assert (cli["al_cycle"][0], cli["sampler"][0]) == (-1, "")
    energy, forces = _direct_pyscf(water, SMALL)
    for data in (cli, campaign):
        assert data["energies"][0] == pytest.approx(energy, abs=1e-7)
        np.testing.assert_allclose(data["forces"][0], forces, atol=1e-5)


def test_stage_times_are_recorded_and_plotted(tmp_path):
    from anif.al.ledger import Ledger
    from anif.al.report import plot_stage_times, stage_times

    ledger = Ledger(tmp_path)
    for stage, wall in (("sample", 2.0), ("label", 30.0), ("label", 10.0), ("train", 5.0), ("evaluate", 1.0)):
        ledger.add_stage_time(1, stage, wall)
    assert stage_times(ledger) == {1: {"evaluate": 1.0, "label": 40.0, "sample": 2.0, "train": 5.0}}
    ledger.close()
    paths = plot_stage_times(tmp_path, tmp_path)
    assert [p.name for p in paths] == ["stage_times.png", "stage_times.json"] and all(p.exists() for p in paths)
    import json

    groups = json.loads((tmp_path / "stage_times.json").read_text())["groups"]["1"]
    assert groups == {"sampling": 2.0, "labelling": 40.0, "training": 5.0, "evaluation": 1.0}


def test_fast_scf_optimisation_equals_pyscf_own_algorithms(monkeypatch):
    """geomeTRIC moves one Mole in place: the in-core long-range ERIs and the cached AO values
    follow the geometry, so the optimisation takes the same steps to the same minimum."""
    import anif.labeling.reference as labeling

    start = Structure([8, 1, 1], WATER + [[0, 0, 0.05], [0, 0.05, 0], [0, -0.02, 0.03]], name="water")
    fast = optimize(start, FAST, "GAU")
    monkeypatch.setattr(labeling, "FAST_SCF", False)
    plain = optimize(start, FAST, "GAU")
    assert fast.converged and fast.steps == plain.steps
    assert fast.energy == pytest.approx(plain.energy, abs=1e-8)
    np.testing.assert_allclose(fast.structure.coordinates, plain.structure.coordinates, atol=1e-5)


def test_oracle_starts_optimisations_at_the_ani1x_minimum():
    from anif.labeling.oracles import ani1x_minimum

    water = Structure([8, 1, 1], WATER + [[0, 0, 0.05], [0, 0.05, 0], [0, -0.02, 0.03]], name="water")
    relaxed = ani1x_minimum(water)
    assert relaxed.name == "water" and not np.allclose(relaxed.coordinates, water.coordinates)
    oh = np.linalg.norm(relaxed.coordinates[1:] - relaxed.coordinates[0], axis=1)
    np.testing.assert_allclose(oh, 0.96, atol=0.02)
    cation = Structure([8, 1, 1], water.coordinates, charge=1, multiplicity=2)
    assert ani1x_minimum(cation) is cation  # outside ANI-1x: unchanged
