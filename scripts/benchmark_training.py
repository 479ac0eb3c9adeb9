"""Training speed: anif train against a plain torchani training loop on the same data, and the
time a warm start saves.

One run measures, on ANI-1x-labelled displaced conformers of 14 small molecules (anif.labeling.teacher),
or on --data FILE:

1. conformers/s of one member's fastest epoch (training pass + validation pass; the fastest,
   as the machine is shared), the two loops alternating epoch by epoch:
   anif (AEVs cached; forces through the compiled AEV Jacobian products) vs a plain torchani
   loop (the full ANI model forward, AEVs recomputed every batch, forces by double backward
   through torchani, as in torchani's nnp_training example), energies only and with forces;
2. wall time of a 2-member ensemble: members one after another vs two member processes;
3. warm start, as the active-learning loop retrains: a 2-member 'small' ensemble trained on
   cycle-0 data (48 conformers per molecule), then cycle-1 data (cycle 0 + 32 new conformers
   per molecule) trained from scratch and from the cycle-0 ensemble (--init MODEL_DIR): the
   training time the warm start needs to reach the cold start's final RMSE on fresh conformers
   (the warm run continues in chunks of growing --max-epochs, scored after each), and each
   member's time to the cold start's best validation RMSE (folds stay put as the data grow, so
   a warm member never validates on its start's training data).

Usage: python scripts/benchmark_training.py [--data FILE] [--epochs 6] [--arch ani1x] [--skip-warm]
Needs TORCHANI_DATA_DIR pointing at the ANI-1x networks when it builds its own data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from anif.models.ensemble import build_ani, evaluate, load_model  # noqa: E402
from anif.labeling.teacher import SMALL_MOLECULES, write_teacher_data  # noqa: E402
from anif.training import ARCHITECTURES, TrainSettings, train_ensemble  # noqa: E402
from anif.training.data import SYMBOLS, fit_self_energies, read_conformers  # noqa: E402
from anif.units import HARTREE_TO_KCAL_MOL  # noqa: E402

MOLECULES = {**SMALL_MOLECULES, "acetaldehyde": "CC=O", "formamide": "NC=O"}


def torchani_epochs(data_file: Path, arch: str, forces: float, batch: int):
    """One epoch (training + validation pass) of a plain torchani loop (nnp_training style) per
    ``next()``; yields its seconds."""
    data = read_conformers([data_file])
    sae = fit_self_energies(data.species, data.energies)
    model = build_ani(SYMBOLS, ARCHITECTURES[arch], sae.tolist(), 1)
    species = torch.as_tensor(data.species)
    coords = torch.as_tensor(data.coordinates, dtype=torch.float32)
    energies = torch.as_tensor(data.energies, dtype=torch.float64)
    ref_forces = None if data.forces is None else torch.as_tensor(data.forces, dtype=torch.float32)
    n_atoms = (species >= 0).sum(1)
    fold = np.random.default_rng(0).permutation(len(data)) % 5
    train, valid = torch.as_tensor(np.flatnonzero(fold != 0)), torch.as_tensor(np.flatnonzero(fold == 0))
    opt = torch.optim.AdamW(model.neural_networks.parameters(), lr=1e-3)
    while True:
        t0 = time.perf_counter()
        for idx in train[torch.randperm(len(train))].split(batch):
            x = coords[idx].requires_grad_(forces > 0)
            pred = model((species[idx], x)).energies
            loss = (((pred - energies[idx].float()) / n_atoms[idx].sqrt()) ** 2).mean()
            if forces > 0:
                grad = torch.autograd.grad(pred.sum(), x, create_graph=True)[0]
                loss = loss + forces * ((-grad - ref_forces[idx]) ** 2).sum((1, 2)).div(3 * n_atoms[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        for idx in valid.split(1024):
            x = coords[idx].requires_grad_(forces > 0)
            with torch.set_grad_enabled(forces > 0):
                pred = model((species[idx], x)).energies
                if forces > 0:
                    torch.autograd.grad(pred.sum(), x)
        yield time.perf_counter() - t0


def rates(data_file: Path, arch: str, epochs: int, forces: float, batch: int) -> tuple[float, float, int]:
    """Conformers (train + validation) per second of the fastest epoch: (anif, plain torchani, conformers).

    The two alternate epoch by epoch (anif's run continues with a larger --max-epochs each time;
    its epoch seconds come from the member history), so both see the same machine load.
    """
    out = Path(tempfile.mkdtemp())
    plain = torchani_epochs(data_file, arch, forces, batch)
    anif_times, plain_times = [], []
    try:
        for epoch in range(1, epochs + 1):
            settings = TrainSettings(members=1, folds=5, arch=arch, forces=forces, max_epochs=epoch, batch_size=batch,
                                     patience=1000)
            result = train_ensemble([data_file], out, settings, progress=False)
            anif_times.append(result.members[0].history[-1]["seconds"])
            plain_times.append(next(plain))
        n = json.loads((out / "model.json").read_text())["conformers"]
    finally:
        shutil.rmtree(out)
    return n / min(anif_times), n / min(plain_times[1:] or plain_times), n


def ensemble_wall(data_file: Path, arch: str, epochs: int, jobs: int, threads: int, batch: int) -> float:
    out = Path(tempfile.mkdtemp())
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        settings = TrainSettings(members=2, folds=5, arch=arch, max_epochs=epochs, batch_size=batch, patience=1000)
        train_ensemble([data_file], out, settings, jobs=jobs, progress=False)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out)


def held_out_rmse(model_dir: Path, test_file: Path) -> float:
    test = read_conformers([test_file])
    pred = evaluate(load_model(str(model_dir)), test.species, test.coordinates, forces=False).energy
    return float(np.sqrt(np.mean((pred - test.energies) ** 2))) * HARTREE_TO_KCAL_MOL


def seconds_to_reach(history: list[dict], target: float) -> float:
    """Training seconds until the validation RMSE first reaches ``target`` (inf if never)."""
    elapsed = 0.0
    for h in history:
        elapsed += h["seconds"]
        if h["valid_rmse_kcal_mol"] <= target:
            return elapsed
    return float("inf")


def warm_start(tmp: Path, warm_lr: float | None) -> None:
    """Cycle 1 trained cold and warm (from cycle 0); the warm run in chunks of growing --max-epochs
    (each continues the last), its saved ensemble scored on fresh conformers after each chunk."""
    from anif.datasets.store import merge

    write_teacher_data(tmp / "cycle0.h5", 48, seed=21)
    write_teacher_data(tmp / "new.h5", 32, seed=22)
    write_teacher_data(tmp / "test.h5", 16, seed=23)
    merge([tmp / "cycle0.h5", tmp / "new.h5"], tmp / "cycle1.h5")
    base = dict(members=2, arch="small")
    t0 = time.perf_counter()
    train_ensemble([tmp / "cycle0.h5"], tmp / "model0", TrainSettings(**base), jobs=2, progress=False)
    print(f"cycle 0 (576 conformers) from scratch: {time.perf_counter() - t0:.0f} s wall, held-out RMSE "
          f"{held_out_rmse(tmp / 'model0', tmp / 'test.h5'):.3f} kcal/mol", flush=True)
    t0 = time.perf_counter()
    cold = train_ensemble([tmp / "cycle1.h5"], tmp / "cold", TrainSettings(**base), jobs=2, progress=False)
    cold_wall, cold_test = time.perf_counter() - t0, held_out_rmse(tmp / "cold", tmp / "test.h5")
    cold_seconds = max(sum(h["seconds"] for h in m.history) for m in cold.members)
    print(f"cycle 1 (960 conformers) cold: {cold_wall:.0f} s wall, {cold_seconds:.0f} s training "
          f"({[m.epochs for m in cold.members]} epochs), held-out RMSE {cold_test:.3f} kcal/mol", flush=True)
    reached = None
    for epochs in (5, 10, 20, 40, 80, 160, 300):
        settings = TrainSettings(**base, init=str(tmp / "model0"), lr=warm_lr, max_epochs=epochs)
        warm = train_ensemble([tmp / "cycle1.h5"], tmp / "warm", settings, jobs=2, progress=False)
        seconds = max(sum(h["seconds"] for h in m.history) for m in warm.members)
        test = held_out_rmse(tmp / "warm", tmp / "test.h5")
        print(f"  warm (lr {warm.lr:g}) after {[m.epochs for m in warm.members]} epochs, {seconds:.0f} s training: "
              f"held-out RMSE {test:.3f} kcal/mol", flush=True)
        if reached is None and test <= cold_test:
            reached = seconds
        if all(m.stop_reason != "max epochs" for m in warm.members):
            break
    verdict = (f"reaches the cold start's held-out RMSE after {reached:.0f} s of training (x{cold_seconds / reached:.1f} "
               "faster)" if reached else "does not reach the cold start's held-out RMSE")
    print(f"warm start {verdict}")
    for c, w in zip(cold.members, warm.members):
        target = c.best_valid_rmse_kcal_mol
        print(f"  member {c.index}: cold best validation {target:.3f} after {seconds_to_reach(c.history, target):.0f} s; "
              f"warm starts at {w.history[0]['valid_rmse_kcal_mol']:.3f}, reaches {target:.3f} after "
              f"{seconds_to_reach(w.history, target):.0f} s (best {w.best_valid_rmse_kcal_mol:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="ANI-format HDF5 (default: build 14 molecules x --conformers)")
    parser.add_argument("--conformers", type=int, default=100, help="conformers per molecule when building data")
    parser.add_argument("--arch", default="ani1x", choices=sorted(ARCHITECTURES))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads for the rate runs")
    parser.add_argument("--skip-rates", action="store_true", help="skip the conformers/s comparison")
    parser.add_argument("--skip-wall", action="store_true", help="skip the 2-member wall-time runs")
    parser.add_argument("--skip-warm", action="store_true", help="skip the warm-start measurement")
    parser.add_argument("--warm-lr", type=float, help="learning rate of the warm start (default: anif's)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data_file = args.data
    if data_file is None:
        data_file = tmp / "bench.h5"
        write_teacher_data(data_file, args.conformers, seed=0, molecules=MOLECULES)
    cores = os.cpu_count()
    print(f"data {data_file}, arch {args.arch}, batch {args.batch_size}, {cores} cores, load {os.getloadavg()[0]:.1f}")
    for threads in [] if args.skip_rates else args.threads:
        torch.set_num_threads(threads)
        for forces in (0.0, 0.1):
            a, b, n = rates(data_file, args.arch, args.epochs, forces, args.batch_size)
            label = "energies + forces" if forces else "energies only"
            print(f"{threads} thread(s), {label:17s}: anif {a:8.0f} conf/s, plain torchani {b:8.0f} conf/s, "
                  f"x{a / b:.1f} ({n} conformers)", flush=True)
    if not args.skip_wall:
        for jobs, threads in ((1, 1), (2, max(1, cores // 2))):
            wall = ensemble_wall(data_file, args.arch, args.epochs, jobs, threads, args.batch_size)
            print(f"2 members (energies + forces), jobs={jobs}, {threads} thread(s) per process: {wall:6.1f} s wall",
                  flush=True)
    if not args.skip_warm:
        torch.set_num_threads(1)
        warm_start(tmp, args.warm_lr)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
