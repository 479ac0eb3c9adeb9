"""What anif train learns from: conformers read from ANI-format HDF5, their k-fold split, the
self-energy fit, and the tensors one mini-batch is evaluated on.

Labels: only the samplers' candidates are refused (:func:`unlabelled`). Samplers write candidates
whose energy is the ensemble's mean, a placeholder until ``anif label`` computes the reference;
their ``method`` column is :data:`anif.datasets.CANDIDATE_METHOD` (older candidate files, a store of
kind "candidates", leave it empty). Any other ``method`` (``anif label`` writes ``wb97x/6-31g*``; a
teacher model's name for teacher labels; the legacy ANI-1x / COMP6 v1 ``lot``) counts as a label.
Files without a method (the ANI-1 and COMP6 releases, many ANI-format and imported extended-XYZ
files) train too, with a warning that the method is unknown (:func:`unknown_method_warning`).

Forces in a mini-batch come without autograd through the descriptor when the compiled kernels
load: the networks give dE/dAEV, forces are ``-J^T dE/dAEV`` (``torch.ops.anif.aev_vjp``, J the
AEV's Jacobian) and the force loss's gradient needs ``J u`` (``aev_jvp``), so the AEVs can be
cached once per dataset with or without forces. Without the kernels (``ANIF_KERNELS=0``, no
compiler) forces go through autograd of torchani's AEV computer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..structures import atomic_number
from .settings import SPLITS, SYMBOLS

#: Largest AEV cache (GB); beyond it AEVs are recomputed every batch.
AEV_CACHE_LIMIT_GB = 4.0



@dataclass
class ConformerSet:
    """All conformers of the training files, padded to the largest molecule.

    species (C, N) atomic numbers with -1 pads; coordinates (C, N, 3) Angstrom; energies
    (C,) Hartree; forces (C, N, 3) Hartree/Angstrom or None (when some conformer has none);
    group (C,) molecule index into group_names; method (C,) the label's method, "" when unset.
    """

    species: np.ndarray
    coordinates: np.ndarray
    energies: np.ndarray
    forces: Optional[np.ndarray]
    group: np.ndarray
    group_names: list[str]
    method: np.ndarray

    @property
    def n_atoms(self) -> np.ndarray:
        return (self.species >= 0).sum(1)

    def __len__(self) -> int:
        return len(self.energies)


def _methods(record: dict, n_conf: int) -> np.ndarray:
    """Per-conformer method of a read group: its ``method`` column, else a legacy ``lot``."""
    method = record.get("method")
    if method is not None and np.asarray(method).shape[:1] == (n_conf,):
        return np.array([str(m) for m in np.asarray(method).ravel()], dtype=object)
    lot = record.get("lot")
    label = str(np.asarray(lot).ravel()[0]) if lot is not None and np.asarray(lot).size else ""
    return np.full(n_conf, label, dtype=object)


def read_conformers(paths: Sequence[str | Path]) -> ConformerSet:
    """Read ANI-format HDF5 files; a group name is a molecule (same name in two files: same group).

    Legacy-layout (COMP6 v1) files store the energy gradient under ``forces``; it is flipped
    (:mod:`anif.datasets.comp6`). Forces are returned only when every conformer has finite ones.
    """
    from ..datasets.store import CANDIDATE_METHOD, DatasetStore, check_labels, stored_forces

    blocks = []
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"{path}: no such dataset file")
        store = DatasetStore(str(path), mode="r")
        legacy = store.legacy
        for name, record in store:
            if "energies" not in record:
                raise InputError(f"{path}: group {name} has no energies; label it first (anif label)")
            species = np.asarray(record["species"], dtype=np.int64).ravel()
            energies = np.asarray(record["energies"], dtype=np.float64).ravel()
            if len(energies) == 0:
                continue
            coords = np.asarray(record["coordinates"], dtype=np.float64)
            if coords.shape != (len(energies), len(species), 3):
                raise InputError(f"{path}: group {name} has {coords.shape[0]} coordinate sets for {len(energies)} energies")
            if not (np.isfinite(coords).all() and np.isfinite(energies).all()):
                raise InputError(f"{path}: group {name} holds NaN or infinite coordinates/energies")
            forces = record.get("forces")
            if forces is not None:
                forces = stored_forces(forces, legacy).reshape(coords.shape)
            # energies in Hartree, coordinates in Angstrom, forces in Ha/A: the checks `merge` makes
            check_labels(f"{path}: group {name!r}", {"species": species, "coordinates": coords, "energies": energies,
                                                      **({"forces": forces} if forces is not None else {})})
            methods = _methods(record, len(energies))
            if store.stored_kind == "candidates":  # older candidate files leave method empty
                methods[methods == ""] = CANDIDATE_METHOD
            blocks.append((name, species, coords, energies, forces, methods))
    if not blocks:
        raise InputError(f"no conformers in {', '.join(str(p) for p in paths)}")
    names = sorted({b[0] for b in blocks})
    index = {n: i for i, n in enumerate(names)}
    total = sum(len(b[3]) for b in blocks)
    nmax = max(len(b[1]) for b in blocks)
    species = np.full((total, nmax), -1, dtype=np.int64)
    coordinates = np.zeros((total, nmax, 3))
    forces = np.zeros((total, nmax, 3))
    has_forces = True
    energies = np.zeros(total)
    group = np.zeros(total, dtype=np.int64)
    method = np.empty(total, dtype=object)
    start = 0
    for name, sp, xyz, e, f, m in blocks:
        stop = start + len(e)
        species[start:stop, : len(sp)] = sp
        coordinates[start:stop, : len(sp)] = xyz
        energies[start:stop] = e
        group[start:stop] = index[name]
        method[start:stop] = m
        if f is None or not np.isfinite(f).all():
            has_forces = False
        else:
            forces[start:stop, : len(sp)] = f
        start = stop
    return ConformerSet(species, coordinates, energies, forces if has_forces else None, group, names, method)


def unlabelled(data: ConformerSet) -> np.ndarray:
    """Mask of conformers whose energy is not a reference label: the samplers' candidates (see the
    module docstring)."""
    from ..datasets.store import CANDIDATE_METHOD

    return np.array([m == CANDIDATE_METHOD for m in data.method], dtype=bool)


def unknown_method_warning(data: ConformerSet) -> Optional[str]:
    """One line when some conformers carry no ``method`` (their energies train as labels), else None."""
    n = int(sum(1 for m in data.method if m == ""))
    if n == 0:
        return None
    return (f"{n} of {len(data)} conformers carry no 'method' column: the level of theory of their labels is "
            "unknown (they train as reference labels)")


def element_counts(species: np.ndarray, symbols: Sequence[str] = SYMBOLS) -> np.ndarray:
    """(C, len(symbols)) number of atoms of each element per conformer."""
    return np.stack([(species == atomic_number(s)).sum(1) for s in symbols], axis=1).astype(np.float64)


def fit_self_energies(species: np.ndarray, energies: np.ndarray, symbols: Sequence[str] = SYMBOLS) -> np.ndarray:
    """Self atomic energies (Hartree): least squares of the energies on the element counts."""
    counts = element_counts(species, symbols)
    return np.linalg.lstsq(counts, energies, rcond=None)[0]


def conformer_keys(data: ConformerSet, seed: int) -> np.ndarray:
    """A 64-bit hash per conformer of its atoms and coordinates (and ``seed``): the same
    structure gets the same key in any file, order or data set."""
    keys = np.empty(len(data), dtype=np.uint64)
    salt = int(seed).to_bytes(8, "little", signed=True)
    for c, n in enumerate(data.n_atoms):
        h = hashlib.blake2b(salt, digest_size=8)
        h.update(data.species[c, :n].astype(np.int64).tobytes())
        h.update(np.ascontiguousarray(data.coordinates[c, :n], dtype=np.float64).tobytes())
        keys[c] = int.from_bytes(h.digest(), "little")
    return keys


def assign_folds(data: ConformerSet, folds: int, seed: int, split: str = "conformer") -> np.ndarray:
    """Fold of every conformer (C,).

    ``split="conformer"`` (the paper's k-fold cross-validation): a conformer's fold is its
    :func:`conformer_keys` hash modulo ``folds``, so folds are of nearly equal size and a
    conformer keeps its fold when the data grow (same ``folds`` and ``seed``): member i of an
    active-learning cycle, warm-started from member i of the previous one, validates on
    conformers that member never trained on.
    ``split="molecule"``: whole molecules (groups) go to one fold, balanced by conformer count,
    so a member's validation measures transfer to molecules it never saw.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} (use {' or '.join(SPLITS)})")
    if folds < 2:
        raise InputError(f"--folds must be at least 2 (got {folds})")
    if split == "conformer":
        if folds > len(data):
            raise InputError(f"--folds {folds} is larger than the number of conformers ({len(data)})")
        return (conformer_keys(data, seed) % np.uint64(folds)).astype(np.int64)
    n_groups = len(data.group_names)
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
    return fold_of_group[data.group]


# ----------------------------------------------------------------------------- mini-batches


class _AevForceProduct(torch.autograd.Function):
    """``J^T g`` (B, N, 3) from g = dE/dAEV (B * N, F), differentiable in g through ``J u``."""

    @staticmethod
    def forward(ctx, grad_aev: Tensor, coordinates: Tensor, elem: Tensor, args: tuple) -> Tensor:
        ctx.save_for_backward(coordinates, elem)
        ctx.args = args
        return torch.ops.anif.aev_vjp(coordinates, elem, grad_aev, *args)

    @staticmethod
    def backward(ctx, grad_x: Tensor):
        coordinates, elem = ctx.saved_tensors
        return torch.ops.anif.aev_jvp(coordinates, elem, grad_x.contiguous(), *ctx.args), None, None, None


class TrainingData:
    """A ConformerSet as tensors for training: element indices, float32 coordinates, targets
    (reference minus self energies, computed in float64), forces, and the AEVs of all real
    atoms cached in one (atoms, features) table when it fits in :data:`AEV_CACHE_LIMIT_GB`.

    ``kernels``: compute forces through the compiled AEV products (default when they load).
    """

    def __init__(self, data: ConformerSet, ani, self_energies: np.ndarray, kernels: Optional[bool] = None):
        from ..models.extension import aev_arguments, load

        self.elem = ani.species_converter(torch.as_tensor(data.species))  # element indices, -1 pads
        self.coordinates = torch.as_tensor(data.coordinates, dtype=torch.float32)
        self.forces = None if data.forces is None else torch.as_tensor(data.forces, dtype=torch.float32)
        self.n_atoms = torch.as_tensor(data.n_atoms)
        shifted = data.energies - element_counts(data.species) @ np.asarray(self_energies, dtype=np.float64)
        self.targets = torch.as_tensor(shifted, dtype=torch.float32)
        self.aev_computer = ani.aev_computer
        self.num_elements = len(SYMBOLS)
        use_kernels = load() if kernels is None else kernels
        self.kernel_args = aev_arguments(self.aev_computer) if use_kernels else None
        real = self.elem >= 0
        self.rows = torch.full(self.elem.shape, -1, dtype=torch.long)
        self.rows[real] = torch.arange(int(real.sum()))
        size_gb = int(real.sum()) * self.aev_computer.out_dim * 4 / 1e9
        cacheable = use_kernels or data.forces is None
        self.aevs = self._compute_aevs() if cacheable and size_gb <= AEV_CACHE_LIMIT_GB else None

    def __len__(self) -> int:
        return len(self.targets)

    @torch.no_grad()
    def _compute_aevs(self, chunk: int = 512) -> Tensor:
        parts = []
        for start in range(0, len(self), chunk):
            idx = torch.arange(start, min(start + chunk, len(self)))
            w = int(self.n_atoms[idx].max())
            elem = self.elem[idx, :w]
            aev = self._aev(elem, self.coordinates[idx, :w])
            parts.append(aev[elem.reshape(-1) >= 0])
        return torch.cat(parts)

    def _aev(self, elem: Tensor, coords: Tensor) -> Tensor:
        """(B * W, F) AEVs of a padded batch."""
        if self.kernel_args is not None:
            return torch.ops.anif.aev(coords, elem, *self.kernel_args)
        return self.aev_computer(elem, coords).flatten(0, 1)

    def evaluate(self, networks, idx: Tensor, forces: bool = False, create_graph: bool = False):
        """Network energies (B,) (shifted, Hartree) of conformers ``idx`` and, with ``forces``,
        their forces (B, W, 3) (Hartree/Angstrom, W the largest atom count in the batch).

        ``networks``: a torchani ANINetworks (one member). ``create_graph`` keeps the forces
        differentiable in the weights (for a force loss).
        """
        w = int(self.n_atoms[idx].max())
        elem = self.elem[idx, :w]
        flat = elem.reshape(-1)
        pos = (flat >= 0).nonzero().squeeze(1)
        pos = pos[torch.argsort(flat[pos], stable=True)]  # real atoms, grouped by element
        counts = torch.bincount(flat[pos], minlength=self.num_elements).tolist()
        coords = self.coordinates[idx, :w]
        autograd_forces = forces and self.kernel_args is None
        if autograd_forces:
            coords = coords.clone().requires_grad_(True)
            aev = self._aev(elem, coords).index_select(0, pos)
        elif self.aevs is not None:
            aev = self.aevs.index_select(0, self.rows[idx, :w].reshape(-1).index_select(0, pos))
        else:
            aev = self._aev(elem, coords).index_select(0, pos)
        if forces and not autograd_forces:
            aev.requires_grad_(True)
        atomic, start = [], 0
        for net, count in zip(networks.atomics.values(), counts):
            if count:
                atomic.append(net(aev.narrow(0, start, count)))
            start += count
        energies = aev.new_zeros(len(idx)).index_add(0, torch.div(pos, w, rounding_mode="floor"), torch.cat(atomic).view(-1))
        if not forces:
            return energies, None
        if autograd_forces:
            grad = torch.autograd.grad(energies.sum(), coords, create_graph=create_graph)[0]
            return energies, -grad
        grad_aev = torch.autograd.grad(energies.sum(), aev, create_graph=create_graph)[0]
        padded = grad_aev.new_zeros((len(flat), grad_aev.shape[1])).index_copy(0, pos, grad_aev)
        return energies, -_AevForceProduct.apply(padded, coords, elem, self.kernel_args)
