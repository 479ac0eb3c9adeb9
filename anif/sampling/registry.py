"""The samplers, registered once: every place that knows a sampler reads it from here.

A :class:`Sampler` declares its ``name`` (the ``anif sample NAME`` command, the campaign's
``[conformational] samplers`` entry, the ``sampler`` of its candidates), its settings class and
config section (``[dnms]``: :class:`~anif.sampling.settings.DNMSSettings`), the keys a config may
not set and the ranges of the others, what one work item needs (``needs``: a ``"minimum"``
(one molecule at its minimum, with its Hessian when there is one), a ``"molecule"`` (one
structure), a ``"box"`` (a set of conformers packed into a periodic box) or a ``"chunk"`` of
source molecules), how rho_hat enters (``qbc``: ``"filter"`` keeps the candidates above it,
``"stop"`` ends a trajectory at the first one), its run function, the provenance it adds and the
options of its ``anif sample NAME`` command (``flags``: the settings fields it exposes, bounded by
``ranges`` as in the config; ``description``: the command's help).

``run`` names the function ``module:function`` (imported when a work item runs, so reading the
registry needs neither torch nor OpenMM): ``fn(model, payload, rho_hat, seed, settings=None)``
returning the candidates (a list of :class:`~anif.sampling.candidates.Candidate`; the search: a
:class:`~anif.sampling.search.SearchResult`).

Who reads it: :mod:`anif.al.config` (the sampler sections, their fixed keys and ranges, the
names ``[conformational] samplers`` accepts), :mod:`anif.sampling.parallel` (the Dask work
items), the campaign's sample stage (:mod:`anif.al.stages.sample`: which items, which
settings, which threshold, which provenance) and ``anif sample`` (:mod:`anif.cli.sample`: a
command per sampler, but the configurational search, whose work items are chunks of sources).
A new sampler is one module and one :func:`register` call.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from .settings import DimerSettings, DNMSSettings, FrameSettings, RTSSettings


def _no_provenance(payload) -> dict:
    return {}


@dataclass(frozen=True)
class Flag:
    """An option of ``anif sample NAME``: the settings field it sets, its flag, its help and, for a
    string, the values it takes (a number's bounds are the field's ``ranges``, as in the config)."""

    field: str
    flag: str
    help: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sampler:
    """One sampler's contract (see the module docstring)."""

    name: str
    run: str  # "module:function"
    needs: str  # "minimum", "molecule", "box" or "chunk"
    settings: Optional[type] = None
    section: str = ""  # the campaign config's section of its settings ("": none)
    fixed: tuple[str, ...] = ()  # settings a config may not set
    ranges: dict = field(default_factory=dict)  # key -> (lowest, highest, lowest excluded)
    at_minimum: dict = field(default_factory=dict)  # settings for inputs that are already minima
    min_atoms: int = 1  # smallest molecule it can sample
    qbc: str = "filter"  # "filter" (keep rho > rho_hat) or "stop" (stop at the first rho > rho_hat)
    conformational: bool = True  # a campaign's [conformational] samplers may name it
    provenance: Callable[[Any], dict] = _no_provenance  # payload -> what its candidates' provenance adds
    flags: tuple[Flag, ...] = ()  # the options of `anif sample NAME`, in order
    description: str = ""  # the help of `anif sample NAME`

    def bounds(self, key: str) -> tuple:
        """(lowest, highest, lowest excluded) of a number in its settings (by default >= 0)."""
        return self.ranges.get(key, (0, None, False))

    def function(self) -> Callable:
        """The run function (imported now)."""
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)

    def work_items(self, structures: Sequence, hessians: Optional[Sequence] = None, boxes: int = 1) -> list:
        """The work items of molecules at their minima (``hessians``: each one's Hessian or None)."""
        if self.needs == "box":
            return [list(structures)] * boxes
        hessians = list(hessians) if hessians is not None else [None] * len(structures)
        if self.needs == "minimum":
            return [(s, h) for s, h in zip(structures, hessians) if s.n_atoms >= self.min_atoms]
        return [s for s in structures if s.n_atoms >= self.min_atoms]

    def threshold(self, rho_hat: float, keep_above: float) -> float:
        """The rho_hat a run gets: the QBC threshold for a sampler that stops at it, else ``keep_above``
        (rho_hat, or -inf where every candidate is kept)."""
        return rho_hat if self.qbc == "stop" else keep_above


_REGISTRY: dict[str, Sampler] = {}


def register(sampler: Sampler) -> Sampler:
    """Add a sampler (its name must be new)."""
    if sampler.name in _REGISTRY:
        raise ValueError(f"a sampler named {sampler.name!r} is registered already")
    _REGISTRY[sampler.name] = sampler
    return sampler


def get(name: str) -> Sampler:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no sampler {name!r} (registered: {', '.join(_REGISTRY)})") from None


def samplers() -> dict[str, Sampler]:
    """Name -> sampler, in registration order."""
    return dict(_REGISTRY)


def conformational() -> tuple[str, ...]:
    """The samplers a campaign's ``[conformational] samplers`` may name."""
    return tuple(name for name, s in _REGISTRY.items() if s.conformational)


def _dnms_provenance(payload) -> dict:
    """Where DNMS took its normal modes from: the oracle's Hessian (given) or the ensemble's."""
    return {"hessian": "oracle" if payload[1] is not None else "ensemble"}


_K = (0, 20000, True)  # a temperature (K)
_POSITIVE, _AT_LEAST_1 = (0, None, True), (1, None, False)

register(Sampler(
    "dnms", "anif.sampling.dnms:sample_item", "minimum", DNMSSettings, "dnms",
    fixed=("fd_step", "min_force_constant", "optimize", "hessian"),
    ranges={"temperature": _K, "pool": _AT_LEAST_1, "keep": _AT_LEAST_1, "bias": _POSITIVE},
    at_minimum={"optimize": False}, min_atoms=2, provenance=_dnms_provenance,
    flags=(Flag("temperature", "--temperature", "K"), Flag("pool", "--pool", "normal-mode draws per molecule"),
           Flag("keep", "--keep", "most diverse conformers QBC-tested per molecule"),
           Flag("min_rmsd", "--min-rmsd", "near-duplicate RMSD (A, after superposition)"),
           Flag("bias", "--bias", "near-equilibrium bias exponent (1 = none)"),
           Flag("hessian", "--hessian", "'ensemble' (cheap) or 'reference' (PySCF)", ("ensemble", "reference"))),
    description="Diverse normal-mode sampling around the optimised geometry."))  # Fig. 2c
register(Sampler(
    "rts", "anif.sampling.rts:sample_rts", "molecule", RTSSettings, "rts", fixed=("backend",),
    ranges={"t_start": _K, "t_end": _K, "ramp_ps": _POSITIVE, "timestep_fs": _POSITIVE, "repeats": _AT_LEAST_1},
    qbc="stop",
    flags=(Flag("repeats", "--repeats", "trajectories per molecule (K)"),
           Flag("t_start", "--t-start", "initial temperature (K)"),
           Flag("t_end", "--t-end", "final thermostat temperature (K)"),
           Flag("ramp_ps", "--time-ps", "trajectory length = heating time (ps)"),
           Flag("timestep_fs", "--timestep", "fs"), Flag("friction", "--friction", "ps^-1")),
    description="Random trajectory sampling: heated MD, stop at the first structure with rho > rho_hat."))  # Fig. 2c
register(Sampler(
    "md", "anif.sampling.frames:sample_md", "molecule", FrameSettings, "md",
    ranges={"temperature": _K, "n": _AT_LEAST_1, "interval_ps": _POSITIVE, "timestep_fs": _POSITIVE},
    flags=(Flag("temperature", "--temperature", "K"), Flag("n", "--frames", "frames per molecule"),
           Flag("equilibration_ps", "--equilibration-ps", "ps of MD before the first frame"),
           Flag("interval_ps", "--interval-ps", "ps between frames"), Flag("timestep_fs", "--timestep", "fs"),
           Flag("friction", "--friction", "ps^-1")),
    description="MD sampling: the committee's Langevin MD at a fixed temperature, every frame QBC-tested."))
register(Sampler(
    "dimers", "anif.sampling.dimers:sample_dimers", "box", DimerSettings, "dimers", fixed=("backend",),
    ranges={"molecules": (2, None, False), "density": (0, 2, True), "time_ps": _POSITIVE, "timestep_fs": _POSITIVE,
            "temperature": _K, "interval": _AT_LEAST_1, "cutoff": _POSITIVE, "min_distance": _POSITIVE},
    flags=(Flag("molecules", "--molecules", "molecules per box"), Flag("density", "--density", "g/cm^3 (at most 2)"),
           Flag("time_ps", "--time-ps", "MD length (ps)"), Flag("interval", "--interval", "steps between box cuts"),
           Flag("cutoff", "--cutoff", "closest contact of a dimer pair (A)"), Flag("temperature", "--temperature", "K"),
           Flag("timestep_fs", "--timestep", "fs")),
    description="Dimer sampling: periodic box MD cut into dimer pairs, QBC-tested in batches."))  # Fig. 2c
register(Sampler(
    "search", "anif.sampling.search:search_item", "chunk", conformational=False,
    description="Configurational search: embed (RDKit + UFF), score rho in batches, keep rho > rho_hat."))  # Fig. 2b
