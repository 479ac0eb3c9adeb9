"""anif train: k-fold ensembles trained on ANI-1x-labelled data (ANI-1x as the teacher).

The data: small CHNO molecules embedded with RDKit, randomly displaced (0.05 A per coordinate),
labelled with the ANI-1x ensemble mean energy and forces (anif.labeling.teacher).
"""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from anif.datasets.store import DatasetStore
from anif.errors import InputError
from anif.models.ensemble import build_ani, evaluate, load_model
from anif.structures import from_smiles
from anif.labeling.teacher import write_teacher_data
from anif.training import ARCHITECTURES, INITIAL_LR, TrainSettings, train_ensemble
from anif.training.trainer import load_checkpoint
from anif.training.data import (
    SYMBOLS,
    ConformerSet,
    TrainingData,
    assign_folds,
    element_counts,
    fit_self_energies,
    read_conformers,
)
from anif.units import HARTREE_TO_KCAL_MOL
from conftest import float32_qbc_atol

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def molecule_data(tmp_path_factory, ani1x):
    """12 molecules x 10 conformers, one group per molecule."""
    path = tmp_path_factory.mktemp("data") / "molecules.h5"
    return path, write_teacher_data(path, 10, seed=1)


def run_cli(*args):
    """``python -m anif ARGS`` as a subprocess on one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "anif", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def rmse_kcal(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)) * HARTREE_TO_KCAL_MOL)


def history(directory, member):
    return json.loads((Path(directory) / f"member_{member}_summary.json").read_text())["history"]


def test_self_energy_fit_and_splits(molecule_data):
    path, _ = molecule_data
    data = read_conformers([path])
    sae = fit_self_energies(data.species, data.energies)
    counts = element_counts(data.species)
    expected = np.linalg.solve(counts.T @ counts, counts.T @ data.energies)  # normal equations
    np.testing.assert_allclose(sae, expected, rtol=1e-9)

    # by conformer (default): every conformer in exactly one of 5 validation folds of ~24
    fold = assign_folds(data, 5, seed=0)
    valid_sets = [set(np.flatnonzero(fold == k)) for k in range(5)]
    assert set().union(*valid_sets) == set(range(len(data)))  # every conformer held out once...
    assert sum(len(v) for v in valid_sets) == len(data)  # ...and only once
    assert all(12 <= len(v) <= 36 for v in valid_sets)
    assert all(len(set(fold[data.group == g])) >= 3 for g in range(len(data.group_names)))  # molecules spread
    assert not np.array_equal(fold, assign_folds(data, 5, seed=1))  # the seed shuffles
    # a conformer keeps its fold in a larger data set (another order, other conformers beside it)
    part = np.random.default_rng(0).permutation(len(data))[:70]
    subset = ConformerSet(data.species[part], data.coordinates[part], data.energies[part], None, data.group[part],
                          data.group_names, data.method[part])
    np.testing.assert_array_equal(assign_folds(subset, 5, seed=0), fold[part])

    # by molecule: whole molecules per fold, balanced
    fold = assign_folds(data, 5, seed=0, split="molecule")
    for g in range(len(data.group_names)):
        assert len(set(fold[data.group == g])) == 1
    assert sorted(np.bincount(fold)) == [20, 20, 20, 30, 30]


def test_scratch_members_differ_by_construction_and_keep_a_trained_epoch(tmp_path, molecule_data):
    """From scratch, each member starts as its own random function at the scale of the self-energy fit's
    residual (not at the fit, which would be one function for all), and the saved epoch is a trained one:
    the members disagree on every conformer."""
    from anif.models.ensemble import evaluate, load_model
    from anif.training.trainer import MIN_OUTPUT_SCALE, output_scale

    path, _ = molecule_data
    settings = TrainSettings(members=2, folds=3, arch="small", max_epochs=3, forces=0)
    result = train_ensemble([path], tmp_path / "m", settings, progress=False)
    data = read_conformers([path])
    residual = data.energies - element_counts(data.species) @ fit_self_energies(data.species, data.energies)
    fold = assign_folds(data, 3, seed=0)
    fit_rmse = [float(np.sqrt(np.mean(residual[fold == m] ** 2))) * HARTREE_TO_KCAL_MOL for m in range(2)]
    starts = [history(tmp_path / "m", m)[0]["valid_rmse_kcal_mol"] for m in range(2)]
    assert starts[0] != pytest.approx(starts[1], rel=1e-3)  # two different random functions
    assert all(s != pytest.approx(f, rel=1e-3) for s, f in zip(starts, fit_rmse))  # neither is the fit
    assert all(m.best_epoch >= 1 for m in result.members)
    per_atom = float(np.sqrt(np.mean((residual / data.n_atoms) ** 2)))
    assert output_scale(residual, data.n_atoms) == pytest.approx(max(per_atom, MIN_OUTPUT_SCALE))
    model = load_model(str(tmp_path / "m"))
    n = int(data.n_atoms[0])
    members = evaluate(model, data.species[:4, :n], data.coordinates[:4, :n]).member_energies
    assert np.all(np.abs(members[0] - members[1]) > 1e-7)
    assert result.force_weight == 0.0


def test_kernel_forces_match_autograd_through_torchani(molecule_data):
    """Forces and the force loss's weight gradients: compiled AEV products vs autograd of torchani's AEV."""
    path, _ = molecule_data
    data = read_conformers([path])
    sae = fit_self_energies(data.species, data.energies)
    ani = build_ani(SYMBOLS, ARCHITECTURES["small"], [0.0] * 4, 1).double()
    networks = ani.neural_networks.members[0]
    for p in networks.parameters():  # non-zero output layers, so forces are not trivially zero
        torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(p.numel()))
    fast = TrainingData(data, ani, sae, kernels=True)
    slow = TrainingData(data, ani, sae, kernels=False)
    assert fast.aevs is not None and slow.aevs is None
    for d in (fast, slow):  # float64 throughout, so the comparison is tight
        d.coordinates = d.coordinates.double()
        d.forces = d.forces.double()
        if d.aevs is not None:
            d.aevs = d._compute_aevs()
    idx = torch.tensor([3, 17, 40, 41, 99, 118])  # molecules of different sizes: padding inside the batch
    grads = []
    for d in (fast, slow):
        energies, forces = d.evaluate(networks, idx, forces=True, create_graph=True)
        loss = ((forces - d.forces[idx, : forces.shape[1]]) ** 2).sum() + energies.sum()
        grads.append([g.clone() for g in torch.autograd.grad(loss, list(networks.parameters()))])
        grads[-1].append(forces.detach())
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert float(grads[0][-1].abs().max()) > 1e-3


def test_training_reaches_teacher_accuracy_and_runs_in_openmm(tmp_path, ani1x):
    """2 'small' members, default settings (split by conformer, forces in the loss), 20 epochs:
    held-out RMSE on new conformers < 4.5 kcal/mol and < 0.5 x the self-energy fit."""
    train_path = tmp_path / "train.h5"
    write_teacher_data(train_path, 21, seed=1)
    settings = TrainSettings(members=2, folds=3, arch="small", max_epochs=20, seed=2)
    out = tmp_path / "model"
    result = train_ensemble([train_path], out, settings, progress=False)
    assert result.force_weight > 0  # the teacher data hold forces

    spec = json.loads((out / "model.json").read_text())
    assert spec["arch"] == "small" and spec["members"] == 2 and spec["layer_dims"] == ARCHITECTURES["small"]
    assert spec["split"] == "conformer"
    for f in ["member_0_summary.json", "member_1_summary.json", "member_0_learning_curve.png"]:
        assert (out / f).stat().st_size > 0

    # the saved ensemble, reloaded, reproduces the validation RMSE the training loop reported
    data = read_conformers([train_path])
    fold = assign_folds(data, 3, seed=2)
    saved = load_model(str(out))
    for member in range(2):
        idx = np.flatnonzero(fold == member)
        r = evaluate(saved, data.species[idx], data.coordinates[idx], forces=False)
        reported = spec["member_valid_rmse_kcal_mol"][member]
        # float32 total energies (~ -100 Ha) resolve ~0.005 kcal/mol; training works on E - sum(SAE)
        assert rmse_kcal(r.member_energies[member], data.energies[idx]) == pytest.approx(reported, abs=0.02)
        # the saved epoch is the trained epoch of lowest validation MAE (a scratch member's epoch 0 is no candidate)
        history = json.loads((out / f"member_{member}_summary.json").read_text())["history"]
        mae = [h["valid_mae_kcal_mol"] for h in history[1:]]
        assert spec["member_best_epoch"][member] == 1 + int(np.argmin(mae))
        saved_mae = np.mean(np.abs(r.member_energies[member] - data.energies[idx])) * HARTREE_TO_KCAL_MOL
        assert saved_mae == pytest.approx(min(mae), abs=0.02)

    # held-out conformers: fresh displacements of the same molecules
    test = write_teacher_data(tmp_path / "test.h5", 10, seed=7)
    sae = np.asarray(spec["self_energies"])
    pred, ref, base = [], [], []
    for numbers, xyz, teacher in test.values():
        species = np.tile(numbers, (len(xyz), 1))
        pred.append(evaluate(saved, species, xyz, forces=False).energy)
        ref.append(teacher.energy)
        base.append(element_counts(species) @ sae)
    held_out = rmse_kcal(np.concatenate(pred), np.concatenate(ref))
    baseline = rmse_kcal(np.concatenate(base), np.concatenate(ref))
    print(f"held-out RMSE {held_out:.2f} kcal/mol, self-energy baseline {baseline:.2f} kcal/mol")
    assert held_out < 4.5
    assert held_out < 0.5 * baseline

    # same energies through OpenMM (TorchForce, Reference platform) as through the training code
    import openmm

    from anif.openmm_plugin import create_force
    from anif.units import HARTREE_TO_KJ_MOL

    numbers, xyz, _ = test["ethanol"]
    system = openmm.System()
    for _ in numbers:
        system.addParticle(1.0)
    system.addForce(create_force(result.model, numbers))
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    direct = evaluate(result.model, np.tile(numbers, (3, 1)), xyz[:3], forces=False).energy
    for k in range(3):
        context.setPositions(xyz[k] / 10.0)  # nm
        energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
        assert energy == pytest.approx(direct[k] * HARTREE_TO_KJ_MOL, abs=0.05)


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, molecule_data):
    path, _ = molecule_data
    out = tmp_path / "killed"
    args = ["train", "--data", path, "--out", out, "--members", "1", "--folds", "2", "--arch", "small"]
    args += ["--max-epochs", "30", "--batch-size", "8", "--seed", "3", "--patience", "1000", "--checkpoint-every", "0"]
    proc = run_cli(*args)
    ckpt = out / "checkpoints" / "member_0.pt"
    killed_after = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file():
            try:
                epoch = load_checkpoint(ckpt)["history"][-1]["epoch"]
            except InputError:  # caught between a write and its rename: cannot happen, but retry
                continue
            if epoch >= 4:
                proc.send_signal(signal.SIGKILL)
                killed_after = epoch
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_after is not None and proc.returncode == -signal.SIGKILL, proc.stderr.read()
    assert not (out / "model.json").exists()

    resumed = run_cli(*args)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "member 0: resuming after epoch" in stdout

    settings = TrainSettings(members=1, folds=2, arch="small", max_epochs=30, batch_size=8, seed=3, patience=1000)
    reference = tmp_path / "reference"
    train_ensemble([path], reference, settings, progress=False)
    got, want = history(out, 0), history(reference, 0)
    assert [h["epoch"] for h in got] == list(range(31))
    np.testing.assert_allclose(
        [h["valid_rmse_kcal_mol"] for h in got], [h["valid_rmse_kcal_mol"] for h in want], rtol=1e-5
    )
    a = torch.load(out / "weights.pt", weights_only=True)
    b = torch.load(reference / "weights.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)

    # a different run cannot silently resume from these checkpoints
    with pytest.raises(InputError, match="different seed"):
        train_ensemble([path], out, TrainSettings(**{**settings.__dict__, "seed": 4}), progress=False)

    # raising --max-epochs continues the finished run: same as training 40 epochs at once
    longer = TrainSettings(**{**settings.__dict__, "max_epochs": 40})
    train_ensemble([path], out, longer, progress=False)
    train_ensemble([path], tmp_path / "forty", longer, progress=False)
    got, want = history(out, 0), history(tmp_path / "forty", 0)
    assert [h["epoch"] for h in got] == list(range(41))
    np.testing.assert_allclose(
        [h["valid_rmse_kcal_mol"] for h in got], [h["valid_rmse_kcal_mol"] for h in want], rtol=1e-5
    )


def test_warm_start_from_an_anif_ensemble_reproduces_it(tmp_path, molecule_data):
    """Epoch 0 of a run started from an anif ensemble: member i's energies are the prior member i's."""
    path, _ = molecule_data
    prior = tmp_path / "prior"
    train_ensemble([path], prior, TrainSettings(members=2, folds=2, arch="small", max_epochs=5), progress=False)
    settings = TrainSettings(members=3, folds=3, init=str(prior), max_epochs=3, seed=5)
    result = train_ensemble([path], tmp_path / "next", settings, progress=False)
    spec = json.loads((tmp_path / "next" / "model.json").read_text())
    assert spec["arch"] == "small" and spec["init"] == str(prior)
    np.testing.assert_allclose(spec["self_energies"], json.loads((prior / "model.json").read_text())["self_energies"])

    data = read_conformers([path])
    fold = assign_folds(data, 3, seed=5)
    # a float64 reference; training's epoch-0 energies are float32 totals (one ulp of the largest)
    members = evaluate(load_model(str(prior), implementation="stock").double(), data.species, data.coordinates,
                       forces=False).member_energies
    tolerance = max(2e-3, float32_qbc_atol(np.abs(data.energies).max()))
    for member in range(3):
        idx = fold == member
        expected = rmse_kcal(members[member % 2, idx], data.energies[idx])  # member 2 starts from prior member 0
        assert history(tmp_path / "next", member)[0]["valid_rmse_kcal_mol"] == pytest.approx(expected, abs=tolerance)
    assert result.lr == INITIAL_LR["model"]  # the warm-start learning rate
    assert any("trained with another folds, seed" in w for w in result.warnings)  # its folds differ

    with pytest.raises(InputError, match="does not match the shapes"):
        train_ensemble([path], tmp_path / "x", TrainSettings(members=2, folds=2, init=str(prior), arch="ani1x"),
                       progress=False)


def test_init_ani1x_starts_from_ani1x_and_fine_tunes(tmp_path, molecule_data, ani1x_torchani):
    """Epoch 0 of member i = ANI-1x network i against the ANI-1x ensemble mean (the labels);
    fine-tuning with the default learning rate improves on it."""
    path, _ = molecule_data
    settings = TrainSettings(members=2, folds=2, init="ani1x", max_epochs=4, seed=0)
    result = train_ensemble([path], tmp_path / "ft", settings, progress=False)
    data = read_conformers([path])
    fold = assign_folds(data, 2, seed=0)
    species = torch.as_tensor(data.species)
    coords = torch.as_tensor(data.coordinates)  # float64: float32 totals (~ -100 Ha) round at 0.005 kcal/mol
    with torch.no_grad():
        members = copy.deepcopy(ani1x_torchani).double()((species, coords), ensemble_values=True).energies.numpy()
    for member in range(2):
        idx = fold == member
        assert rmse_kcal(members[:, idx].mean(0), data.energies[idx]) < 0.02  # the labels: the ANI-1x mean
        expected = rmse_kcal(members[member, idx], data.energies[idx])
        h = history(tmp_path / "ft", member)
        assert h[0]["valid_rmse_kcal_mol"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
        assert h[0]["valid_rmse_kcal_mol"] < 2.0  # vs hundreds of kcal/mol from random weights
        assert max(e["valid_rmse_kcal_mol"] for e in h) < 2 * h[0]["valid_rmse_kcal_mol"]  # no blow-up
        assert result.members[member].best_valid_rmse_kcal_mol < 0.9 * h[0]["valid_rmse_kcal_mol"]
    spec = json.loads((tmp_path / "ft" / "model.json").read_text())
    assert spec["init"] == "ani1x" and spec["arch"] == "ani1x"
    np.testing.assert_allclose(spec["self_energies"], ani1x_torchani.energy_shifter.self_energies.numpy())


def test_parallel_members_match_sequential(tmp_path, molecule_data):
    """--workers 2 (forked member processes) gives bit-for-bit the sequential result."""
    path, _ = molecule_data
    settings = TrainSettings(members=2, folds=2, arch="small", max_epochs=3, batch_size=16)
    train_ensemble([path], tmp_path / "seq", settings, jobs=1, progress=False)
    train_ensemble([path], tmp_path / "par", settings, jobs=2, progress=False)
    a = torch.load(tmp_path / "seq" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "par" / "weights.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_comp6_gradients_are_read_as_forces(s66x8_path):
    """COMP6 v1 stores dE/dx under 'forces'; training reads forces = -dE/dx like anif.datasets.comp6."""
    from anif.datasets.comp6 import read_comp6_file

    data = read_conformers([s66x8_path])
    molecules = {m.name: m for m in read_comp6_file(s66x8_path)}
    water = molecules["s66x8/mol00"]
    rows = data.group == data.group_names.index("s66x8/mol00")
    np.testing.assert_allclose(data.forces[rows][:, : len(water.species)], water.forces)
    assert set(data.method) == {"wb97x/6-31g*"}  # the legacy 'lot' is the label's method


def _cli_error(monkeypatch, capsys, *args):
    from anif.cli import main

    monkeypatch.setattr(sys, "argv", ["anif", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1
    return err


def test_candidates_are_refused_unless_allowed(tmp_path, molecule_data, monkeypatch, capsys, ani1x):
    """Sampler candidates carry the ensemble's mean energy as a placeholder: not training data."""
    from anif.sampling.candidates import Candidate, write_candidates

    path, _ = molecule_data
    candidates = tmp_path / "candidates.h5"
    s = from_smiles("CCO", seed=3)
    write_candidates(candidates, [Candidate(s, 0.5, -155.0, {"sampler": "rts"})])
    err = _cli_error(monkeypatch, capsys, "train", "--data", path, candidates, "--out", tmp_path / "m")
    assert "1 of 121 conformers are not reference labels" in err and "--allow-unlabelled" in err
    assert not (tmp_path / "m").exists()
    settings = TrainSettings(members=2, folds=2, arch="small", max_epochs=1, allow_unlabelled=True)
    result = train_ensemble([path, candidates], tmp_path / "m", settings, progress=False)
    assert result.force_weight == 0  # the candidate has no forces: energies only
    assert json.loads((tmp_path / "m" / "model.json").read_text())["conformers"] == 121


def test_bad_input_is_a_clear_error(tmp_path, molecule_data, monkeypatch, capsys):
    import h5py

    path, _ = molecule_data
    out = tmp_path / "m"
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    assert "no conformers" in _cli_error(monkeypatch, capsys, "train", "--data", empty, "--out", out)

    sulfur = tmp_path / "sulfur.h5"
    thiol = from_smiles("CS", seed=0)  # a real geometry: only the element is wrong (random atoms may overlap)
    DatasetStore(sulfur).append("methanethiol", thiol.numbers, np.stack([thiol.coordinates] * 2), [-438.0, -438.1],
                                method="wb97x/6-31g*")
    assert "element(s) S not supported" in _cli_error(monkeypatch, capsys, "train", "--data", sulfur, "--out", out)

    no_forces = tmp_path / "no_forces.h5"
    DatasetStore(no_forces).append("water", [8, 1, 1], [[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]], [-76.4],
                                   method="wb97x/6-31g*")
    err = _cli_error(monkeypatch, capsys, "train", "--data", no_forces, "--out", out, "--forces", "0.1")
    assert "lack forces" in err

    no_energies = tmp_path / "no_energies.h5"
    with h5py.File(no_energies, "w") as f:
        f["water/species"] = np.array([8, 1, 1])
        f["water/coordinates"] = np.zeros((1, 3, 3))
    assert "has no energies" in _cli_error(monkeypatch, capsys, "train", "--data", no_energies, "--out", out)

    base = ["train", "--data", path, "--out", out]
    err = _cli_error(monkeypatch, capsys, *base, "--split", "molecule", "--folds", "13", "--members", "2")
    assert "--folds 13 is larger than the number of molecules (12)" in err
    err = _cli_error(monkeypatch, capsys, *base, "--folds", "2", "--members", "3")
    assert "--members 3 > --folds 2" in err
    assert "--batch-size must be at least 1" in _cli_error(monkeypatch, capsys, *base, "--batch-size", "0")
    assert "--max-epochs must be at least 1" in _cli_error(monkeypatch, capsys, *base, "--max-epochs", "0")
    assert "--lr must be a positive number" in _cli_error(monkeypatch, capsys, *base, "--lr", "-1")
    assert "--forces must be >= 0" in _cli_error(monkeypatch, capsys, *base, "--forces", "-1")
    assert "unknown --split" in _cli_error(monkeypatch, capsys, *base, "--split", "atom")
    assert "--init" in _cli_error(monkeypatch, capsys, *base, "--init", tmp_path / "nowhere")
    assert not out.exists()  # nothing half-written

    blocked = tmp_path / "file"
    blocked.write_text("x")
    assert "is not a directory" in _cli_error(monkeypatch, capsys, "train", "--data", path, "--out", blocked)


class _Planted:
    """Pickles to a call of os.system: what a planted checkpoint would run on a full unpickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    ckpt = tmp_path / "member_0.pt"
    torch.save({"history": [], "payload": _Planted(marker)}, ckpt)
    with pytest.raises(InputError, match="unreadable checkpoint"):
        load_checkpoint(ckpt)
    assert not marker.exists()
