"""anif train: k-fold ensembles trained on ANI-1x-labelled data (ANI-1x as the teacher).

The data are built here: small CHNO molecules embedded with RDKit, randomly displaced
(0.05 A per coordinate), labelled with the ANI-1x ensemble mean energy and forces.
"""

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

from anif.datasets import DatasetStore
from anif.errors import InputError
from anif.models import evaluate, load_model
from anif.structures import from_smiles
from anif.training import (
    ARCHITECTURES,
    TrainSettings,
    assign_folds,
    element_counts,
    fit_self_energies,
    read_conformers,
    train_ensemble,
)
from anif.units import HARTREE_TO_KCAL_MOL

ROOT = Path(__file__).resolve().parents[1]
# a homologous family, so that a molecule held out by the split resembles the training ones
MOLECULES = {
    "methane": "C",
    "ethane": "CC",
    "propane": "CCC",
    "butane": "CCCC",
    "methanol": "CO",
    "ethanol": "CCO",
    "propanol": "CCCO",
    "isopropanol": "CC(C)O",
    "methylamine": "CN",
    "ethylamine": "CCN",
    "dimethylamine": "CNC",
    "dimethyl_ether": "COC",
}
DISPLACEMENT = 0.05  # Angstrom, standard deviation per coordinate


def displaced(structure, n, rng):
    return structure.coordinates[None] + rng.normal(0.0, DISPLACEMENT, (n, structure.n_atoms, 3))


def write_teacher_data(path, teacher, n_conformers, seed, names=MOLECULES, groups_per_molecule=1):
    """Displaced conformers of ``names`` labelled by the teacher ensemble; returns the arrays.

    With ``groups_per_molecule`` > 1 each molecule's conformers are spread over that many
    groups (``name_0``, ``name_1``...), so the split (by group) holds out conformers, not molecules.
    """
    rng = np.random.default_rng(seed)
    store = DatasetStore(path)
    out = {}
    with store.transaction():
        for name in names:
            s = from_smiles(MOLECULES[name], seed=0)
            xyz = displaced(s, n_conformers, rng)
            r = evaluate(teacher, np.tile(s.numbers, (n_conformers, 1)), xyz, forces=True)
            for k, part in enumerate(np.array_split(np.arange(n_conformers), groups_per_molecule)):
                group = name if groups_per_molecule == 1 else f"{name}_{k}"
                store.append(group, s.numbers, xyz[part], r.energy[part], r.forces[part])
            out[name] = (s.numbers, xyz, r)
    return out


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def molecule_data(tmp_path_factory, ani1x):
    """One group per molecule: 12 molecules x 10 conformers."""
    path = tmp_path_factory.mktemp("data") / "molecules.h5"
    return path, write_teacher_data(path, ani1x, 10, seed=1)


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


def test_self_energy_fit_and_split_by_molecule(molecule_data):
    path, _ = molecule_data
    data = read_conformers([path])
    sae = fit_self_energies(data.species, data.energies)
    counts = element_counts(data.species)
    expected = np.linalg.solve(counts.T @ counts, counts.T @ data.energies)  # normal equations
    np.testing.assert_allclose(sae, expected, rtol=1e-9)
    fold_of_group = assign_folds(data, 5, seed=0)
    assert sorted(np.bincount(fold_of_group)) == [2, 2, 2, 3, 3]  # 12 molecules, balanced
    fold = fold_of_group[data.group]
    for g in range(len(data.group_names)):  # every conformer of a molecule in the same fold
        assert len(set(fold[data.group == g])) == 1


def test_training_reaches_teacher_accuracy_and_runs_in_openmm(tmp_path, ani1x):
    """2 'small' members, energies + forces, 20 epochs: held-out RMSE < 4.5 kcal/mol, < half the baseline.

    Each molecule's 21 conformers are spread over 3 groups so that, with seed 2, every member
    trains on every molecule (checked below) and validation measures conformer transfer; the
    held-out set is 10 fresh conformers per molecule.
    """
    train_path = tmp_path / "train.h5"
    write_teacher_data(train_path, ani1x, 21, seed=1, groups_per_molecule=3)
    settings = TrainSettings(
        members=2, folds=3, arch="small", forces=1.0, max_epochs=20, seed=2, batch_size=16, lr=3e-3
    )
    out = tmp_path / "model"
    model = train_ensemble([train_path], out, settings, progress=False)

    data = read_conformers([train_path])
    fold = assign_folds(data, 3, seed=2)
    molecule = np.array([n.rsplit("_", 1)[0] for n in data.group_names])
    for member in range(2):
        assert set(molecule[fold != member]) == set(MOLECULES)

    spec = json.loads((out / "model.json").read_text())
    assert spec["arch"] == "small" and spec["members"] == 2 and spec["layer_dims"] == ARCHITECTURES["small"]
    for f in ["member_0_summary.json", "member_1_summary.json", "member_0_learning_curve.png"]:
        assert (out / f).stat().st_size > 0

    # the saved ensemble, reloaded, reproduces the validation RMSE the training loop reported
    saved = load_model(str(out))
    fold_of_conf = fold[data.group]
    for member in range(2):
        idx = np.flatnonzero(fold_of_conf == member)
        r = evaluate(saved, data.species[idx], data.coordinates[idx], forces=False)
        reported = spec["member_valid_rmse_kcal_mol"][member]
        # float32 total energies (~ -100 Ha) resolve ~0.005 kcal/mol; training works on E - sum(SAE)
        assert rmse_kcal(r.member_energies[member], data.energies[idx]) == pytest.approx(reported, abs=0.02)

    # held-out conformers: fresh displacements of the same molecules
    test = write_teacher_data(tmp_path / "test.h5", ani1x, 10, seed=7)
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
    system.addForce(create_force(model, numbers))
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    direct = evaluate(model, np.tile(numbers, (3, 1)), xyz[:3], forces=False).energy
    for k in range(3):
        context.setPositions(xyz[k] / 10.0)  # nm
        energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
        assert energy == pytest.approx(direct[k] * HARTREE_TO_KJ_MOL, abs=0.05)


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, molecule_data):
    path, _ = molecule_data
    out = tmp_path / "killed"
    args = ["train", "--data", path, "--out", out, "--members", "1", "--folds", "2", "--arch", "small"]
    args += ["--max-epochs", "30", "--batch-size", "8", "--seed", "3", "--patience", "1000"]
    proc = run_cli(*args)
    ckpt = out / "checkpoints" / "member_0.pt"
    killed_after = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file():
            epoch = torch.load(ckpt, weights_only=False)["history"][-1]["epoch"]
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
    got = json.loads((out / "member_0_summary.json").read_text())["history"]
    want = json.loads((reference / "member_0_summary.json").read_text())["history"]
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


def test_init_ani1x_starts_from_ani1x_accuracy(tmp_path, molecule_data, ani1x_torchani):
    """Epoch 0 of member i = ANI-1x network i against the ANI-1x ensemble mean (the labels)."""
    path, _ = molecule_data
    settings = TrainSettings(members=2, folds=2, arch="ani1x", init="ani1x", max_epochs=1, seed=0)
    train_ensemble([path], tmp_path / "ft", settings, progress=False)
    data = read_conformers([path])
    fold = assign_folds(data, 2, seed=0)[data.group]
    species = torch.as_tensor(data.species)
    coords = torch.as_tensor(data.coordinates, dtype=torch.float32)
    with torch.no_grad():
        members = ani1x_torchani((species, coords), ensemble_values=True).energies.double().numpy()
    for member in range(2):
        idx = fold == member
        expected = rmse_kcal(members[member, idx], members[:, idx].mean(0))
        summary = json.loads((tmp_path / "ft" / f"member_{member}_summary.json").read_text())
        epoch0 = summary["history"][0]["valid_rmse_kcal_mol"]
        assert epoch0 == pytest.approx(expected, rel=1e-3, abs=1e-3)
        assert epoch0 < 2.0  # vs hundreds of kcal/mol from random weights
    spec = json.loads((tmp_path / "ft" / "model.json").read_text())
    assert spec["init"] == "ani1x"
    np.testing.assert_allclose(spec["self_energies"], ani1x_torchani.energy_shifter.self_energies.numpy())


def test_parallel_members_match_sequential(tmp_path, molecule_data):
    """--jobs 2 (forked member processes) gives bit-for-bit the sequential result."""
    path, _ = molecule_data
    settings = TrainSettings(members=2, folds=2, arch="small", max_epochs=3, batch_size=16)
    train_ensemble([path], tmp_path / "seq", settings, jobs=1, progress=False)
    train_ensemble([path], tmp_path / "par", settings, jobs=2, progress=False)
    a = torch.load(tmp_path / "seq" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "par" / "weights.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def _cli_error(monkeypatch, capsys, *args):
    from anif.cli import main

    monkeypatch.setattr(sys, "argv", ["anif", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


def test_bad_input_is_a_clear_error(tmp_path, molecule_data, monkeypatch, capsys):
    import h5py

    path, _ = molecule_data
    out = tmp_path / "m"
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    assert "no conformers" in _cli_error(monkeypatch, capsys, "train", "--data", empty, "--out", out)

    sulfur = tmp_path / "sulfur.h5"
    DatasetStore(sulfur).append("methanethiol", [6, 16, 1, 1, 1, 1], np.random.rand(2, 6, 3) * 3, [-438.0, -438.1])
    assert "element(s) S not supported" in _cli_error(monkeypatch, capsys, "train", "--data", sulfur, "--out", out)

    no_forces = tmp_path / "no_forces.h5"
    DatasetStore(no_forces).append("water", [8, 1, 1], [[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]], [-76.4])
    err = _cli_error(monkeypatch, capsys, "train", "--data", no_forces, "--out", out, "--forces", "0.1")
    assert "lacks forces" in err

    err = _cli_error(monkeypatch, capsys, "train", "--data", path, "--out", out, "--folds", "13", "--members", "2")
    assert "--folds 13 is larger than the number of molecules (12)" in err
    err = _cli_error(monkeypatch, capsys, "train", "--data", path, "--out", out, "--folds", "2", "--members", "3")
    assert "--members 3 > --folds 2" in err
    assert not out.exists()  # nothing half-written
