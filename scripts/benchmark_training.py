"""Training speed: anif train against a plain torchani training loop on the same data.

One run measures, on one dataset of ANI-1x-labelled displaced conformers (or --data FILE):

1. conformers/s per epoch (training pass + validation pass) of one member, energies only:
   anif (AEVs computed once, cached) vs a plain torchani loop (the full ANI model forward,
   AEVs recomputed every batch, as in torchani's nnp_training example);
2. the same with a force term (anif cannot cache AEVs then);
3. wall time of a 2-member ensemble: members one after another (1 and 2 threads) vs two
   member processes in parallel (--jobs 2, 1 thread each).

Usage: python scripts/benchmark_training.py [--data FILE] [--epochs 5] [--arch ani1x]
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

from anif.models import build_ani  # noqa: E402
from anif.training import (  # noqa: E402
    ARCHITECTURES,
    SYMBOLS,
    TrainSettings,
    fit_self_energies,
    read_conformers,
    train_ensemble,
)

MOLECULES = {
    "methane": "C", "ethane": "CC", "propane": "CCC", "butane": "CCCC", "methanol": "CO", "ethanol": "CCO",
    "propanol": "CCCO", "isopropanol": "CC(C)O", "methylamine": "CN", "ethylamine": "CCN",
    "dimethylamine": "CNC", "dimethyl_ether": "COC", "acetaldehyde": "CC=O", "formamide": "NC=O",
}


def make_data(path: Path, conformers: int, seed: int = 0) -> None:
    """Displaced conformers (0.05 A) of small CHNO molecules labelled by the ANI-1x ensemble."""
    from anif.datasets import DatasetStore
    from anif.models import evaluate, load_model
    from anif.structures import from_smiles

    teacher = load_model("ani1x")
    rng = np.random.default_rng(seed)
    store = DatasetStore(path)
    with store.transaction():
        for name, smiles in MOLECULES.items():
            s = from_smiles(smiles)
            xyz = s.coordinates[None] + rng.normal(0, 0.05, (conformers, s.n_atoms, 3))
            r = evaluate(teacher, np.tile(s.numbers, (conformers, 1)), xyz, forces=True)
            store.append(name, s.numbers, xyz, r.energy, r.forces)


def anif_rate(data_file: Path, arch: str, epochs: int, forces: float, batch: int) -> tuple[float, int]:
    """Conformers (train + validation) per second per epoch of one anif member."""
    out = Path(tempfile.mkdtemp())
    try:
        settings = TrainSettings(members=1, folds=5, arch=arch, forces=forces, max_epochs=epochs, batch_size=batch)
        train_ensemble([data_file], out, settings, progress=False)
        history = json.loads((out / "member_0_summary.json").read_text())["history"][1:]
        n = json.loads((out / "model.json").read_text())["conformers"]
    finally:
        shutil.rmtree(out)
    return n / float(np.median([h["seconds"] for h in history])), n


def torchani_rate(data_file: Path, arch: str, epochs: int, forces: float, batch: int) -> float:
    """Conformers per second per epoch of a plain torchani loop (nnp_training style)."""
    data = read_conformers([data_file], need_forces=forces > 0)
    sae = fit_self_energies(data.species, data.energies)
    model = build_ani(SYMBOLS, ARCHITECTURES[arch], sae.tolist(), 1)
    species = torch.as_tensor(data.species)
    coords = torch.as_tensor(data.coordinates, dtype=torch.float32)
    energies = torch.as_tensor(data.energies, dtype=torch.float64)
    ref_forces = None if data.forces is None else torch.as_tensor(data.forces, dtype=torch.float32)
    n_atoms = (species >= 0).sum(1)
    fold = np.random.default_rng(0).permutation(len(data.group_names))[data.group] % 5
    train, valid = torch.as_tensor(np.flatnonzero(fold != 0)), torch.as_tensor(np.flatnonzero(fold == 0))
    opt = torch.optim.AdamW(model.neural_networks.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs):
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
        times.append(time.perf_counter() - t0)
    return len(data) / float(np.median(times))


def ensemble_wall(data_file: Path, arch: str, epochs: int, jobs: int, threads: int, batch: int) -> float:
    out = Path(tempfile.mkdtemp())
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        settings = TrainSettings(members=2, folds=5, arch=arch, max_epochs=epochs, batch_size=batch)
        train_ensemble([data_file], out, settings, jobs=jobs, progress=False)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="ANI-format HDF5 (default: build 14 molecules x --conformers)")
    parser.add_argument("--conformers", type=int, default=100, help="conformers per molecule when building data")
    parser.add_argument("--arch", default="ani1x", choices=sorted(ARCHITECTURES))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads for the rate runs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    data_file = args.data
    if data_file is None:
        data_file = tmp / "bench.h5"
        make_data(data_file, args.conformers)
    cores = os.cpu_count()
    print(f"data {data_file}, arch {args.arch}, batch {args.batch_size}, {cores} cores, load {os.getloadavg()[0]:.1f}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for forces in (0.0, 0.1):
            a, n = anif_rate(data_file, args.arch, args.epochs, forces, args.batch_size)
            b = torchani_rate(data_file, args.arch, args.epochs, forces, args.batch_size)
            label = "energies + forces" if forces else "energies only"
            print(f"{threads} thread(s), {label:17s}: anif {a:8.0f} conf/s, plain torchani {b:8.0f} conf/s, "
                  f"x{a / b:.1f} ({n} conformers)")
    for jobs, threads in ((1, 1), (1, cores), (2, max(1, cores // 2))):
        wall = ensemble_wall(data_file, args.arch, args.epochs, jobs, threads, args.batch_size)
        print(f"2 members, jobs={jobs}, {threads} thread(s) per process: {wall:6.1f} s wall")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
