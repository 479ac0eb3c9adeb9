"""Training ANI ensembles the way ANI-1x was trained (``anif train``).

Smith et al., J. Chem. Phys. 148, 241733 (2018): L members trained on a k-fold split,
member i validating on fold i, so every conformer is held out from one member. Here the
split is by molecule (one ANI-format HDF5 group, i.e. one formula, is one molecule group),
so the validation RMSE measures transfer to unseen molecules.

Per member: self atomic energies fitted by least squares of the energies on the element
counts (shared by all members), energy loss ``mean(((E_pred - E_ref) / sqrt(N))**2)``, an
optional force term, AdamW with torchani's example weight decays, ReduceLROnPlateau on the
validation RMSE and early stopping on it. Without forces the AEVs never change, so they are
computed once per dataset and every epoch only runs the atomic networks (the main speed-up
on CPU). Every epoch is checkpointed atomically; rerunning the same command resumes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import typer
from torch import Tensor

from .errors import InputError
from .models import AniEnsemble, build_ani, check_supported, load_ani, save_model
from .structures import atomic_number
from .units import HARTREE_TO_KCAL_MOL

#: Elements of every anif architecture (the ANI-1x set).
SYMBOLS = ("H", "C", "N", "O")

#: Atomic network shapes; 384 = length of the ANI-1x AEV for 4 elements.
ARCHITECTURES = {
    "ani1x": {
        "H": [384, 160, 128, 96, 1],
        "C": [384, 144, 112, 96, 1],
        "N": [384, 128, 112, 96, 1],
        "O": [384, 128, 112, 96, 1],
    },
    "small": {s: [384, 64, 32, 1] for s in SYMBOLS},
}

#: Weight decay per hidden layer (torchani's nnp_training example); none on the rest.
_LAYER_WEIGHT_DECAY = {1: 1e-5, 2: 1e-6}

#: Largest AEV cache (GB); beyond it AEVs are recomputed every batch.
AEV_CACHE_LIMIT_GB = 8.0

CHECKPOINT_DIR = "checkpoints"
RUN_FILE = "run.json"


@dataclass
class TrainSettings:
    """Everything that defines a training run (a resumed run must match it)."""

    members: int = 5
    folds: int = 5
    arch: str = "ani1x"
    forces: float = 0.0
    init: Optional[str] = None
    max_epochs: int = 300
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    patience: int = 40
    lr_patience: int = 10
    min_lr: float = 1e-6


# ----------------------------------------------------------------------------- data


@dataclass
class ConformerSet:
    """All conformers of the training files, padded to the largest molecule.

    species (C, N) atomic numbers with -1 pads; coordinates (C, N, 3) Angstrom; energies
    (C,) Hartree; forces (C, N, 3) Hartree/Angstrom or None; group (C,) molecule index into
    group_names.
    """

    species: np.ndarray
    coordinates: np.ndarray
    energies: np.ndarray
    forces: Optional[np.ndarray]
    group: np.ndarray
    group_names: list[str]

    @property
    def n_atoms(self) -> np.ndarray:
        return (self.species >= 0).sum(1)

    def __len__(self) -> int:
        return len(self.energies)


def _numbers(species) -> np.ndarray:
    species = np.asarray(species)
    if species.dtype.kind in "SUO":
        return np.array([atomic_number(s.decode() if isinstance(s, bytes) else str(s)) for s in species.ravel()])
    return species.astype(np.int64).ravel()


def read_conformers(paths: Sequence[str | Path], need_forces: bool = False) -> ConformerSet:
    """Read ANI-format HDF5 files; a group name is a molecule (same name in two files: same group)."""
    from .datasets import DatasetStore

    blocks: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]] = []
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"{path}: no such dataset file")
        store = DatasetStore(str(path), mode="r")
        for name, record in store:
            species = _numbers(record["species"])
            coords = np.asarray(record["coordinates"], dtype=np.float64)
            energies = np.asarray(record["energies"], dtype=np.float64).ravel()
            if len(energies) == 0:
                continue
            coords = coords.reshape(len(energies), len(species), 3)
            forces = None
            if need_forces:
                forces = record.get("forces")
                forces = None if forces is None else np.asarray(forces, dtype=np.float64).reshape(coords.shape)
                if forces is None or not np.isfinite(forces).all():
                    raise InputError(f"{path}: group {name} lacks forces for some conformers but --forces was given")
            if not (np.isfinite(coords).all() and np.isfinite(energies).all()):
                raise InputError(f"{path}: group {name} holds NaN or infinite coordinates/energies")
            blocks.append((name, species, coords, energies, forces))
    if not blocks:
        raise InputError(f"no conformers in {', '.join(str(p) for p in paths)}")
    names = sorted({b[0] for b in blocks})
    index = {n: i for i, n in enumerate(names)}
    total = sum(len(b[3]) for b in blocks)
    nmax = max(len(b[1]) for b in blocks)
    species = np.full((total, nmax), -1, dtype=np.int64)
    coordinates = np.zeros((total, nmax, 3))
    forces = np.zeros((total, nmax, 3)) if need_forces else None
    energies = np.zeros(total)
    group = np.zeros(total, dtype=np.int64)
    start = 0
    for name, sp, xyz, e, f in blocks:
        stop = start + len(e)
        species[start:stop, : len(sp)] = sp
        coordinates[start:stop, : len(sp)] = xyz
        energies[start:stop] = e
        group[start:stop] = index[name]
        if forces is not None:
            forces[start:stop, : len(sp)] = f
        start = stop
    return ConformerSet(species, coordinates, energies, forces, group, names)


def element_counts(species: np.ndarray, symbols: Sequence[str] = SYMBOLS) -> np.ndarray:
    """(C, len(symbols)) number of atoms of each element per conformer."""
    return np.stack([(species == atomic_number(s)).sum(1) for s in symbols], axis=1).astype(np.float64)


def fit_self_energies(species: np.ndarray, energies: np.ndarray, symbols: Sequence[str] = SYMBOLS) -> np.ndarray:
    """Self atomic energies (Hartree): least squares of the energies on the element counts."""
    counts = element_counts(species, symbols)
    return np.linalg.lstsq(counts, energies, rcond=None)[0]


def assign_folds(data: ConformerSet, folds: int, seed: int) -> np.ndarray:
    """Fold of every molecule group: shuffled, then balanced by conformer count (largest first)."""
    n_groups = len(data.group_names)
    if folds < 2:
        raise InputError(f"--folds must be at least 2 (got {folds})")
    if folds > n_groups:
        raise InputError(
            f"--folds {folds} is larger than the number of molecules ({n_groups}); the split is by molecule"
        )
    sizes = np.bincount(data.group, minlength=n_groups)
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of_group = np.zeros(n_groups, dtype=np.int64)
    load = np.zeros(folds)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += sizes[g]
    return fold_of_group


# ----------------------------------------------------------------------------- batches


class Batches:
    """Padded mini-batches of a ConformerSet as tensors, with AEVs cached when forces are off."""

    def __init__(self, data: ConformerSet, ani, self_energies: np.ndarray, cache_aevs: bool):
        self.species = torch.as_tensor(data.species)
        self.elem = ani.species_converter(self.species)  # element indices, -1 pads
        self.coordinates = torch.as_tensor(data.coordinates, dtype=torch.float32)
        self.forces = None if data.forces is None else torch.as_tensor(data.forces, dtype=torch.float32)
        self.n_atoms = torch.as_tensor(data.n_atoms)
        # network target: reference minus fitted self energies (float64 before the cast)
        shifted = data.energies - element_counts(data.species) @ np.asarray(self_energies, dtype=np.float64)
        self.targets = torch.as_tensor(shifted, dtype=torch.float32)
        self.aev_computer = ani.aev_computer
        size_gb = self.elem.numel() * ani.aev_computer.out_dim * 4 / 1e9
        self.aevs = self._compute_aevs() if cache_aevs and size_gb <= AEV_CACHE_LIMIT_GB else None

    @torch.no_grad()
    def _compute_aevs(self, chunk: int = 512) -> Tensor:
        parts = [
            self.aev_computer(self.elem[i : i + chunk], self.coordinates[i : i + chunk])
            for i in range(0, len(self.targets), chunk)
        ]
        return torch.cat(parts)

    def select(self, idx: Tensor, with_grad: bool = False):
        """(elem, aevs, coords or None, targets, forces, n_atoms) for conformers ``idx``."""
        n_atoms = self.n_atoms[idx]
        width = int(n_atoms.max())
        elem = self.elem[idx, :width]
        coords = None
        if self.aevs is not None and not with_grad:
            aevs = self.aevs[idx, :width]
        else:
            coords = self.coordinates[idx, :width].clone().requires_grad_(with_grad)
            aevs = self.aev_computer(elem, coords)
        forces = None if self.forces is None else self.forces[idx, :width]
        return elem, aevs, coords, self.targets[idx], forces, n_atoms


# ----------------------------------------------------------------------------- one member


def _init_weights(networks: torch.nn.Module, generator: torch.Generator) -> None:
    """Kaiming-normal weights and zero biases, as in torchani's nnp_training example."""
    for module in networks.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.kaiming_normal_(module.weight, a=1.0, generator=generator)
            torch.nn.init.zeros_(module.bias)


def _optimizer(networks, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW as in torchani's nnp_training example: weight decay 1e-5 / 1e-6 on the weights of
    the second / third hidden layer, none on the input and output layers nor on biases (the
    example moves biases to SGD without decay; here they stay in AdamW with decay 0)."""
    decays: dict[float, list] = {}
    for net in networks.atomics.values():
        decays.setdefault(0.0, []).extend([net.final_layer.weight, net.final_layer.bias])
        for depth, layer in enumerate(net.layers):
            decays.setdefault(_LAYER_WEIGHT_DECAY.get(depth, 0.0), []).append(layer.weight)
            decays.setdefault(0.0, []).append(layer.bias)
    groups = [{"params": params, "weight_decay": decay} for decay, params in sorted(decays.items())]
    return torch.optim.AdamW(groups, lr=settings.lr, fused=True)


def _atomic_write(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class MemberPlan:
    """Which conformers member ``index`` trains and validates on."""

    index: int
    fold: int
    train: Tensor
    valid: Tensor
    checkpoint: Path
    init_state: Optional[dict] = None


@dataclass
class EpochRecord:
    epoch: int
    train_rmse_kcal_mol: float
    valid_rmse_kcal_mol: float
    valid_force_rmse_kcal_mol_a: Optional[float]
    lr: float
    seconds: float


@dataclass
class MemberResult:
    index: int
    fold: int
    best_epoch: int
    best_valid_rmse_kcal_mol: float
    epochs: int
    stop_reason: str
    history: list[dict] = field(default_factory=list)
    state: Optional[dict] = None


def evaluate_rmse(networks, batches: Batches, idx: Tensor, batch_size: int, forces: bool = False):
    """(energy RMSE kcal/mol, force RMSE kcal/mol/A or None) of the shifted energies on ``idx``."""
    se, sf, nf = 0.0, 0.0, 0
    for start in range(0, len(idx), batch_size):
        part = idx[start : start + batch_size]
        with torch.set_grad_enabled(forces):
            elem, aevs, coords, target, ref_forces, _ = batches.select(part, with_grad=forces)
            pred = networks(elem, aevs)
            if forces:
                grad = torch.autograd.grad(pred.sum(), coords)[0]
                mask = (elem >= 0).unsqueeze(-1)
                sf += float((((-grad - ref_forces) ** 2) * mask).sum())
                nf += int(mask.sum()) * 3
        se += float(((pred.detach().double() - target.double()) ** 2).sum())
    rmse = math.sqrt(se / max(len(idx), 1)) * HARTREE_TO_KCAL_MOL
    frmse = math.sqrt(sf / nf) * HARTREE_TO_KCAL_MOL if forces and nf else None
    return rmse, frmse


def train_member(
    plan: MemberPlan,
    batches: Batches,
    ani,
    settings: TrainSettings,
    on_epoch: Callable[[int, EpochRecord, float], None] = lambda *a: None,
) -> MemberResult:
    """Train one member (resuming from its checkpoint); returns its best state and history."""
    use_forces = settings.forces > 0
    networks = copy.deepcopy(ani.neural_networks.members[0])
    ckpt = torch.load(plan.checkpoint, weights_only=False) if plan.checkpoint.is_file() else None
    if ckpt is not None and ckpt["done"]:
        return _result(plan, ckpt["history"], ckpt["best"], ckpt["stop_reason"])
    generator = torch.Generator().manual_seed(settings.seed * 1000 + plan.index)
    if plan.init_state is not None:
        networks.load_state_dict(plan.init_state)
    else:
        _init_weights(networks, generator)
    optimizer = _optimizer(networks, settings)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=settings.lr_patience, threshold=0.0
    )
    history: list[dict] = []
    best = {"rmse": math.inf, "epoch": 0, "state": None}
    if ckpt is not None:
        networks.load_state_dict(ckpt["state"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        generator.set_state(ckpt["generator"])
        history, best = ckpt["history"], ckpt["best"]
    else:
        t0 = time.perf_counter()
        train_rmse, _ = evaluate_rmse(networks, batches, plan.train, 1024)
        valid_rmse, valid_f = evaluate_rmse(networks, batches, plan.valid, 1024, use_forces)
        rec = EpochRecord(0, train_rmse, valid_rmse, valid_f, settings.lr, time.perf_counter() - t0)
        history.append(asdict(rec))
        best = {"rmse": valid_rmse, "epoch": 0, "state": copy.deepcopy(networks.state_dict())}
        on_epoch(plan.index, rec, best["rmse"])

    def save(done: bool, reason: str = "") -> MemberResult:
        _atomic_write(
            {
                "done": done,
                "stop_reason": reason,
                "state": networks.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "history": history,
                "best": best,
            },
            plan.checkpoint,
        )
        return _result(plan, history, best, reason)

    t0 = time.perf_counter()  # an epoch's seconds include the previous epoch's checkpoint
    for epoch in range(len(history), settings.max_epochs + 1):
        reason = _stop_reason(history, best, optimizer, settings)
        if reason:
            return save(True, reason)
        order = plan.train[torch.randperm(len(plan.train), generator=generator)]
        se = 0.0
        for start in range(0, len(order), settings.batch_size):
            part = order[start : start + settings.batch_size]
            elem, aevs, coords, target, ref_forces, n_atoms = batches.select(part, with_grad=use_forces)
            pred = networks(elem, aevs)
            loss = (((pred - target) / n_atoms.sqrt()) ** 2).mean()
            if use_forces:
                grad = torch.autograd.grad(pred.sum(), coords, create_graph=True)[0]
                mask = (elem >= 0).unsqueeze(-1)
                err = (((-grad - ref_forces) ** 2) * mask).sum((1, 2)) / (3 * n_atoms)
                loss = loss + settings.forces * err.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            se += float(((pred.detach() - target) ** 2).sum())
        train_rmse = math.sqrt(se / len(order)) * HARTREE_TO_KCAL_MOL
        valid_rmse, valid_f = evaluate_rmse(networks, batches, plan.valid, 1024, use_forces)
        scheduler.step(valid_rmse)
        if valid_rmse < best["rmse"]:
            best = {"rmse": valid_rmse, "epoch": epoch, "state": copy.deepcopy(networks.state_dict())}
        rec = EpochRecord(epoch, train_rmse, valid_rmse, valid_f, optimizer.param_groups[0]["lr"], time.perf_counter() - t0)
        history.append(asdict(rec))
        t0 = time.perf_counter()
        save(False)
        on_epoch(plan.index, rec, best["rmse"])
    return save(True, _stop_reason(history, best, optimizer, settings) or "max epochs")


def _result(plan: MemberPlan, history: list[dict], best: dict, reason: str) -> MemberResult:
    return MemberResult(plan.index, plan.fold, best["epoch"], best["rmse"], len(history) - 1, reason, history, best["state"])


def _stop_reason(history, best, optimizer, settings: TrainSettings) -> str:
    epoch = history[-1]["epoch"]
    if epoch >= settings.max_epochs:
        return "max epochs"
    if epoch - best["epoch"] >= settings.patience:
        return f"no improvement for {settings.patience} epochs"
    if optimizer.param_groups[0]["lr"] < settings.min_lr:
        return f"learning rate below {settings.min_lr:g}"
    return ""


# ----------------------------------------------------------------------------- ensemble


def _plot_learning_curve(result: MemberResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in result.history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_rmse_kcal_mol"] for h in result.history], label="train")
    ax.plot(epochs, [h["valid_rmse_kcal_mol"] for h in result.history], label=f"validation (fold {result.fold})")
    ax.axvline(result.best_epoch, color="grey", ls=":", label=f"best {result.best_valid_rmse_kcal_mol:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("energy RMSE (kcal/mol)")
    ax.set_title(f"member {result.index}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _run_members(plans, batches, ani, settings, jobs: int, on_epoch) -> list[MemberResult]:
    if jobs <= 1 or len(plans) == 1:
        return [train_member(p, batches, ani, settings, on_epoch) for p in plans]
    return _run_members_parallel(plans, batches, ani, settings, jobs, on_epoch)


_WORKER: dict = {}


def _worker_init(threads: int) -> None:
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the parent
    except OSError:  # not Linux/glibc
        pass
    torch.set_num_threads(threads)


def _worker_train(i: int) -> MemberResult:
    w = _WORKER
    events = w["events"]
    return train_member(w["plans"][i], w["batches"], w["ani"], w["settings"], lambda *a: events.put(a))


def _run_members_parallel(plans, batches, ani, settings, jobs, on_epoch) -> list[MemberResult]:
    """Members in forked worker processes (they inherit the data and AEV cache)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork")
    events = ctx.Queue()
    _WORKER.update(plans=plans, batches=batches, ani=ani, settings=settings, events=events)
    stop = threading.Event()

    def relay():
        while not stop.is_set():
            try:
                on_epoch(*events.get(timeout=0.1))
            except queue.Empty:
                pass

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    try:
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as pool:
            results = list(pool.map(_worker_train, range(len(plans))))
    finally:
        stop.set()
        thread.join()
        _WORKER.clear()
    while True:  # updates still queued when the pool finished
        try:
            on_epoch(*events.get(timeout=0.1))
        except queue.Empty:
            break
    return results


def _check_run(directory: Path, run: dict) -> None:
    """A resumed run must be the same run; a new one records itself."""
    path = directory / CHECKPOINT_DIR / RUN_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(run) | set(previous) if run.get(k) != previous.get(k))
        if changed:
            raise InputError(
                f"{directory} holds a training run with different {', '.join(changed)}; use a new --out to start over"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run, indent=2))
    os.replace(tmp, path)


def train_ensemble(
    data_files: Sequence[str | Path],
    out: str | Path,
    settings: TrainSettings = TrainSettings(),
    jobs: int = 1,
    progress: bool = True,
) -> AniEnsemble:
    """Train (or resume) an ensemble and save it in ``out`` (loadable with load_model(out)).

    ``jobs`` members train at once in forked processes with cores/jobs threads each; 0 picks
    min(members, cores), which measured fastest on 2 cores (see scripts/benchmark_training.py).
    """
    if jobs <= 0:
        jobs = min(settings.members, os.cpu_count() or 1)
    if settings.arch not in ARCHITECTURES:
        raise InputError(f"unknown --arch {settings.arch!r} (use {' or '.join(ARCHITECTURES)})")
    if settings.members < 1:
        raise InputError("--members must be at least 1")
    if settings.members > settings.folds:
        raise InputError(
            f"--members {settings.members} > --folds {settings.folds}: member i validates on fold i, "
            "so extra members would repeat a validation fold; raise --folds"
        )
    if settings.init not in (None, "ani1x"):
        raise InputError(f"unknown --init {settings.init!r} (only 'ani1x')")
    if settings.init == "ani1x" and settings.arch != "ani1x":
        raise InputError("--init ani1x needs --arch ani1x (the released networks have the ANI-1x shapes)")
    if settings.forces < 0:
        raise InputError("--forces must be >= 0")
    out = Path(out)
    files = [str(Path(f).resolve()) for f in data_files]
    data = read_conformers(files, need_forces=settings.forces > 0)
    dims = ARCHITECTURES[settings.arch]
    # one-member template: element converter, AEV computer, network shapes (its SAE is unused)
    ani = build_ani(SYMBOLS, dims, [0.0] * len(SYMBOLS), 1)
    check_supported(AniEnsemble(ani), data.species)
    fold_of_group = assign_folds(data, settings.folds, settings.seed)
    fold = fold_of_group[data.group]

    init_members = None
    if settings.init == "ani1x":
        released = load_ani("ani1x")
        self_energies = released.energy_shifter.self_energies.double().numpy()
        init_members = [m.state_dict() for m in released.neural_networks.members]
    else:
        self_energies = fit_self_energies(data.species, data.energies)

    run = {
        **asdict(settings),
        "data": files,
        "conformers": len(data),
        "molecules": len(data.group_names),
    }
    _check_run(out, run)
    ckpt_dir = out / CHECKPOINT_DIR
    plans = [
        MemberPlan(
            index=i,
            fold=i,
            train=torch.as_tensor(np.flatnonzero(fold != i)),
            valid=torch.as_tensor(np.flatnonzero(fold == i)),
            checkpoint=ckpt_dir / f"member_{i}.pt",
            init_state=None if init_members is None else init_members[i % len(init_members)],
        )
        for i in range(settings.members)
    ]
    batches = Batches(data, ani, self_energies, cache_aevs=settings.forces == 0)
    results = _with_progress(plans, settings, progress, lambda cb: _run_members(plans, batches, ani, settings, jobs, cb))

    ensemble = build_ani(SYMBOLS, dims, self_energies.tolist(), settings.members)
    for r in results:
        ensemble.neural_networks.members[r.index].load_state_dict(r.state)
    model = AniEnsemble(ensemble)
    baseline = float(np.sqrt(np.mean((data.energies - element_counts(data.species) @ self_energies) ** 2)))
    for r in results:
        summary = {k: v for k, v in asdict(r).items() if k != "state"}
        summary.update(
            train_conformers=len(plans[r.index].train),
            valid_conformers=len(plans[r.index].valid),
            valid_molecules=[n for g, n in enumerate(data.group_names) if fold_of_group[g] == r.index],
        )
        (out / f"member_{r.index}_summary.json").write_text(json.dumps(summary, indent=2))
        _plot_learning_curve(r, out / f"member_{r.index}_learning_curve.png")
    save_model(
        model,
        out,
        arch=settings.arch,
        folds=settings.folds,
        seed=settings.seed,
        init=settings.init,
        forces_weight=settings.forces,
        training_data=files,
        conformers=len(data),
        molecules=len(data.group_names),
        self_energy_baseline_rmse_kcal_mol=baseline * HARTREE_TO_KCAL_MOL,
        member_valid_rmse_kcal_mol=[r.best_valid_rmse_kcal_mol for r in results],
        member_best_epoch=[r.best_epoch for r in results],
    )
    return model.eval()


def _with_progress(plans, settings: TrainSettings, enabled: bool, body):
    """Run ``body(on_epoch)`` with one rich progress bar per member."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        return body(lambda *a: None)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as bar:
        tasks = {p.index: bar.add_task(f"member {p.index}", total=settings.max_epochs) for p in plans}
        for p in plans:
            if p.checkpoint.is_file():
                ckpt = torch.load(p.checkpoint, weights_only=False)
                state = "finished" if ckpt["done"] else f"resuming after epoch {ckpt['history'][-1]['epoch']}"
                bar.console.print(f"member {p.index}: {state} ({p.checkpoint})")

        def on_epoch(index: int, rec: EpochRecord, best: float) -> None:
            bar.update(
                tasks[index],
                completed=rec.epoch,
                description=f"member {index} train {rec.train_rmse_kcal_mol:7.3f} "
                f"valid {rec.valid_rmse_kcal_mol:7.3f} (best {best:.3f}) kcal/mol",
            )

        results = body(on_epoch)
        for r in results:
            bar.update(tasks[r.index], completed=settings.max_epochs)
        return results


# ----------------------------------------------------------------------------- CLI


def train_command(
    data: list[Path] = typer.Option(..., "--data", metavar="FILE", help="ANI-format HDF5 training file(s)."),
    more_data: Optional[list[Path]] = typer.Argument(None, metavar="FILE", help="More training files (--data a.h5 b.h5).", show_default=False),
    out: Path = typer.Option(..., "--out", help="Model directory to write (and resume from)."),
    members: int = typer.Option(5, help="Ensemble members (L)."),
    folds: int = typer.Option(5, help="Cross-validation folds; member i validates on fold i."),
    arch: str = typer.Option("ani1x", help="Network shapes: ani1x or small."),
    forces: float = typer.Option(0.0, help="Weight of the force term in the loss (0: energies only)."),
    init: Optional[str] = typer.Option(None, help="ani1x: start every member from the released ANI-1x."),
    max_epochs: int = typer.Option(300, help="Maximum epochs per member."),
    seed: int = typer.Option(0, help="Seed of the split, initial weights and shuffling."),
    batch_size: int = typer.Option(128, help="Conformers per mini-batch."),
    lr: float = typer.Option(1e-3, help="Initial AdamW learning rate."),
    patience: int = typer.Option(40, help="Early stopping: epochs without a better validation RMSE."),
    lr_patience: int = typer.Option(10, help="Epochs without improvement before halving the learning rate."),
    jobs: int = typer.Option(0, help="Members trained at once in parallel processes (1: one after another; 0: min(members, cores))."),
) -> None:
    """Train an ANI ensemble on a k-fold split by molecule; rerun the same command to resume."""
    settings = TrainSettings(
        members=members,
        folds=folds,
        arch=arch,
        forces=forces,
        init=init,
        max_epochs=max_epochs,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        lr_patience=lr_patience,
    )
    model = train_ensemble(list(data) + list(more_data or []), out, settings, jobs=jobs)
    spec = json.loads((out / "model.json").read_text())
    rmse = ", ".join(f"{x:.3f}" for x in spec["member_valid_rmse_kcal_mol"])
    print(f"saved {len(model.ani.neural_networks.members)}-member ensemble to {out}; validation RMSE (kcal/mol): {rmse}")
