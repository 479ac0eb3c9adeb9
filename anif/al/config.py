"""A campaign's TOML configuration: sections, defaults (defined once, here or in the settings
dataclasses of the pieces they configure), validation, and what a resumed run may change.

Sections (``[campaign]`` and at least one ``[test_sets.NAME]`` are required)::

    [campaign]      seed, oracle ("pyscf" | "model:ani1x" | "model:PATH")
    [oracle]        PySCF level and optimisation (OracleSettings)
    [bootstrap]     dataset reduction from a labelled set, or random DNMS of small molecules
    [search]        configurational search sources, staged by size
    [conformational] samplers run in each cycle and when to switch to a configurational cycle
    [dnms] [rts] [md] [dimers]   sampler settings: one section per registered sampler that has one
                    (anif.sampling.registry: DNMSSettings, RTSSettings, FrameSettings, DimerSettings)
    [qbc]           rho_hat, recalibration, strategy ("qbc" or the "random" baseline), measure (rho or the
                    members' force disagreement), trust bound, cap
    [training]      fields of anif.training.TrainSettings, plus warm_start and jobs
    [stop]          stop rules (the only section a resumed campaign may change)
    [test_sets.NAME]  file = "labelled.h5"  or  smiles = [...] (conformers labelled by the oracle)

Relative paths are relative to the config file.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..labeling.settings import Level
from ..sampling import registry
from ..training.settings import TrainSettings

#: Selection strategies ([qbc] strategy): query by committee, or the uniform random baseline.
STRATEGIES = ("qbc", "random")
#: How QBC fills the cap ([qbc] order): highest rho first, a seeded draw among rho > rho_hat, or
#: the highest rho of each k-means cluster of them in AEV space (anif.al.selection).
ORDERS = ("rho", "uniform", "diverse")
#: What QBC scores a candidate by ([qbc] measure): rho (the paper's energy disagreement, against rho_hat), or
#: the members' force disagreement (anif.models.ensemble.force_spread, against force_hat).
MEASURES = ("rho", "forces")
#: How generated test conformers are made.
TEST_SAMPLERS = ("dnms", "md")
#: Fewest conformers each member of a scratch bootstrap must train on: below it the networks have
#: nothing to learn beyond the self-energy fit and the committee's disagreement means nothing.
MIN_BOOTSTRAP_TRAIN_CONFORMERS = 32


@dataclass(frozen=True)
class CampaignSettings:
    seed: int = 0
    oracle: str = "pyscf"  # "pyscf", or a teacher ensemble: "model:ani1x", "model:PATH"
    init: str = ""  # "": train from scratch; "ani1x" or a model folder: fine-tune that ensemble's members


@dataclass(frozen=True)
class OracleSettings:
    """PySCF reference level (its fields under the config's names: :attr:`level`) and optimisation;
    ignored by teacher oracles except ``hessian``."""

    method: str = "wb97x"
    basis: str = "6-31g*"
    density_fit: bool = False  # recorded in every label's method (Level.tag: "wb97x/6-31g*/df"); never mixed
    device: str = "auto"  # "auto" | "cpu" | "cuda" (gpu4pyscf); the same numbers on either
    max_scf_cycles: int = 100
    threads: int = 0  # PySCF threads per task; 0: cores / workers
    convergence: str = "GAU_TIGHT"  # geomeTRIC criteria of the optimisations
    max_steps: int = 200
    hessian: bool = True  # DNMS modes from the oracle's Hessian (False: the current ensemble's)
    minima: str = "oracle"  # who optimises molecules (and gives their Hessians): "oracle" or "model:SPEC"

    @property
    def level(self) -> Level:
        """The reference level these settings name (the one :class:`anif.labeling.settings.Level`)."""
        return Level(method=self.method, basis=self.basis, density_fit=self.density_fit, max_cycle=self.max_scf_cycles,
                     device=self.device)


@dataclass(frozen=True)
class BootstrapSettings:
    """Cycle 0. With ``dataset``: the paper's dataset reduction (Fig. 2a) of that labelled set.
    Without: random DNMS of ``molecules`` small molecules (1..max_heavy_atoms C, N, O atoms)."""

    dataset: str = ""
    start_fraction: float = 0.02
    add_fraction: float = 0.02
    fail_threshold: float = 0.04  # kcal/mol per sqrt(atom)
    stop_fraction: float = 0.05
    max_rounds: int = 50  # reduction rounds at most (the last adds nothing more)
    molecules: int = 8
    max_heavy_atoms: int = 5
    smiles: tuple[str, ...] = ()  # explicit bootstrap molecules (default: drawn from the GDB-11-like set)
    conformers: int = 16  # DNMS conformers per molecule (per start)
    starts: int = 1  # distinct RDKit + UFF conformers per molecule, each minimised and sampled on its own


@dataclass(frozen=True)
class SearchSettings:
    """Configurational search sources; the k-th configurational cycle draws molecules with at most
    ``size_stages[k]`` heavy atoms (the last stage repeats)."""

    gdb11: bool = True
    smiles_files: tuple[str, ...] = ()
    smiles: tuple[str, ...] = ()
    dipeptides: bool = False
    random_dimers: int = 0  # random dimers of sampling-set molecules searched per cycle
    molecules_per_cycle: int = 32  # molecules drawn and scored per configurational cycle
    keep: int = 0  # at most this many of those that qualify (QBC: rho > rho_hat) join, a seeded uniform draw; 0: all
    size_stages: tuple[int, ...] = (4, 6, 8)
    chunk: int = 16  # molecules per pool task


@dataclass(frozen=True)
class ConformationalSettings:
    samplers: tuple[str, ...] = ("dnms", "rts")
    dimer_boxes: int = 1  # periodic boxes per cycle when "dimers" is among the samplers
    molecules_per_cycle: int = 0  # sampling-set molecules per conformational cycle (0: all)
    # conformational cycles without test improvement before a configurational one; 0: they alternate, whatever
    # the test error (the schedule of an A/B: the test set then never steers what a campaign samples)
    patience: int = 1


@dataclass(frozen=True)
class QBCSettings:
    rho_hat: float = 0.23  # kcal/mol
    recalibrate: bool = False  # recalibrate rho_hat on the first test set after each cycle
    error_bound: float = 1.5  # kcal/mol per sqrt(atom), for recalibration
    capture: float = 0.98
    upper_bound: float = math.inf  # trust bound: candidates with rho above it are not labelled
    min_rmsd: float = 0.05  # near-duplicates (A, after superposition) are labelled once
    max_per_cycle: int = 200
    # "qbc": label rho > rho_hat, highest rho first. "random" (the baseline of an A/B): the same samplers and
    # cap, but no rho anywhere: the samplers keep every candidate, the search keeps every molecule (or a uniform
    # draw of [search] keep of them), and the selection picks uniformly (seeded) among all candidates. RTS
    # still stops at its first rho > rho_hat structure in both: that is how the sampler works, not a selection.
    strategy: str = "qbc"
    prefilter: bool = True  # qbc: samplers keep only rho > rho_hat (False: all, the selection filters)
    spread: bool = False  # qbc: fill the cap round-robin over molecules (best of each first), not by rho alone
    # qbc: how the cap is filled among rho > rho_hat: "rho" highest rho first, "uniform" a seeded draw,
    # "diverse" the highest rho of each of `max_per_cycle` k-means clusters in AEV space
    order: str = "rho"
    # qbc: what a candidate is scored by: "rho", or "forces": the members' force disagreement (kcal/mol/A: the
    # norm of their force standard deviation, averaged over atoms; measured against rho in the README, not
    # better on the shipped campaigns); the samplers then keep every candidate and the selection takes those
    # above force_hat, in `order`. RTS and the configurational search still stop and keep on rho > rho_hat.
    measure: str = "rho"
    force_hat: float = 1.0  # kcal/mol/A, with measure = "forces"


@dataclass(frozen=True)
class TrainingSettings:
    """TrainSettings (anif.training) with the campaign's warm start and parallel members."""

    train: TrainSettings = field(default_factory=TrainSettings)
    warm_start: bool = True  # start each cycle from the previous cycle's members
    jobs: int = 0  # members trained at once (0: min(members, cores))


@dataclass(frozen=True)
class StopSettings:
    max_cycles: int = 10  # cycles after the bootstrap
    label_budget: int = 0  # labels in the training set (0: no limit)
    wall_time_h: float = 0.0  # (0: no limit)
    patience: int = 3  # cycles without improvement of the best test error
    min_improvement: float = 0.01  # relative decrease of the mean test RMSE that counts


@dataclass(frozen=True)
class TestSet:
    name: str = ""
    file: str = ""  # a labelled ANI HDF5 file
    smiles: tuple[str, ...] = ()  # or molecules whose DNMS conformers the oracle labels
    conformers: int = 16
    temperature: float = 600.0  # K, DNMS temperature (or MD thermostat) of generated test conformers
    sampler: str = "dnms"  # "dnms": normal modes at the minimum; "md": frames of Langevin MD with `model`
    model: str = "ani1x"  # the ensemble that runs the MD of sampler = "md"


@dataclass(frozen=True)
class Config:
    campaign: CampaignSettings
    oracle: OracleSettings
    bootstrap: BootstrapSettings
    search: SearchSettings
    conformational: ConformationalSettings
    samplers: dict[str, Any]  # section -> the settings of the registered sampler it configures ([dnms], [rts], ...)
    qbc: QBCSettings
    training: TrainingSettings
    stop: StopSettings
    test_sets: tuple[TestSet, ...]
    path: str = ""  # the file it was read from

    def sections(self) -> dict[str, Any]:
        """Every section's settings by its name (the samplers' sections among them), in file order."""
        out = {}
        for f in fields(self):
            if f.name == "samplers":
                out.update(self.samplers)
            elif f.name != "path":
                out[f.name] = getattr(self, f.name)
        return out

    def as_dict(self) -> dict:
        """Plain, JSON-able values of every setting (the campaign's record of its config)."""
        return _jsonable({name: [asdict(t) for t in value] if name == "test_sets" else asdict(value)
                          for name, value in self.sections().items()})


#: The campaign's own single-table sections: section -> (settings class, keys a user may not set).
_SECTIONS = {
    "campaign": (CampaignSettings, ()),
    "oracle": (OracleSettings, ()),
    "bootstrap": (BootstrapSettings, ()),
    "search": (SearchSettings, ()),
    "conformational": (ConformationalSettings, ()),
    "qbc": (QBCSettings, ()),
    "stop": (StopSettings, ()),
}
_REQUIRED = ("campaign", "test_sets")
#: Sections a resumed campaign may change (they decide when to stop, not what was done).
MUTABLE_SECTIONS = ("stop",)
_TRAINING_FIXED = ("init", "seed")  # set by the campaign (warm start, campaign seed)


def _sampler_sections() -> dict[str, registry.Sampler]:
    """The registered samplers' sections ([dnms] [rts] [md] [dimers]): section -> sampler, read at each use."""
    return {s.section: s for s in registry.samplers().values() if s.section}


def _sections() -> dict[str, tuple[type, tuple[str, ...]]]:
    """Every single-table section: the campaign's own and the registered samplers'."""
    return {**_SECTIONS, **{section: (s.settings, s.fixed) for section, s in _sampler_sections().items()}}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return value


def _build(cls, section: str, values: dict, forbidden=()):
    allowed = [f.name for f in fields(cls) if f.name not in forbidden]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise InputError(f"[{section}]: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    kwargs = {}
    defaults = cls()
    for key, value in values.items():
        default = getattr(defaults, key)
        kwargs[key] = _coerce(value, default, f"[{section}] {key}")
    return replace(defaults, **kwargs)


def _coerce(value, default, label: str):
    """Check a TOML value against the default's type (ints are fine for floats; lists for tuples)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):
        ok = isinstance(value, list)
        if ok and default:
            ok = all(isinstance(v, type(default[0])) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    elif default is None:
        ok = True
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise InputError(f"{label}: expected {type(default).__name__}, got {value!r}")
    return value


def _resolve(base: Path, path: str) -> str:
    return str((base / path).resolve()) if path else ""


def _model_spec(base: Path, spec: str, prefix: str = "") -> str:
    """A model spec with a folder path resolved against the config's folder ("ani1x" and "" stay)."""
    if not spec.startswith(prefix):
        return spec
    name = spec[len(prefix):]
    return spec if name in ("", "ani1x") else prefix + _resolve(base, name)


def load_config(path: str | Path) -> Config:
    """Read and validate a campaign config; raises InputError naming the first problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(raw, path.resolve().parent, str(path))


def parse_config(raw: dict, base: Path, label: str = "config") -> Config:
    """A Config from parsed TOML (``base``: folder that relative paths start from)."""
    sections = _sections()
    known = set(sections) | {"training", "test_sets"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InputError(f"{label}: unknown section(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    missing = [s for s in _REQUIRED if s not in raw]
    if missing:
        raise InputError(f"{label}: missing section(s) {', '.join(f'[{s}]' for s in missing)}")
    for name, value in raw.items():
        if not isinstance(value, dict):
            raise InputError(f"{label}: {name} must be a [section], not a value")
    parts = {name: _build(cls, name, raw.get(name, {}), forbidden) for name, (cls, forbidden) in sections.items()}
    parts["samplers"] = {name: parts.pop(name) for name in _sampler_sections()}
    parts["training"] = _training(raw.get("training", {}))
    parts["test_sets"] = _test_sets(raw["test_sets"], base)
    config = Config(**parts, path=label)
    config = replace(
        config,
        bootstrap=replace(config.bootstrap, dataset=_resolve(base, config.bootstrap.dataset)),
        search=replace(config.search, smiles_files=tuple(_resolve(base, p) for p in config.search.smiles_files)),
        campaign=replace(config.campaign, init=_model_spec(base, config.campaign.init)),
        oracle=replace(config.oracle, minima=_model_spec(base, config.oracle.minima, "model:")),
    )
    validate(config)
    return config


def _training(values: dict) -> TrainingSettings:
    own = [f.name for f in fields(TrainingSettings) if f.name != "train"]
    allowed = own + [f.name for f in fields(TrainSettings) if f.name not in _TRAINING_FIXED]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise InputError(f"[training]: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})")
    train = _build(TrainSettings, "training", {k: v for k, v in values.items() if k not in own}, _TRAINING_FIXED)
    base = _build(TrainingSettings, "training", {k: v for k, v in values.items() if k in own}, ("train",))
    return replace(base, train=train)


def _test_sets(values: dict, base: Path) -> tuple[TestSet, ...]:
    if not values:
        raise InputError("[test_sets]: define at least one test set, e.g. [test_sets.small] smiles = [\"CCO\"]")
    out = []
    for name, body in values.items():
        if not isinstance(body, dict):
            raise InputError(f"[test_sets.{name}] must be a table (file = ... or smiles = [...])")
        t = replace(_build(TestSet, f"test_sets.{name}", body, ("name",)), name=name)
        if bool(t.file) == bool(t.smiles):
            raise InputError(f"[test_sets.{name}]: give either file = \"labelled.h5\" or smiles = [...]")
        if t.file:
            t = replace(t, file=_resolve(base, t.file))
            if not Path(t.file).is_file():
                raise InputError(f"[test_sets.{name}]: no such file {t.file}")
        if t.sampler not in TEST_SAMPLERS:
            raise InputError(f"[test_sets.{name}] sampler must be one of {', '.join(TEST_SAMPLERS)}, got {t.sampler!r}")
        t = replace(t, model=_model_spec(base, t.model))
        out.append(t)
    return tuple(out)


#: Seeds reach numpy, torch, RDKit and OpenMM; OpenMM's (a C int) is the narrowest.
SEED_MAX = 2**31 - 1
#: Number fields that may be infinite (``inf``: no bound).
_MAY_BE_INFINITE = {("qbc", "upper_bound")}
#: (section, key) -> (lowest, highest, lowest excluded); fields not named (nor in their sampler's
#: ``ranges``): finite and >= 0.
_RANGES = {
    ("campaign", "seed"): (0, SEED_MAX, False),
    ("oracle", "max_scf_cycles"): (1, None, False),
    ("oracle", "max_steps"): (1, None, False),
    ("bootstrap", "fail_threshold"): (0, None, True),
    ("bootstrap", "max_rounds"): (1, None, False),
    ("bootstrap", "conformers"): (1, None, False), ("bootstrap", "starts"): (1, 100, False),
    ("bootstrap", "max_heavy_atoms"): (1, None, False),
    ("conformational", "dimer_boxes"): (1, None, False),
    ("qbc", "rho_hat"): (0, None, True), ("qbc", "error_bound"): (0, None, True), ("qbc", "capture"): (0, 1, True),
    ("qbc", "max_per_cycle"): (1, None, False),
    ("stop", "patience"): (1, None, False),
    ("test_sets", "conformers"): (1, None, False), ("test_sets", "temperature"): (0, 20000, True),
}


def _check_number(section: str, key: str, value, label: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value) and not (
            math.isinf(value) and value > 0 and (section, key) in _MAY_BE_INFINITE):
        raise InputError(f"{label} {key} must be a finite number, got {value}")
    low, high, open_low = _bounds(section, key)
    if (value <= low if open_low else value < low) or (high is not None and value > high):
        bounds = f"{'>' if open_low else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise InputError(f"{label} {key} must be {bounds}, got {value}")


def _bounds(section: str, key: str) -> tuple:
    """(lowest, highest, lowest excluded) of a number: its sampler's ``ranges``, :data:`_RANGES`, or >= 0."""
    sampler = _sampler_sections().get(section)
    return sampler.bounds(key) if sampler is not None else _RANGES.get((section, key), (0, None, False))


def _check_numbers(config: "Config") -> None:
    """Every number of every section finite and in range (:data:`_RANGES`; by default >= 0)."""
    for section, value in config.sections().items():
        if section in ("test_sets", "training"):
            continue
        for g in fields(value):
            item = getattr(value, g.name)
            for v in (item if isinstance(item, tuple) else (item,)):
                _check_number(section, g.name, v, f"[{section}]")
    for t in config.test_sets:
        for g in fields(t):
            _check_number("test_sets", g.name, getattr(t, g.name), f"[test_sets.{t.name}]")
    for g in fields(config.training.train):
        value = getattr(config.training.train, g.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"[training] {g.name} must be a finite number, got {value}")
    _check_number("training", "jobs", config.training.jobs, "[training]")
    try:
        config.training.train.check()
    except InputError as exc:
        raise InputError(f"[training]: {str(exc).replace('--', '').replace('-', '_')}") from None


def _check_data_file(label: str, path: str) -> None:
    """A labelled file the campaign reads holds what it claims (shapes, elements, finite labels in
    Hartree, the checks ``merge`` makes), before anything runs."""
    from ..datasets import DatasetStore, check_labels

    try:
        store = DatasetStore(path, "r")
        for group, data in store.iter_groups(("coordinates", "energies", "forces")):
            if "energies" not in data:
                raise InputError(f"{path}: group {group!r} has no field 'energies' (reference labels expected)")
            check_labels(f"{path}: group {group!r}", data)
    except InputError as exc:
        raise InputError(f"{label}: {exc}") from None


def validate(config: Config) -> None:
    """Range and consistency checks (raise InputError)."""
    c = config
    _check_numbers(c)
    for label, path in [("[bootstrap] dataset", c.bootstrap.dataset),
                        *((f"[test_sets.{t.name}] file", t.file) for t in c.test_sets)]:
        if path and Path(path).is_file():
            _check_data_file(label, path)
    oracle = c.campaign.oracle
    if oracle != "pyscf" and not oracle.startswith("model:"):
        raise InputError(f"[campaign] oracle must be 'pyscf', 'model:ani1x' or 'model:PATH', got {oracle!r}")
    if oracle.startswith("model:") and oracle != "model:ani1x" and not Path(oracle[6:]).is_dir():
        raise InputError(f"[campaign] oracle {oracle!r}: no such model directory")
    b = c.bootstrap
    if b.dataset and not Path(b.dataset).is_file():
        raise InputError(f"[bootstrap] dataset: no such file {b.dataset}")
    for key in ("start_fraction", "add_fraction", "stop_fraction"):
        if not 0.0 < getattr(b, key) <= 1.0:
            raise InputError(f"[bootstrap] {key} must be in (0, 1], got {getattr(b, key)}")
    if not b.dataset and (b.molecules < 1 and not b.smiles or b.conformers < 1 or b.max_heavy_atoms < 1):
        raise InputError("[bootstrap] molecules, conformers and max_heavy_atoms must be >= 1")
    for p in c.search.smiles_files:
        if not Path(p).is_file():
            raise InputError(f"[search] smiles_files: no such file {p}")
    if not c.search.size_stages or min(c.search.size_stages) < 1 or c.search.molecules_per_cycle < 1 or c.search.chunk < 1:
        raise InputError("[search] size_stages, molecules_per_cycle and chunk must be >= 1")
    names = registry.conformational()
    bad = sorted(set(c.conformational.samplers) - set(names))
    if bad or not c.conformational.samplers:
        raise InputError(f"[conformational] samplers must be some of {', '.join(names)}, "
                         f"got {list(c.conformational.samplers)}")
    if c.qbc.strategy not in STRATEGIES:
        raise InputError(f"[qbc] strategy must be 'qbc' or 'random', got {c.qbc.strategy!r}")
    if c.qbc.order not in ORDERS:
        raise InputError(f"[qbc] order must be one of {', '.join(ORDERS)}, got {c.qbc.order!r}")
    if c.qbc.max_per_cycle < 1 or c.qbc.upper_bound <= c.qbc.rho_hat:
        raise InputError("[qbc] max_per_cycle must be >= 1 and upper_bound above rho_hat")
    if c.qbc.measure not in MEASURES:
        raise InputError(f"[qbc] measure must be one of {', '.join(MEASURES)}, got {c.qbc.measure!r}")
    if c.qbc.measure == "forces" and math.isfinite(c.qbc.upper_bound):
        raise InputError("[qbc] upper_bound bounds rho: it does not go with measure = \"forces\"")
    t = c.training.train
    if t.members < 2:
        raise InputError("[training] members must be >= 2 (QBC needs a committee)")
    _check_model_spec("[campaign] init", c.campaign.init)
    if c.oracle.minima != "oracle":
        if not c.oracle.minima.startswith("model:"):
            raise InputError(f"[oracle] minima must be 'oracle' or 'model:ani1x' / 'model:PATH', got {c.oracle.minima!r}")
        _check_model_spec("[oracle] minima", c.oracle.minima[len("model:"):])
    if c.campaign.init == "ani1x" and t.arch not in (None, "ani1x"):
        raise InputError("[training] arch: a campaign that fine-tunes ANI-1x keeps its shapes; leave arch out")
    if not c.campaign.init and not b.dataset:
        per_member = b.conformers * (len(b.smiles) or b.molecules) * (t.folds - 1) // t.folds
        if per_member < MIN_BOOTSTRAP_TRAIN_CONFORMERS:
            raise InputError(
                f"[bootstrap] gives each member about {per_member} conformers to train on (molecules x conformers x "
                f"(folds - 1) / folds), too few for a committee trained from scratch to learn or to disagree "
                f"meaningfully (at least {MIN_BOOTSTRAP_TRAIN_CONFORMERS}); raise [bootstrap] conformers or molecules, "
                "or start from a trained ensemble with [campaign] init = \"ani1x\"")
    for ts in c.test_sets:
        if ts.sampler == "md" and ts.smiles:
            _check_model_spec(f"[test_sets.{ts.name}] model", ts.model)
    if c.stop.max_cycles < 0 or c.stop.patience < 1 or c.stop.label_budget < 0 or c.stop.wall_time_h < 0:
        raise InputError("[stop] max_cycles, label_budget and wall_time_h must be >= 0, patience >= 1")
    names = [s.name for s in c.test_sets]
    if len(set(names)) != len(names):
        raise InputError("[test_sets]: names must be unique")
    from ..sampling.search import screen_smiles

    for label, smiles in [("[bootstrap] smiles", b.smiles), *((f"[test_sets.{t.name}] smiles", t.smiles) for t in c.test_sets)]:
        for smi in smiles:
            reason = screen_smiles(smi, {1, 6, 7, 8})
            if reason:
                raise InputError(f"{label}: {smi!r}: {reason}")


def _check_model_spec(label: str, spec: str) -> None:
    if spec and spec != "ani1x" and not (Path(spec) / "model.json").is_file():
        raise InputError(f"{label} {spec!r}: use \"ani1x\" or an anif model folder (with model.json)")


def file_digests(config: Config) -> dict[str, str]:
    """SHA-256 of every input file the config names (a changed file changes what was done)."""
    paths = [config.bootstrap.dataset, *config.search.smiles_files, *(t.file for t in config.test_sets)]
    out = {}
    for p in filter(None, paths):
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[p] = h.hexdigest()
    return out


def record(config: Config) -> dict[str, Any]:
    """What a campaign stores of its config: the settings and its input files' digests."""
    return {"settings": config.as_dict(), "files": file_digests(config)}


def _flat(value, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}"))
        return out
    return {prefix: value}


def _default(key: str):
    """The JSON-able default of ``section.key`` (None when there is no plain default)."""
    section, _, name = key.partition(".")
    cls = _sections().get(section, (None,))[0]
    if cls is None or name not in {f.name for f in fields(cls)}:
        return None
    return _jsonable(asdict(cls()))[name]


def changes(previous: dict, current: dict) -> list[str]:
    """Settings (``section.key``) and files that differ, except in :data:`MUTABLE_SECTIONS`."""
    before, after = previous["settings"], current["settings"]
    keep = [s for s in sorted(set(before) | set(after)) if s not in MUTABLE_SECTIONS]
    a = {k: v for s in keep for k, v in _flat(before.get(s), s).items()}
    b = {k: v for s in keep for k, v in _flat(after.get(s), s).items()}
    out = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
           and not (k not in a and b[k] == _default(k))  # a setting newer than the campaign, at its default
           and k in b]  # a setting this version no longer has
    out += [f"file {p}" for p in sorted(set(previous["files"]) | set(current["files"]))
            if previous["files"].get(p) != current["files"].get(p)]
    return out
