"""``anif sample dnms|rts|md|dimers|search``: run a sampler, write its candidates to an HDF5 store.

One command per sampler of :mod:`anif.sampling.registry`, made from its registration (its
settings' flags, bounds and defaults, its help); the configurational search, whose work items are
chunks of source molecules, has its own below.

Candidates go to ``--out``, a candidate store (:class:`anif.datasets.DatasetStore`, kind
"candidates"), as each molecule (box, chunk) finishes, with ``rho_kcal_mol``, ``sampler``,
``source``, ``seed`` and a JSON ``provenance`` per conformer. ``energies`` hold the ensemble
mean energy (Hartree), a placeholder until the labeller computes reference labels. ``--out`` is
checked first (writable, not a label store); structures it already holds are not added again;
a run that finds nothing still leaves a valid (empty) store.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from ..accuracy.settings import RHO_HAT
from ..errors import AnifError, InputError
from ..sampling.registry import Flag, Sampler, samplers
from .common import check_not_input, finite, load_model, non_negative, seed_option

sample_app = typer.Typer(help="Samplers (DNMS, RTS, MD, dimers, configurational search) writing QBC candidates.",
                         no_args_is_help=True)

_MODEL = typer.Option("ani1x", "--model", help="'ani1x' or an anif model directory")
_RHO = typer.Option(RHO_HAT, "--rho-hat", callback=non_negative, help="QBC threshold rho_hat (kcal/mol)")
_SEED = seed_option(0, "master seed (per-molecule seeds derive from it)")
_OUT = typer.Option(..., "--out", help="output HDF5 (appended to)")
_WORKERS = typer.Option(None, "--workers", min=0, help="Dask worker processes (default: one per core; 0: no Dask)")
_SCHEDULER = typer.Option(None, "--scheduler", help="address of a running Dask scheduler")
_SMILES = typer.Option(None, "--smiles", help="molecule as SMILES (repeatable)")
_INPUT = typer.Option(None, "--input", help="SMILES (.smi), XYZ, SDF, PDB or ANI-format HDF5 (.h5) file")


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _molecule_list(inputs: list[str]) -> tuple[list[tuple[str, str]], list]:
    """Inputs (files or SMILES) -> ((smiles, name) pairs, ready structures).

    An ANI-format HDF5 file (e.g. a search's output or an AL campaign's ``sampling_set.h5``)
    gives every conformer it holds as a ready structure."""
    from ..labeling.batch import read_input
    from ..structures import read_structures
    from ..sampling.search import read_smiles_file

    molecules, structures = [], []
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() in (".smi", ".smiles", ".txt"):
            molecules += read_smiles_file(path)
        elif path.suffix.lower() in (".xyz", ".sdf", ".mol", ".pdb"):
            structures += read_structures(path)
        elif path.suffix.lower() in (".h5", ".hdf5"):
            structures += [s for s, _ in read_input(path)]
        else:
            molecules.append((item, item))
    return molecules, structures


def _load(model, inputs: list[str], seed: int) -> list:
    """Embed / read the inputs, skipping (with the reason) what the model cannot sample."""
    from ..errors import AnifError
    from ..models.ensemble import supported_numbers
    from ..plausibility import require_angstrom
    from ..sampling.search import embed

    molecules, ready = _molecule_list(inputs)
    supported = supported_numbers(model)
    embedded, skipped = embed(molecules, supported, seed)
    structures = [s for s, _ in embedded]
    for note in dict.fromkeys(n for s in ready for n in s.notes):
        _say(f"note: {note}")
    for s in ready:
        try:
            structures.append(require_angstrom(s.validate(supported)).require_neutral_closed_shell())
        except AnifError as exc:
            skipped.append((s.name, str(exc)))
    for name, reason in skipped:
        _say(f"skipped {name}: {reason}")
    if not structures:
        raise InputError("no usable molecule in the input")
    return structures


def _single_inputs(smiles: Optional[list[str]], input: Optional[Path]) -> list[str]:
    if bool(smiles) == (input is not None):
        raise InputError("give --smiles (one or more) or --input FILE, not both")
    return list(smiles) if smiles else [str(input)]


def _all_inputs(inputs: Optional[list[str]], smiles: Optional[list[str]], input: Optional[Path]) -> list[str]:
    """Positional INPUTS, then --smiles, then --input (dimers and search take any mix)."""
    return list(inputs or []) + list(smiles or []) + ([str(input)] if input is not None else [])


def _check_out(out: Path, inputs=()) -> None:
    """Refuse an unwritable --out, an --out that is one of the inputs, or a label store before any work."""
    from ..datasets.store import open_output

    check_not_input([out], [Path(i) for i in inputs if Path(i).exists()])
    open_output(out, kind="candidates")


def _run(sampler: str, model: str, payloads, rho_hat: float, seed: int, settings, out: Path,
         workers: Optional[int], scheduler: Optional[str]) -> None:
    from ..datasets.store import DatasetStore
    from ..sampling.candidates import write_candidates
    from ..sampling.parallel import run_sampler

    found = written = scored = 0
    skipped: list[str] = []
    failures: list[str] = []
    for _, result in run_sampler(sampler, model, payloads, rho_hat, seed, settings, workers, scheduler):
        if isinstance(result, Exception):
            failures.append(str(result) if isinstance(result, AnifError) else f"{type(result).__name__}: {result}")
            continue
        if sampler == "search":
            for name, reason in result.skipped:
                _say(f"skipped {name}: {reason}")
                skipped.append(f"{name}: {reason}")
            scored += len(result.scored)
            result = result.candidates
        if result:
            found += len(result)
            written += write_candidates(out, result)
    for reason in failures:
        _say(f"warning: a {sampler} run failed: {reason}")
    if failures and len(failures) == len(payloads):
        raise AnifError(f"every {sampler} run failed ({failures[0]}); {out} was left as it was")
    if sampler == "search" and not scored and skipped:
        raise InputError(f"no usable molecule in the input ({len(skipped)} skipped, e.g. {skipped[0]})")
    if not found:
        write_candidates(out, [])  # an empty store, so that the next step reads "no structures"
        held = DatasetStore(out, "r").num_conformers()
        _say(f"no candidate with rho > {rho_hat} kcal/mol found; {out} holds {held} candidate(s)")
        return
    repeated = f" ({found - written} found again, already there)" if found > written else ""
    _say(f"{written} candidate(s) with rho > {rho_hat} kcal/mol written to {out}{repeated}")


def _bounded(bounds: tuple):
    """The typer callback of a float setting within its sampler's (lowest, highest, lowest excluded)."""
    low, high, open_low = bounds

    def check(value):
        finite(value)
        if (value <= low if open_low else value < low) or (high is not None and value > high):
            limits = f"{'>' if open_low else '>='} {low:g}" + (f" and at most {high:g}" if high is not None else "")
            raise typer.BadParameter(f"must be {limits} (got {value})")
        return value

    return check


def _option(sampler: Sampler, flag: Flag) -> inspect.Parameter:
    """The command parameter of one of the sampler's settings: its default, flag, help and bounds."""
    default = getattr(sampler.settings(), flag.field)
    low, high, open_low = sampler.bounds(flag.field)
    if isinstance(default, int):
        option = typer.Option(default, flag.flag, min=low + open_low, max=high, help=flag.help)
    elif isinstance(default, float):
        option = typer.Option(default, flag.flag, callback=_bounded((low, high, open_low)), help=flag.help)
    else:
        option = typer.Option(default, flag.flag, help=flag.help)
    return _parameter(flag.field, type(default), option)


def _parameter(name: str, annotation, option) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def _sample(sampler: Sampler, inputs: Optional[list[str]] = None, smiles: Optional[list[str]] = None,
            input: Optional[Path] = None, model: str = "ani1x", rho_hat: float = RHO_HAT, seed: int = 0,
            out: Path = Path(), boxes: int = 1, workers: Optional[int] = None, scheduler: Optional[str] = None,
            **options) -> None:
    """The body of ``anif sample NAME``: read and check the inputs, run the sampler, write its candidates."""
    for flag in sampler.flags:
        if flag.choices and options[flag.field] not in flag.choices:
            raise InputError(f"{flag.flag} must be {' or '.join(map(repr, flag.choices))}, got {options[flag.field]!r}")
    if sampler.needs == "box":
        inputs = _all_inputs(inputs, smiles, input)
        if not inputs:
            raise InputError("no conformers: give SMILES strings or files, --smiles or --input")
        _check_out(out, inputs)
    else:
        _check_out(out, [input] if input is not None else [])
        inputs = _single_inputs(smiles, input)
    structures = _load(load_model(model), inputs, seed)
    payloads = [structures] * boxes if sampler.needs == "box" else structures
    _run(sampler.name, model, payloads, rho_hat, seed, replace(sampler.settings(), **options), out, workers, scheduler)


def _add_command(sampler: Sampler) -> None:
    """``anif sample NAME`` from the sampler's registration: the structures (positional too for a
    box sampler), --model, --rho-hat, --seed, --out, one option per flag, --workers, --scheduler."""
    box = sampler.needs == "box"
    params = [_parameter("inputs", Optional[list[str]], typer.Argument(None, help=(
        "conformer set: SMILES strings and/or .smi/.xyz/.sdf/.pdb/.h5 files (or --smiles/--input)")))] if box else []
    params += [_parameter("smiles", Optional[list[str]], _SMILES), _parameter("input", Optional[Path], _INPUT),
               _parameter("model", str, _MODEL), _parameter("rho_hat", float, _RHO), _parameter("seed", int, _SEED),
               _parameter("out", Path, _OUT)]
    if box:
        params.append(_parameter("boxes", int, typer.Option(1, "--boxes", min=1,
                                                             help="independent boxes (run in parallel)")))
    params += [_option(sampler, flag) for flag in sampler.flags]
    params += [_parameter("workers", Optional[int], _WORKERS), _parameter("scheduler", Optional[str], _SCHEDULER)]

    def command(**values) -> None:
        _sample(sampler, **values)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = sampler.description
    sample_app.command(sampler.name)(command)


for _sampler in samplers().values():
    if _sampler.needs != "chunk":  # the configurational search reads sources: its command follows
        _add_command(_sampler)


@sample_app.command("search")
def search_command(
    inputs: Optional[list[str]] = typer.Argument(None, help="SMILES strings and/or .smi/.xyz/.sdf/.pdb/.h5 files (or --smiles/--input)"),
    smiles: Optional[list[str]] = _SMILES, input: Optional[Path] = _INPUT,
    model: str = _MODEL, rho_hat: float = _RHO, seed: int = _SEED, out: Path = _OUT,
    gdb11: int = typer.Option(0, "--gdb11", min=0, help="molecules drawn from the shipped GDB-11-like set"),
    dipeptides: int = typer.Option(0, "--dipeptides", min=0, help="dipeptides drawn from all amino-acid pairs"),
    random_dimers: int = typer.Option(0, "--random-dimers", min=0,
                                      help="random dimers of the other sources' molecules"),
    chunk: int = typer.Option(32, "--chunk", min=1, help="molecules per parallel task"),
    workers: Optional[int] = _WORKERS, scheduler: Optional[str] = _SCHEDULER,
):
    """Configurational search: embed (RDKit + UFF), score rho in batches, keep rho > rho_hat."""
    import numpy as np

    from ..models.ensemble import supported_numbers
    from ..sampling import search

    inputs = _all_inputs(inputs, smiles, input)
    _check_out(out, inputs)
    sources: list[tuple[str, list, list]] = []
    if inputs:
        molecules, structures = _molecule_list(inputs)
        sources.append(("input", molecules, structures))
    if gdb11:
        sources.append(("gdb11", search.gdb11_like(gdb11, seed), []))
    if dipeptides:
        pairs = search.dipeptides()
        pick = np.random.default_rng(seed).choice(len(pairs), size=min(dipeptides, len(pairs)), replace=False)
        sources.append(("dipeptides", [pairs[i] for i in sorted(pick)], []))
    if random_dimers:
        pool = [m for _, mols, _ in sources for m in mols][:64] or search.gdb11_like(64, seed)
        monomers = [s for s, _ in search.embed(pool, supported_numbers(load_model(model)), seed)[0]]
        dimers = search.random_dimers(monomers, random_dimers, seed)
        sources.append((search.RANDOM_DIMERS, [], dimers))
    if not sources:
        raise InputError("nothing to search: give SMILES/files or --gdb11/--dipeptides/--random-dimers")
    payloads = [
        (name, mols[k : k + chunk], structs[k : k + chunk])
        for name, mols, structs in sources
        for k in range(0, max(len(mols), len(structs)), chunk)
    ]
    _run("search", model, payloads, rho_hat, seed, None, out, workers, scheduler)
