"""Training ANI ensembles the way ANI-1x was trained (``anif train``), fit for small data.

Smith et al., J. Chem. Phys. 148, 241733 (2018): L members trained on a k-fold
cross-validation split of the training set, member i validating on fold i, so every conformer
is held out from exactly one member. The default split is by conformer, as the paper's, with
folds that stay put as the data grow (:func:`anif.training.data.assign_folds`), so a member
warm-started from the previous cycle's member i never validates on what that member trained on;
``split="molecule"`` holds out whole molecules to measure transfer instead.

Per member:

- the networks learn the residual of a self-energy fit (least squares of the energies on the
  element counts, shared by all members). Members trained from scratch differ by construction:
  each has its own random hidden *and* output layers (seeded by member), its own training folds
  and its own batch order, so even on a few dozen conformers they disagree off the training
  data; the output layers start at the scale of the fit's residual per atom
  (:func:`output_scale`), and the saved epoch is the best *trained* one (epoch >= 1): the
  self-energy fit alone is the same function for every member, a committee that can never
  disagree;
- loss ``mean(((E - E_ref) / sqrt(N))**2) + w * mean(|F - F_ref|**2 / (3 N))`` with the force
  weight w = :data:`DEFAULT_FORCE_WEIGHT` when every conformer has forces (0: energies only);
- AdamW with torchani's example weight decays. Learning-rate and stop rule: the learning rate
  halves when the epoch's training loss has not fallen 1% below its best for ``lr_patience``
  epochs, so it stays high while the training loss still falls; a member stops when its
  learning rate falls below ``min_lr`` (default: 1% of the initial one, about 7 halvings: the
  training loss stopped falling), when its validation energy MAE has not improved for
  ``patience`` epochs (it overfits), or at ``max_epochs``. The
  saved member is the epoch with the lowest validation energy MAE (epoch 0 included for warm
  starts, whose epoch 0 is a trained network). MAE, not RMSE: on a small fold one structure far
  from the member's training data (a hot MD frame 20+ kcal/mol up that only the other members
  trained on) dominates the RMSE, and the epoch that best extrapolates to it is an underfit one
  that drags the ensemble mean (measured on the quickstart: 0.71 kcal/mol against 0.46 on its test
  set, see the README);
- warm starts (``init``): ``"ani1x"`` starts member i from the released network i (ANI-1x shapes
  and self energies), an anif model directory from that ensemble's member i mod M (its shapes
  and self energies; the active-learning loop's previous cycle), each with its own initial
  learning rate (:data:`INITIAL_LR`). Epoch 0 then reproduces the starting ensemble.

Every member is checkpointed atomically at most every ``checkpoint_seconds`` and when it stops
(weights, optimizer, random state, history: tensors and numbers only, read back with
``weights_only=True``); rerunning the same command resumes, and a rerun with a larger
``max_epochs`` continues a finished run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
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
from torch import Tensor

from ..errors import InputError
from ..outputs import atomic_write
from ..models.ensemble import MODEL_JSON, MODEL_WEIGHTS, Ensemble, StockAniEnsemble, build_ani, check_supported, load_ani, save_model
from .data import (
    ConformerSet,
    TrainingData,
    assign_folds,
    element_counts,
    fit_self_energies,
    read_conformers,
    unknown_method_warning,
    unlabelled,
)
from .settings import (
    ARCHITECTURES,
    DEFAULT_FORCE_WEIGHT,
    INITIAL_LR,
    MIN_LR_FRACTION,
    SYMBOLS,
    TrainSettings,
)
from ..units import HARTREE_TO_KCAL_MOL

log = logging.getLogger("anif.training")

#: Relative fall of the training loss below its best that counts as progress, and the factor
#: applied to the learning rate after ``lr_patience`` epochs without progress.
TRAIN_LOSS_PROGRESS = 0.01
LR_FACTOR = 0.5

#: Weight decay per hidden layer (torchani's nnp_training example); none on the rest.
_LAYER_WEIGHT_DECAY = {1: 1e-5, 2: 1e-6}

CHECKPOINT_DIR = "checkpoints"
RUN_FILE = "run.json"


#: Settings a rerun may change without starting over.
RESUMABLE = ("max_epochs", "checkpoint_seconds", "patience", "min_lr")


# ----------------------------------------------------------------------------- starts


@dataclass
class Start:
    """What the members start from: network shapes, self energies (None: fit them) and
    per-member weights (None: fresh), with a fingerprint of the source for resume checks."""

    kind: str
    arch: str
    layer_dims: dict
    self_energies: Optional[np.ndarray]
    member_states: Optional[list[dict]]
    fingerprint: str
    spec: Optional[dict] = None


def resolve_start(settings: TrainSettings) -> Start:
    """The start of ``settings.init``: scratch, the released ANI-1x, or an anif ensemble directory."""
    if settings.start == "scratch":
        arch = settings.arch or "ani1x"
        return Start("scratch", arch, ARCHITECTURES[arch], None, None, "")
    if settings.start == "ani1x":
        if settings.arch not in (None, "ani1x"):
            raise InputError("--init ani1x needs --arch ani1x (the released networks have the ANI-1x shapes)")
        released = load_ani("ani1x")
        states = [m.state_dict() for m in released.neural_networks.members]
        sae = released.energy_shifter.self_energies.double().numpy()
        return Start("ani1x", "ani1x", ARCHITECTURES["ani1x"], sae, states, "ani1x")
    directory = Path(settings.init)
    if not (directory / MODEL_JSON).is_file():
        raise InputError(f"--init {settings.init}: use 'ani1x' or an anif model directory (with {MODEL_JSON})")
    spec = json.loads((directory / MODEL_JSON).read_text())
    if list(spec.get("symbols", [])) != list(SYMBOLS) or spec.get("aev"):
        raise InputError(f"--init {directory}: anif trains H, C, N, O ensembles with the ANI-1x descriptor")
    dims = {s: list(d) for s, d in spec["layer_dims"].items()}
    named = [name for name, shape in ARCHITECTURES.items() if shape == dims]
    if settings.arch is not None and ARCHITECTURES[settings.arch] != dims:
        raise InputError(f"--arch {settings.arch} does not match the shapes of --init {directory}; leave --arch out")
    ani = load_ani(str(directory))
    states = [m.state_dict() for m in ani.neural_networks.members]
    sae = ani.energy_shifter.self_energies.double().numpy()
    fingerprint = hashlib.sha1((directory / MODEL_WEIGHTS).read_bytes()).hexdigest()
    return Start("model", named[0] if named else "custom", dims, sae, states, fingerprint, spec)


# ----------------------------------------------------------------------------- one member


#: Floor of the output layers' initial scale (Hartree per atom, 0.5 kcal/mol): a member's random
#: start must disagree with the others above the QBC threshold (0.23 kcal/mol per sqrt(atom)).
MIN_OUTPUT_SCALE = 0.5 / HARTREE_TO_KCAL_MOL


def output_scale(residual: np.ndarray, n_atoms: np.ndarray) -> float:
    """Initial scale (Hartree per atom) of a scratch member's output: the RMS of the self-energy
    fit's residual per atom, at least :data:`MIN_OUTPUT_SCALE`."""
    per_atom = float(np.sqrt(np.mean((np.asarray(residual) / np.asarray(n_atoms)) ** 2)))
    return max(per_atom, MIN_OUTPUT_SCALE)


def _init_weights(networks: torch.nn.Module, generator: torch.Generator, scale: float) -> None:
    """Kaiming-normal hidden layers and zero biases (torchani's nnp_training example); output
    weights normal with standard deviation ``scale / sqrt(fan_in)`` (Hartree), so each member
    starts as its own random function of the AEV at the data's scale, not at the shared fit."""
    for net in networks.atomics.values():
        for layer in net.layers:
            torch.nn.init.kaiming_normal_(layer.weight, a=1.0, generator=generator)
            torch.nn.init.zeros_(layer.bias)
        fan_in = net.final_layer.weight.shape[1]
        with torch.no_grad():
            net.final_layer.weight.normal_(0.0, scale / math.sqrt(fan_in), generator=generator)
        torch.nn.init.zeros_(net.final_layer.bias)


def _optimizer(networks, lr: float) -> torch.optim.AdamW:
    """AdamW as in torchani's nnp_training example: weight decay 1e-5 / 1e-6 on the weights of
    the second / third hidden layer, none on the input and output layers nor on biases."""
    decays: dict[float, list] = {}
    for net in networks.atomics.values():
        decays.setdefault(0.0, []).extend([net.final_layer.weight, net.final_layer.bias])
        for depth, layer in enumerate(net.layers):
            decays.setdefault(_LAYER_WEIGHT_DECAY.get(depth, 0.0), []).append(layer.weight)
            decays.setdefault(0.0, []).append(layer.bias)
    groups = [{"params": params, "weight_decay": decay} for decay, params in sorted(decays.items())]
    return torch.optim.AdamW(groups, lr=lr, fused=True)


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=2).encode()))


def load_checkpoint(path: Path) -> Optional[dict]:
    """A member checkpoint (tensors and plain values only: loaded with ``weights_only=True``)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: unreadable checkpoint ({type(exc).__name__}); use a new --out") from None


@dataclass
class MemberPlan:
    """Which conformers member ``index`` trains and validates on, and where it starts."""

    index: int
    fold: int
    train: Tensor
    valid: Tensor
    checkpoint: Path
    lr: float
    init_state: Optional[dict] = None
    output_scale: float = MIN_OUTPUT_SCALE  # Hartree per atom, scratch starts only


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    train_rmse_kcal_mol: float
    valid_rmse_kcal_mol: float
    valid_force_rmse_kcal_mol_a: Optional[float]
    lr: float
    seconds: float
    valid_mae_kcal_mol: float  # what picks the saved epoch


@dataclass
class MemberResult:
    index: int
    fold: int
    best_epoch: int
    best_valid_rmse_kcal_mol: float  # of the saved epoch (the one of lowest validation MAE)
    start_valid_rmse_kcal_mol: float
    epochs: int
    stop_reason: str
    history: list[dict] = field(default_factory=list)
    state: Optional[dict] = None


def _loss(pred: Tensor, target: Tensor, n_atoms: Tensor, forces: Optional[Tensor], ref_forces, weight: float) -> Tensor:
    loss = (((pred - target) / n_atoms.sqrt()) ** 2).mean()
    if forces is not None:
        mask = (torch.arange(forces.shape[1]) < n_atoms.unsqueeze(1)).unsqueeze(-1)
        err = (((forces - ref_forces[:, : forces.shape[1]]) ** 2) * mask).sum((1, 2)) / (3 * n_atoms)
        loss = loss + weight * err.mean()
    return loss


def evaluate_errors(networks, data: TrainingData, idx: Tensor, forces: bool = False, force_weight: float = 0.0,
                    batch_size: int = 1024):
    """(energy RMSE, energy MAE kcal/mol, force RMSE kcal/mol/A or None, loss) of the member on ``idx``."""
    se = ae = sf = loss = 0.0
    nf = 0
    for part in idx.split(batch_size):
        with torch.set_grad_enabled(forces):
            pred, pred_forces = data.evaluate(networks, part, forces=forces)
        n_atoms = data.n_atoms[part]
        ref = None if data.forces is None else data.forces[part]
        loss += float(_loss(pred.detach(), data.targets[part], n_atoms, pred_forces, ref, force_weight)) * len(part)
        err = pred.detach().double() - data.targets[part].double()
        se += float((err**2).sum())
        ae += float(err.abs().sum())
        if forces:
            mask = (torch.arange(pred_forces.shape[1]) < n_atoms.unsqueeze(1)).unsqueeze(-1)
            sf += float((((pred_forces.detach() - ref[:, : pred_forces.shape[1]]) ** 2) * mask).sum())
            nf += int(n_atoms.sum()) * 3
    n = max(len(idx), 1)
    frmse = math.sqrt(sf / nf) * HARTREE_TO_KCAL_MOL if forces and nf else None
    return math.sqrt(se / n) * HARTREE_TO_KCAL_MOL, ae / n * HARTREE_TO_KCAL_MOL, frmse, loss / n


def _stop_reason(history: list[dict], best: dict, schedule: dict, settings: TrainSettings) -> str:
    epoch = history[-1]["epoch"]
    if epoch >= settings.max_epochs:
        return "max epochs"
    if schedule["lr"] < schedule["min_lr"]:
        return f"learning rate below {schedule['min_lr']:g} (the training loss stopped falling)"
    if epoch - best["epoch"] >= settings.patience:
        return f"validation MAE did not improve for {settings.patience} epochs"
    return ""


def _schedule_step(schedule: dict, epoch: int, train_loss: float, settings: TrainSettings) -> None:
    """Halve the learning rate after ``lr_patience`` epochs without a 1% fall of the training loss."""
    if train_loss < schedule["best_train_loss"] * (1.0 - TRAIN_LOSS_PROGRESS):
        schedule["best_train_loss"] = train_loss
        schedule["progress_epoch"] = epoch
    elif epoch - max(schedule["progress_epoch"], schedule["lr_epoch"]) >= settings.lr_patience:
        schedule["lr"] *= LR_FACTOR
        schedule["lr_epoch"] = epoch


def train_member(
    plan: MemberPlan,
    data: TrainingData,
    template: torch.nn.Module,
    settings: TrainSettings,
    force_weight: float,
    on_epoch: Callable[[int, EpochRecord, float], None] = lambda *a: None,
) -> MemberResult:
    """Train one member (resuming from its checkpoint); returns its best state and history."""
    use_forces = force_weight > 0
    networks = copy.deepcopy(template)
    generator = torch.Generator().manual_seed(settings.seed * 1000 + plan.index)
    ckpt = load_checkpoint(plan.checkpoint)
    if ckpt is not None:
        networks.load_state_dict(ckpt["state"])
        optimizer = _optimizer(networks, plan.lr)
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        history, best, schedule = ckpt["history"], ckpt["best"], ckpt["schedule"]
        best.setdefault("mae", best["rmse"])  # a checkpoint of anif before MAE selection: RMSE >= MAE bounds it
    else:
        if plan.init_state is not None:
            networks.load_state_dict(plan.init_state)
        else:
            _init_weights(networks, generator, plan.output_scale)
        optimizer = _optimizer(networks, plan.lr)
        t0 = time.perf_counter()
        train_rmse, _, _, train_loss = evaluate_errors(networks, data, plan.train, use_forces, force_weight)
        valid_rmse, valid_mae, valid_f, _ = evaluate_errors(networks, data, plan.valid, use_forces, force_weight)
        rec = EpochRecord(0, train_loss, train_rmse, valid_rmse, valid_f, plan.lr, time.perf_counter() - t0, valid_mae)
        history = [asdict(rec)]
        # a scratch member's epoch 0 is a random function, not a candidate for the best epoch
        warm = plan.init_state is not None
        best = {"mae": valid_mae if warm else math.inf, "rmse": valid_rmse if warm else math.inf, "epoch": 0,
                "state": copy.deepcopy(networks.state_dict())}
        schedule = {"lr": plan.lr, "best_train_loss": train_loss, "progress_epoch": 0, "lr_epoch": 0}
        on_epoch(plan.index, rec, best["rmse"])
    schedule["min_lr"] = settings.min_lr if settings.min_lr is not None else plan.lr * MIN_LR_FRACTION

    def save(reason: str = "") -> None:
        state = {
            "stop_reason": reason,
            "state": networks.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "history": history,
            "best": best,
            "schedule": schedule,
        }
        atomic_write(plan.checkpoint, lambda fh: torch.save(state, fh))

    saved = time.perf_counter()
    while not (reason := _stop_reason(history, best, schedule, settings)):
        t0 = time.perf_counter()
        epoch = history[-1]["epoch"] + 1
        for group in optimizer.param_groups:
            group["lr"] = schedule["lr"]
        order = plan.train[torch.randperm(len(plan.train), generator=generator)]
        se = total = 0.0
        for part in order.split(settings.batch_size):
            pred, pred_forces = data.evaluate(networks, part, forces=use_forces, create_graph=True)
            ref_forces = None if data.forces is None else data.forces[part]
            loss = _loss(pred, data.targets[part], data.n_atoms[part], pred_forces, ref_forces, force_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(part)
            se += float(((pred.detach() - data.targets[part]) ** 2).sum())
        train_loss = total / len(order)
        valid_rmse, valid_mae, valid_f, _ = evaluate_errors(networks, data, plan.valid, use_forces, force_weight)
        if valid_mae < best["mae"]:
            best = {"mae": valid_mae, "rmse": valid_rmse, "epoch": epoch, "state": copy.deepcopy(networks.state_dict())}
        lr = schedule["lr"]
        _schedule_step(schedule, epoch, train_loss, settings)
        train_rmse = math.sqrt(se / len(order)) * HARTREE_TO_KCAL_MOL
        rec = EpochRecord(epoch, train_loss, train_rmse, valid_rmse, valid_f, lr, time.perf_counter() - t0, valid_mae)
        history.append(asdict(rec))
        if time.perf_counter() - saved >= settings.checkpoint_seconds:
            save()
            saved = time.perf_counter()
        on_epoch(plan.index, rec, best["rmse"])
    if ckpt is None or ckpt["stop_reason"] != reason or len(ckpt["history"]) != len(history):
        save(reason)
    start = history[0]["valid_rmse_kcal_mol"]
    return MemberResult(plan.index, plan.fold, best["epoch"], best["rmse"], start, len(history) - 1, reason, history,
                        best["state"])


# ----------------------------------------------------------------------------- ensemble


def _plot_learning_curve(result: MemberResult, baseline: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in result.history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_rmse_kcal_mol"] for h in result.history], label="train")
    ax.plot(epochs, [h["valid_rmse_kcal_mol"] for h in result.history], label=f"validation (fold {result.fold})")
    ax.plot(epochs, [h.get("valid_mae_kcal_mol", math.nan) for h in result.history], ls="--",
            label="validation MAE (picks the saved epoch)")
    ax.axhline(baseline, color="k", ls="--", lw=0.8, label=f"self-energy fit {baseline:.2f}")
    ax.axvline(result.best_epoch, color="grey", ls=":", label=f"saved: RMSE {result.best_valid_rmse_kcal_mol:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("energy RMSE / MAE (kcal/mol)")
    ax.set_title(f"member {result.index}")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)


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
    return train_member(w["plans"][i], *w["args"], lambda *a: events.put(a))


def _run_members(plans, args: tuple, jobs: int, on_epoch) -> list[MemberResult]:
    """Members one after another, or ``jobs`` at a time in forked processes (they inherit the
    data and the AEV cache)."""
    if jobs <= 1 or len(plans) == 1:
        return [train_member(p, *args, on_epoch) for p in plans]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork")
    events = ctx.Queue()
    _WORKER.update(plans=plans, args=args, events=events)
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
    """A resumed run must be the same run (up to :data:`RESUMABLE` settings); a new one records itself."""
    path = directory / CHECKPOINT_DIR / RUN_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in set(run) | set(previous) if k not in RESUMABLE and run.get(k) != previous.get(k))
        if changed:
            raise InputError(
                f"{directory} holds a training run with different {', '.join(changed)}; use a new --out to start over"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, run)


def _check_writable(out: Path) -> None:
    """Fail before any computing when ``out`` cannot become a model directory."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: {parent} is not writable")


@dataclass
class TrainResult:
    """A trained ensemble and how it got there.

    ``members`` per member (history included, weights not); ``self_energy_rmse_kcal_mol`` the
    self-energy fit's RMSE on all conformers; ``warnings`` one line each: members that did not
    improve on their start or are worse than the self-energy fit on their validation fold, and
    warm starts whose split differs from the starting ensemble's (validation then not clean).
    """

    model: Ensemble
    directory: Path
    members: list[MemberResult]
    force_weight: float
    lr: float
    self_energy_rmse_kcal_mol: float
    warnings: list[str]

    @property
    def valid_rmse_kcal_mol(self) -> list[float]:
        return [m.best_valid_rmse_kcal_mol for m in self.members]


def _split_warning(settings: TrainSettings, start: Start) -> list[str]:
    """Warm starts validate cleanly only on the previous run's split (same folds, seed, split) and
    with at most its number of members: member i then starts from a member that never trained
    on fold i."""
    if start.spec is None:
        return []
    changed = [k for k in ("folds", "seed", "split") if start.spec.get(k) != getattr(settings, k)]
    if changed:
        return [f"--init {settings.init} was trained with another {', '.join(changed)}: the members' validation "
                "folds include conformers their starting networks trained on"]
    if settings.members > start.spec["members"]:
        return [f"members {start.spec['members']}-{settings.members - 1} start from members of --init that trained "
                "on their validation folds"]
    return []


def _warnings(results: list[MemberResult], fold_baseline: list[float]) -> list[str]:
    out = []
    for r, base in zip(results, fold_baseline):
        if r.best_epoch == 0:  # warm starts only: a scratch member's best epoch is a trained one
            out.append(f"member {r.index}: no epoch improved on its starting point's validation MAE (RMSE "
                       f"{r.best_valid_rmse_kcal_mol:.3f} kcal/mol); it is saved as it started")
        if r.best_valid_rmse_kcal_mol > base * 1.001:  # beyond float32 round-off of the fit itself
            out.append(f"member {r.index}: validation RMSE {r.best_valid_rmse_kcal_mol:.3f} kcal/mol is worse than "
                       f"the self-energy fit ({base:.3f} kcal/mol)")
    return out


def _unlabelled_message(data: ConformerSet, mask: np.ndarray) -> str:
    values, counts = np.unique(data.method[mask].astype(str), return_counts=True)
    shown = ", ".join(f"{v or '(unset)'!r}: {c}" for v, c in zip(values, counts))
    return (
        f"{int(mask.sum())} of {len(data)} conformers are not reference labels (method {shown}); "
        "label them with anif label, or pass --allow-unlabelled to train on their energies anyway"
    )


def train_ensemble(
    data_files: Sequence[str | Path],
    out: str | Path,
    settings: TrainSettings = TrainSettings(),
    jobs: int = 1,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume, or continue) an ensemble and save it in ``out`` (``load_model(out)``).

    ``jobs`` members train at once in forked processes with cores/jobs threads each; 0 picks
    min(members, cores), which measured fastest on 2 cores (see scripts/benchmark_training.py).
    """
    settings.check()
    if jobs <= 0:
        jobs = min(settings.members, os.cpu_count() or 1)
    out = Path(out)
    if settings.start == "model" and Path(settings.init).resolve() == out.resolve():
        raise InputError("--init and --out are the same directory; write the new ensemble elsewhere")
    start = resolve_start(settings)
    _check_writable(out)
    files = [str(Path(f).resolve()) for f in data_files]
    data = read_conformers(files)
    not_labels = unlabelled(data)
    if not_labels.any() and not settings.allow_unlabelled:
        raise InputError(_unlabelled_message(data, not_labels))
    force_weight = settings.forces if settings.forces is not None else DEFAULT_FORCE_WEIGHT * (data.forces is not None)
    if force_weight > 0 and data.forces is None:
        raise InputError("some conformers lack forces but --forces was given (use --forces 0 to train on energies only)")
    template = build_ani(SYMBOLS, start.layer_dims, [0.0] * len(SYMBOLS), 1)  # converter, AEV, shapes
    check_supported(StockAniEnsemble(template), data.species)
    fold = assign_folds(data, settings.folds, settings.seed, settings.split)
    fitted = fit_self_energies(data.species, data.energies)
    self_energies = fitted if start.self_energies is None else start.self_energies
    scale = output_scale(data.energies - element_counts(data.species) @ fitted, data.n_atoms)
    lr = settings.lr if settings.lr is not None else INITIAL_LR[start.kind]

    run = {**asdict(settings), "data": files, "conformers": len(data), "molecules": len(data.group_names),
           "init_fingerprint": start.fingerprint}
    _check_run(out, run)
    empty = [i for i in range(settings.members) if not (fold == i).any()]
    plans = [
        MemberPlan(
            index=i,
            fold=i,
            train=torch.as_tensor(np.flatnonzero(fold != i)),
            # an empty fold (few conformers, many folds): the member validates on what it trains on
            valid=torch.as_tensor(np.flatnonzero(fold != i if i in empty else fold == i)),
            checkpoint=out / CHECKPOINT_DIR / f"member_{i}.pt",
            lr=lr,
            init_state=None if start.member_states is None else start.member_states[i % len(start.member_states)],
            output_scale=scale,
        )
        for i in range(settings.members)
    ]
    tensors = TrainingData(data, template, self_energies)
    args = (tensors, template.neural_networks.members[0], settings, force_weight)
    results = _with_progress(plans, settings, progress, lambda cb: _run_members(plans, args, jobs, cb))

    residual = data.energies - element_counts(data.species) @ fitted
    fold_baseline = [float(np.sqrt(np.mean(residual[plans[r.index].valid.numpy()] ** 2))) * HARTREE_TO_KCAL_MOL
                     for r in results]
    baseline = float(np.sqrt(np.mean(residual**2))) * HARTREE_TO_KCAL_MOL
    warnings = ([w for w in [unknown_method_warning(data)] if w] + _split_warning(settings, start)
                + _warnings(results, fold_baseline))
    warnings += [f"member {i}: fold {i} holds no conformer ({len(data)} conformers in {settings.folds} folds); it "
                 "validated on its own training data" for i in empty]
    ensemble = build_ani(SYMBOLS, start.layer_dims, list(map(float, self_energies)), settings.members)
    for r in results:
        ensemble.neural_networks.members[r.index].load_state_dict(r.state)
    model = StockAniEnsemble(ensemble)
    for r, base in zip(results, fold_baseline):
        summary = {k: v for k, v in asdict(r).items() if k != "state"}
        summary.update(
            self_energy_valid_rmse_kcal_mol=base,
            force_weight=force_weight,
            train_conformers=len(plans[r.index].train),
            valid_conformers=len(plans[r.index].valid),
        )
        _write_json(out / f"member_{r.index}_summary.json", summary)
        _plot_learning_curve(r, base, out / f"member_{r.index}_learning_curve.png")
    save_model(
        model,
        out,
        arch=start.arch,
        folds=settings.folds,
        split=settings.split,
        seed=settings.seed,
        init=settings.init,
        lr=lr,
        forces_weight=force_weight,
        training_data=files,
        conformers=len(data),
        molecules=len(data.group_names),
        self_energy_baseline_rmse_kcal_mol=baseline,
        member_valid_rmse_kcal_mol=[r.best_valid_rmse_kcal_mol for r in results],
        member_start_valid_rmse_kcal_mol=[r.start_valid_rmse_kcal_mol for r in results],
        member_self_energy_valid_rmse_kcal_mol=fold_baseline,
        member_best_epoch=[r.best_epoch for r in results],
        warnings=warnings,
    )
    members = [MemberResult(**{**asdict(r), "state": None}) for r in results]
    return TrainResult(model.eval(), out, members, force_weight, lr, baseline, warnings)


def _with_progress(plans, settings: TrainSettings, enabled: bool, body):
    """Run ``body(on_epoch)`` with one progress bar per member (:func:`anif.progress.task_progress`)."""
    from ..progress import task_progress

    if not enabled:
        return body(lambda *a: None)
    for p in plans:
        ckpt = load_checkpoint(p.checkpoint)
        if ckpt is not None:
            epoch = ckpt["history"][-1]["epoch"]
            state = f"stopped at epoch {epoch}: {ckpt['stop_reason']}" if ckpt["stop_reason"] else f"resuming after epoch {epoch}"
            log.info("member %d: %s (%s)", p.index, state, p.checkpoint)
    with task_progress({p.index: f"member {p.index}" for p in plans}, settings.max_epochs, unit="epochs") as update:

        def on_epoch(index: int, rec: EpochRecord, best: float) -> None:
            update(index, rec.epoch, f"member {index} train {rec.train_rmse_kcal_mol:7.3f} "
                   f"valid {rec.valid_rmse_kcal_mol:7.3f} (best {best:.3f}) kcal/mol")

        results = body(on_epoch)
        for r in results:
            update(r.index, settings.max_epochs)
        return results


__all__ = ["MemberResult", "Start", "TrainResult", "load_checkpoint", "resolve_start", "train_ensemble"]
