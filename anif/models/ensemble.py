"""ANI ensembles: loading (released ANI-1x or anif-saved), saving, and QBC evaluation.

Every model in anif meets the :class:`Ensemble` protocol: a TorchScript-compatible module mapping
atomic numbers (B, N) (-1 pads) and coordinates (B, N, 3) in Angstrom, optionally a cell
(3, 3) in Angstrom and pbc flags (3,), to the members' energies (M, B) in Hartree. The mean
of the members is the ensemble energy; their spread is the query-by-committee signal
(Smith et al., J. Chem. Phys. 148, 241733): sigma = std of member energies (Bessel-corrected,
as in ``torchani.arch.ANI.energies_qbcs``) and rho = sigma / sqrt(N).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..errors import AnifError, InputError, UnsupportedElementError
from ..progress import step_progress
from ..structures import Structure, element_problem
from ..units import HARTREE_TO_KCAL_MOL

#: File names of an anif-saved ensemble directory.
MODEL_JSON = "model.json"
MODEL_WEIGHTS = "weights.pt"
MODEL_FORMAT = "anif-ensemble"


@runtime_checkable
class Ensemble(Protocol):
    """The contract every anif model meets (:class:`StockAniEnsemble`, :class:`anif.models.kernels.FusedAniEnsemble`):
    a TorchScript-compatible module from atomic numbers (B, N) with -1 pads and coordinates (B, N, 3)
    in Angstrom (optionally a (3, 3) cell in Angstrom and (3,) pbc flags) to the members' energies
    (M, B) in Hartree; ``atomic_numbers`` lists the elements it supports, ``cutoff`` its radius (A)."""

    atomic_numbers: Tensor
    cutoff: float

    def __call__(self, species: Tensor, coordinates: Tensor, cell: Optional[Tensor] = None,
                 pbc: Optional[Tensor] = None) -> Tensor: ...


class StockAniEnsemble(torch.nn.Module):
    """Member energies of a torchani ANI ensemble, through torchani's own forward pass (the
    :class:`Ensemble` contract)."""

    def __init__(self, ani: torch.nn.Module):
        super().__init__()
        self.ani = ani
        self.register_buffer("_atomic_numbers", ani.atomic_numbers.clone(), persistent=False)
        self.cutoff = float(ani.cutoff)

    @property
    def atomic_numbers(self) -> Tensor:
        """The elements the model supports (a property, so the Ensemble protocol's runtime check sees it:
        Python 3.12 looks members up statically, and buffers are not)."""
        return self._atomic_numbers

    def forward(self, species: Tensor, coordinates: Tensor, cell: Optional[Tensor] = None,
                pbc: Optional[Tensor] = None) -> Tensor:
        return self.ani((species, coordinates), cell=cell, pbc=pbc, ensemble_values=True).energies


def build_ani(
    symbols: Sequence[str],
    layer_dims: dict[str, Sequence[int]],
    self_energies: Sequence[float],
    members: int,
    aev: Optional[dict] = None,
):
    """A torchani ANI ensemble with ANI-1x-style AEVs (CELU(0.1) MLPs with biases)."""
    import torchani
    from torchani.aev import AEVComputer
    from torchani.nn import ANINetworks, AtomicNetwork, Ensemble, TightCELU
    from torchani.sae import SelfEnergy

    aev_computer = AEVComputer.like_1x(num_species=len(symbols), **(aev or {}))
    nets = Ensemble(
        [
            ANINetworks({s: AtomicNetwork(layer_dims[s], activation=TightCELU(), bias=True) for s in symbols})
            for _ in range(members)
        ]
    )
    return torchani.arch.ANI(list(symbols), aev_computer, nets, SelfEnergy(list(symbols), list(self_energies)))


def _ensemble_spec(ani) -> dict:
    symbols = list(ani.symbols)
    first = ani.neural_networks.members[0]
    dims = {}
    for s in symbols:
        net = first.atomics[s]
        dims[s] = [net.layers[0].in_features] + [l.out_features for l in net.layers] + [net.final_layer.out_features]
    return {
        "symbols": symbols,
        "layer_dims": dims,
        "self_energies": [float(e) for e in ani.energy_shifter.self_energies],
        "members": len(ani.neural_networks.members),
    }


def save_model(model: Ensemble, directory: str | Path, **metadata) -> Path:
    """Save an ensemble as ``model.json`` (architecture, metadata, the weights' SHA-256) + ``weights.pt``.

    Each file is replaced atomically, the weights first; a kill between the two leaves new weights
    beside the old model.json, which :func:`load_model` then refuses (checksum) instead of mixing them.
    """
    import hashlib
    import io

    from ..outputs import atomic_write_bytes, atomic_write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(model.ani.state_dict(), buffer)
    weights = buffer.getvalue()
    spec = {"format": MODEL_FORMAT, "version": 1, **_ensemble_spec(model.ani), **metadata,
            "weights_sha256": hashlib.sha256(weights).hexdigest()}
    atomic_write_bytes(directory / MODEL_WEIGHTS, weights)
    atomic_write_text(directory / MODEL_JSON, json.dumps(spec, indent=2))
    return directory


def _spec_problem(spec) -> Optional[str]:
    """Why a model.json does not describe an ensemble :func:`build_ani` can build, or None."""
    import math

    from ..structures import atomic_number

    if not isinstance(spec, dict):
        return "is not a JSON object"
    if spec.get("format") != MODEL_FORMAT:
        return "is not an anif ensemble (no \"format\": \"anif-ensemble\")"
    for key in ("symbols", "layer_dims", "self_energies", "members", "weights_sha256"):
        if key not in spec:
            return f"lacks the key {key!r}"
    symbols, dims, shifts, members = spec["symbols"], spec["layer_dims"], spec["self_energies"], spec["members"]
    if not isinstance(symbols, list) or not symbols or not all(isinstance(x, str) for x in symbols) \
            or len(set(symbols)) != len(symbols):
        return "'symbols' must be a list of distinct element symbols"
    for x in symbols:
        try:
            atomic_number(x)
        except InputError:
            return f"'symbols' holds {x!r}, not an element"
    if not isinstance(dims, dict) or sorted(dims) != sorted(symbols):
        return "'layer_dims' must give the layer sizes of each element of 'symbols'"
    for x, d in dims.items():
        if not isinstance(d, list) or len(d) < 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in d):
            return f"'layer_dims' of {x} must be a list of at least two positive integers"
        if d[-1] != 1:
            return f"'layer_dims' of {x} must end in 1 (one energy per atom)"
    if not isinstance(shifts, list) or len(shifts) != len(symbols) or not all(
            isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e) for e in shifts):
        return "'self_energies' must be one finite number per symbol"
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        return "'members' must be a positive integer"
    if spec.get("aev") is not None and not isinstance(spec["aev"], dict):
        return "'aev' must be an object"
    sha = spec["weights_sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        return "'weights_sha256' must be a SHA-256 hex digest"
    return None


def _state_problem(state, expected: dict) -> Optional[str]:
    """Why a loaded weights file does not fit the architecture (plain tensors, names, shapes), or None."""
    if not isinstance(state, dict):
        return "is not a dictionary of tensors"
    for key, value in state.items():
        if type(value) is not torch.Tensor:
            return f"entry {key!r} is a {type(value).__name__}, not a plain tensor"
    missing = sorted(set(expected) - set(state))
    if missing:
        return f"lacks {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
    extra = sorted(set(state) - set(expected))
    if extra:
        return f"holds {extra[0]!r}, which the architecture in {MODEL_JSON} has not"
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            return (f"{key!r} has shape {tuple(state[key].shape)}, the architecture in {MODEL_JSON} "
                    f"{tuple(tensor.shape)}")
        if not torch.isfinite(state[key]).all() and state[key].is_floating_point():
            return f"{key!r} holds NaN or infinite values"
    return None


def _load_anif_dir(directory: Path):
    try:
        spec = json.loads((directory / MODEL_JSON).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{directory}: unreadable {MODEL_JSON} ({exc})") from None
    problem = _spec_problem(spec)
    if problem:
        raise InputError(f"{directory}: {MODEL_JSON} {problem}")
    try:
        ani = build_ani(spec["symbols"], spec["layer_dims"], spec["self_energies"], spec["members"], spec.get("aev"))
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{directory}: {MODEL_JSON} does not describe a buildable ensemble ({reason})") from None
    if "weights_sha256" in spec:
        import hashlib

        try:
            digest = hashlib.sha256((directory / MODEL_WEIGHTS).read_bytes()).hexdigest()
        except OSError as exc:
            raise InputError(f"{directory}: unreadable {MODEL_WEIGHTS} ({exc})") from None
        if digest != spec["weights_sha256"]:
            raise InputError(f"{directory}: {MODEL_WEIGHTS} does not belong to its {MODEL_JSON} (a save was "
                             "interrupted); save or train the model again")
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(directory / MODEL_WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's message runs over several lines: its first says why
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{directory}: corrupt or unsafe {MODEL_WEIGHTS} ({reason})") from None
    problem = _state_problem(state, ani.state_dict())
    if problem:
        raise InputError(f"{directory}: {MODEL_WEIGHTS} does not fit {MODEL_JSON}: {problem}")
    try:
        ani.load_state_dict(state)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{directory}: corrupt or mismatched {MODEL_WEIGHTS} ({reason})") from None
    return ani


def _ani1x_cache() -> Optional[Path]:
    """Where the parsed ANI-1x networks are kept as an anif model directory (``$ANIF_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/anif`` or ``~/.cache/anif``), named for the Neurochem files they come
    from and the torchani version; None while those files are not there (torchani fetches them)."""
    import hashlib

    import torchani

    info = torchani.paths.data_dir() / "Neurochem" / "ani-1x_8x.info"
    try:
        stat = info.stat()
    except OSError:
        return None
    key = f"{info.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{torchani.__version__}"
    root = cache_root()
    if root is None:
        return None
    return root / f"ani1x-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def cache_root() -> Optional[Path]:
    """anif's cache folder: ``$ANIF_CACHE_DIR``, else ``$XDG_CACHE_HOME/anif`` or ``~/.cache/anif``;
    None without a home directory (no cache). Not created here."""
    import os

    try:
        root = os.environ.get("ANIF_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anif"
    except RuntimeError:  # no home directory: no cache
        return None
    return Path(root)


def _load_ani1x():
    """ANI-1x from torchani's Neurochem files, parsed once (0.5 s) and then read from the cache (0.05 s)."""
    import torchani

    cache = _ani1x_cache()
    if cache is not None and (cache / MODEL_JSON).is_file():
        try:
            return _load_anif_dir(cache)
        except AnifError:
            pass  # a damaged cache entry is parsed again and replaced
    try:
        ani = torchani.neurochem.load_model_from_name("ani1x")
    except Exception as exc:
        raise AnifError(
            f"could not load the ANI-1x networks ({exc}); set TORCHANI_DATA_DIR to a folder "
            "holding Neurochem/ani-1x_8x or allow torchani to download them"
        ) from None
    if cache is not None:
        try:
            save_model(StockAniEnsemble(ani), cache, source="torchani Neurochem ani-1x_8x (cache)")
        except OSError:
            pass  # no writable cache: parse every time
    return ani


def load_ani(spec: str = "ani1x"):
    """The torchani ANI module for ``'ani1x'`` or an anif model directory."""
    if spec.lower() == "ani1x":
        return _load_ani1x()
    path = Path(spec)
    if (path / MODEL_JSON).is_file():
        return _load_anif_dir(path)
    raise InputError(f"unknown model {spec!r}: use 'ani1x' or a directory with {MODEL_JSON}")


#: Evaluation paths of :func:`load_model`; the first is the default.
IMPLEMENTATIONS = ("kernels", "torchscript", "stock")


def load_model(spec: str = "ani1x", implementation: str = "kernels") -> torch.nn.Module:
    """Load an ensemble (``'ani1x'`` or an anif model directory) meeting the :class:`Ensemble` contract.

    ``implementation`` selects the evaluation path: ``'kernels'`` (default) is
    :class:`anif.models.kernels.FusedAniEnsemble`, the members evaluated together, on the compiled CPU
    kernels of :mod:`anif.models.extension` where they load (its TorchScript operations otherwise, and on a
    GPU); ``'torchscript'`` is the same ensemble without the compiled kernels; ``'stock'`` is
    torchani's own forward pass (:class:`StockAniEnsemble`). All give the same numbers.
    """
    if implementation not in IMPLEMENTATIONS:
        raise AnifError(f"unknown implementation {implementation!r} (use {' or '.join(IMPLEMENTATIONS)})")
    ani = load_ani(spec)
    if implementation in ("kernels", "torchscript"):
        from .kernels import FusedAniEnsemble

        model = FusedAniEnsemble(ani, kernels=implementation == "kernels")
    else:
        model = StockAniEnsemble(ani)
    model.spec = spec
    return model.eval()


def supported_numbers(model: torch.nn.Module) -> set[int]:
    return {int(z) for z in model.atomic_numbers}


def check_supported(model: torch.nn.Module, numbers) -> None:
    """Raise UnsupportedElementError for elements (atomic numbers; -1 pads ignored) the model lacks."""
    numbers = np.asarray(numbers).ravel()
    problem = element_problem(numbers[numbers >= 0], supported_numbers(model))
    if problem:
        raise UnsupportedElementError(problem)


@dataclass
class EnsembleResult:
    """QBC evaluation of B structures. Energies in Hartree, forces in Hartree/Angstrom."""

    energy: np.ndarray  # (B,)
    forces: Optional[np.ndarray]  # (B, N, 3)
    member_energies: np.ndarray  # (M, B)
    sigma: np.ndarray  # (B,) Hartree
    n_atoms: np.ndarray  # (B,)
    force_sigma: Optional[np.ndarray] = None  # (B,) Hartree/A (:func:`force_spread`), with member_forces

    @property
    def rho(self) -> np.ndarray:
        return self.sigma / np.sqrt(self.n_atoms)

    @property
    def sigma_kcal_mol(self) -> np.ndarray:
        return self.sigma * HARTREE_TO_KCAL_MOL

    @property
    def rho_kcal_mol(self) -> np.ndarray:
        return self.rho * HARTREE_TO_KCAL_MOL

    @property
    def force_sigma_kcal_mol_a(self) -> Optional[np.ndarray]:
        return None if self.force_sigma is None else self.force_sigma * HARTREE_TO_KCAL_MOL


def member_spread(members: Tensor) -> Tensor:
    """sigma: Bessel-corrected standard deviation over members (0 for a single member)."""
    if members.shape[0] < 2:
        return torch.zeros_like(members[0])
    return members.std(0, unbiased=True)


def force_spread(member_forces: Tensor, n_atoms: Tensor) -> Tensor:
    """The members' force disagreement per structure: the norm of the members' force standard deviation
    (:func:`member_spread`) on each atom, averaged over the structure's atoms. ``member_forces`` (M, B, N, 3)
    with zeros on pads, ``n_atoms`` (B,) real atoms; units of the forces."""
    return torch.linalg.vector_norm(member_spread(member_forces), dim=-1).sum(-1) / n_atoms


def evaluate(
    model: torch.nn.Module,
    species,
    coordinates,
    cell=None,
    pbc=None,
    forces: bool = True,
    member_forces: bool = False,
) -> EnsembleResult:
    """Ensemble energy, forces, member energies, sigma and rho for a (padded) batch; with
    ``member_forces`` also each member's forces, and their disagreement (:func:`force_spread`).

    ``species`` (B, N) atomic numbers with -1 padding (or (N,) for one structure);
    ``coordinates`` (B, N, 3) Angstrom.
    """
    param = next(model.parameters())
    species_t = torch.as_tensor(np.asarray(species), dtype=torch.long, device=param.device)
    coords_t = torch.as_tensor(np.asarray(coordinates), dtype=param.dtype, device=param.device)
    if species_t.dim() == 1:
        species_t, coords_t = species_t[None], coords_t[None]
    check_supported(model, species_t.cpu().numpy())
    if not torch.isfinite(coords_t).all():
        raise InputError("coordinates contain NaN or infinite values")
    cell_t = None if cell is None else torch.as_tensor(np.asarray(cell), dtype=param.dtype, device=param.device)
    pbc_t = None if pbc is None else torch.as_tensor(np.asarray(pbc), dtype=torch.bool, device=param.device)
    forces = forces or member_forces
    coords_t.requires_grad_(forces)
    with torch.set_grad_enabled(forces):
        if hasattr(model, "interaction_energies"):  # self energies added in float64 below
            members = model.interaction_energies(species_t, coords_t, cell_t, pbc_t)
            offset = model.self_energy(species_t).detach().cpu().double()
        else:
            members = model(species_t, coords_t, cell_t, pbc_t)
            offset = torch.zeros(species_t.shape[0], dtype=torch.float64)
        if member_forces:  # each member's gradient; their mean is the ensemble's
            grads = torch.stack([torch.autograd.grad(members[m].sum(), coords_t, retain_graph=m + 1 < len(members))[0]
                                 for m in range(len(members))])
            grad = grads.mean(0)
        else:
            grad = torch.autograd.grad(members.mean(0).sum(), coords_t)[0] if forces else None
    members = members.detach().cpu().double()
    n_atoms = (species_t >= 0).sum(1).cpu()
    return EnsembleResult(
        energy=(members.mean(0) + offset).numpy(),
        forces=None if grad is None else (-grad).cpu().double().numpy(),
        member_energies=(members + offset).numpy(),
        sigma=member_spread(members).numpy(),
        n_atoms=n_atoms.numpy(),
        force_sigma=force_spread(grads.cpu().double(), n_atoms).numpy() if member_forces else None,
    )


def pad_structures(structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray]:
    """Stack structures of different sizes into (B, Nmax) species (-1 pads), (B, Nmax, 3)."""
    nmax = max(s.n_atoms for s in structures)
    species = np.full((len(structures), nmax), -1, dtype=np.int64)
    coords = np.zeros((len(structures), nmax, 3))
    for i, s in enumerate(structures):
        species[i, : s.n_atoms] = s.numbers
        coords[i, : s.n_atoms] = s.coordinates
    return species, coords


def score_structures(model: torch.nn.Module, structures: Sequence[Structure], batch_size: int = 256,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble energy (Ha) and rho (kcal/mol) of many structures, without forces: the batched QBC
    test. Structures are sorted by size so each padded batch holds similar sizes; results come back
    in the input order."""
    energy, rho = np.zeros(len(structures)), np.zeros(len(structures))
    for chunk, result in _size_batches(model, structures, batch_size, progress, forces=False):
        energy[chunk], rho[chunk] = result.energy, result.rho_kcal_mol
    return energy, rho


def score_force_spread(model: torch.nn.Module, structures: Sequence[Structure], batch_size: int = 64,
                       progress: bool = False) -> np.ndarray:
    """The members' force disagreement (:func:`force_spread`, kcal/mol/A) of many structures, in
    size-sorted padded batches like :func:`score_structures`."""
    spread = np.zeros(len(structures))
    for chunk, result in _size_batches(model, structures, batch_size, progress, member_forces=True):
        spread[chunk] = result.force_sigma_kcal_mol_a
    return spread


def _size_batches(model, structures: Sequence[Structure], batch_size: int, progress: bool, **options):
    """(indices, :func:`evaluate` result) per padded batch of structures of similar sizes."""
    structures = list(structures)
    order = np.argsort([s.n_atoms for s in structures], kind="stable")
    with step_progress("QBC", len(structures), enabled=progress, unit="structures") as advance:
        for start in range(0, len(structures), batch_size):
            chunk = order[start : start + batch_size]
            yield chunk, evaluate(model, *pad_structures([structures[i] for i in chunk]), **options)
            advance(start + len(chunk))
