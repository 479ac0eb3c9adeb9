"""Reference labels at wB97X/6-31G(d) with PySCF: single points, optimisation, normal modes.

The default :class:`Level` reproduces the ANI-1x / COMP6 reference data (Gaussian 09):

- ``xc="wb97x"`` is libxc's HYB_GGA_XC_WB97X, the 2008 Chai & Head-Gordon functional
  (not wB97X-D or wB97X-V);
- Pople basis sets (3-21G, 6-31G and their * / + variants, not 6-311G) use *Cartesian* d
  functions (6D), as Gaussian does; spherical 5D is off by ~2 kcal/mol on S66x8;
- exact Coulomb/exchange integrals (density fitting only when asked for);
- a (75, 302) atom grid per atom, Gaussian 09's default "FineGrid".

Units: energies in Hartree, coordinates in Angstrom, forces (= -gradient) in Hartree/Angstrom.

A label is a :class:`~anif.labeling.record.Label` with its provenance; the oracles
(:mod:`anif.labeling.oracles`) run this module for ``anif label`` (:mod:`anif.labeling.batch`)
and the campaign alike.

Speed without other numbers: each SCF starts from the orbitals of the nearest labelled conformer
of the same molecule (:class:`Guesses`, shared through a folder), wB97X's long-range ERIs are
held in memory and the AO values on the grid cached per geometry (:data:`FAST_SCF`); ``device``
``cuda`` runs gpu4pyscf.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from ..datasets.store import structure_keys
from ..distributed import as_completed_with_progress
from ..errors import AnifError, InputError, UnsupportedElementError
from ..structures import Structure, symbol
from .record import Label
from .settings import DEVICES, Level

#: SCF retry ladder: plain DIIS, then level shift + damping, then the second-order solver.
SCF_LADDER = ("diis", "level_shift", "newton")


class SCFConvergenceError(AnifError):
    """The SCF did not converge on any rung of the retry ladder."""


def program_version(device: str = "cpu") -> str:
    """PySCF's and libxc's versions (and gpu4pyscf's on ``cuda``), as labels record them."""
    import pyscf
    from pyscf.dft import libxc

    text = f"pyscf {pyscf.__version__} (libxc {libxc.libxc_version()})"
    if device == "cuda":
        import gpu4pyscf

        text += f" + gpu4pyscf {gpu4pyscf.__version__}"
    return text


# ---- device ----------------------------------------------------------------------------
_CUDA: list[tuple[bool, str]] = []


def cuda_available() -> tuple[bool, str]:
    """(whether gpu4pyscf can run here, why not): torch sees a CUDA device and gpu4pyscf imports.

    Asked once per process."""
    if not _CUDA:
        _CUDA.append(_probe_cuda())
    return _CUDA[0]


def _probe_cuda() -> tuple[bool, str]:
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA device here (torch.cuda.is_available() is False)"
    except ImportError:
        return False, "torch is not installed"
    try:
        import gpu4pyscf  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure (missing CUDA libraries too) means no GPU path
        return False, (f"gpu4pyscf does not import ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                       "install gpu4pyscf-cuda12x (see the README)")
    return True, ""


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda`` for a Level's device; InputError (one line) for cuda where it cannot run."""
    if device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "cpu"
    ok, why = cuda_available()
    if device == "cuda" and not ok:
        raise InputError(f"--device cuda: {why}")
    return "cuda" if ok else "cpu"


# ---- checks and molecule building ------------------------------------------------------
def check_structure(structure: Structure, level: Level) -> Structure:
    """Raise InputError/UnsupportedElementError if ``structure`` cannot be computed at ``level``."""
    from pyscf import gto
    from pyscf.lib.exceptions import BasisNotFoundError

    structure.validate().check_charge_spin()
    label = structure.name or "structure"
    for z in sorted(set(int(z) for z in structure.numbers)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gto.basis.load(level.basis, symbol(z))
        except BasisNotFoundError as exc:
            if "Unknown basis" in str(exc):
                raise InputError(f"unknown basis set {level.basis!r}") from None
            raise UnsupportedElementError(f"{label}: element {symbol(z)} has no {level.basis} basis") from None
    return structure


def check_level(level: Level) -> Level:
    """Raise InputError for an unknown functional or invalid numerical settings."""
    from pyscf.dft import libxc

    if not level.is_hf:
        try:
            libxc.parse_xc(level.method)
        except (KeyError, ValueError, NotImplementedError):
            raise InputError(f"unknown method {level.method!r} (a libxc functional name such as wb97x, or hf)") from None
    if level.max_cycle < 1:
        raise InputError(f"max SCF cycles must be >= 1, got {level.max_cycle}")
    if len(level.grid) != 2 or min(level.grid) < 1:
        raise InputError(f"grid must be two positive integers (radial, angular), got {level.grid}")
    if level.device not in DEVICES:
        raise InputError(f"device must be one of {', '.join(DEVICES)}, got {level.device!r}")
    return level


def build_molecule(structure: Structure, level: Level):
    """A PySCF Mole for ``structure`` (Angstrom input) at ``level``'s basis and convention."""
    from pyscf import gto

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gto.M(
            atom=[(symbol(z), xyz) for z, xyz in zip(structure.numbers, structure.coordinates)],
            unit="Angstrom",
            basis=level.basis,
            cart=level.use_cartesian,
            charge=int(structure.charge),
            spin=int(structure.multiplicity) - 1,
            verbose=0,
        )


def _mean_field(mol, level: Level):
    from pyscf import dft, scf

    if level.is_hf:
        mf = scf.HF(mol)
    else:
        mf = dft.KS(mol)
        mf.xc = level.method
        mf.grids.atom_grid = tuple(level.grid)
    if level.density_fit:
        mf = mf.density_fit()
    mf.conv_tol = level.conv_tol
    mf.max_cycle = level.max_cycle
    if level.device == "cuda":
        return mf.to_gpu()
    if FAST_SCF and not level.is_hf:
        _incore_long_range(mf)
        _cache_ao_values(mf)
    return mf


# ---- the same numbers, sooner ----------------------------------------------------------
#: False: PySCF's own initial guess and algorithms in every label, as before (scripts/benchmark_labeling.py's
#: "today"); the environment's ANIF_FAST_SCF=0 sets it in every process, Dask's local workers included.
FAST_SCF = os.environ.get("ANIF_FAST_SCF", "1") != "0"
#: Bytes one SCF may hold for the in-core long-range ERIs and for the AO values on the grid
#: (each). Above it PySCF's own direct algorithms run, as before.
INCORE_BYTES = 1.5e9


def _geometry(mol) -> bytes:
    """What a cached integral or AO value depends on besides the basis: the nuclear positions."""
    return np.ascontiguousarray(mol.atom_coords(), dtype=np.float64).tobytes() + mol._bas.tobytes()


class _IncoreLongRange:
    """Mixin of :func:`_incore_long_range`: erf-attenuated ERIs held per geometry (``mol``) and omega."""

    def get_jk(self, mol=None, dm=None, hermi=1, with_j=True, with_k=True, omega=None):
        if not omega or getattr(self, "with_df", None) is not None or float(self.mol.nao) ** 4 > INCORE_BYTES:
            return super().get_jk(mol, dm, hermi, with_j, with_k, omega)
        from pyscf.scf import hf

        mol = self.mol if mol is None else mol
        geometry = _geometry(mol)  # geomeTRIC moves the atoms of one Mole in place: compare coordinates
        held = self.__dict__.get("_anif_lr")
        if held is None or held[0] != geometry or held[1] != omega:
            with mol.with_range_coulomb(omega):
                held = (geometry, omega, mol.intor("int2e", aosym="s8"))
            self._anif_lr = held
        return hf.dot_eri_dm(held[2], self.make_rdm1() if dm is None else dm, hermi, with_j, with_k)


def _incore_long_range(mf) -> None:
    """Long-range (erf) exchange of a range-separated functional from in-core ERIs.

    PySCF keeps the full-range ERIs in memory when they fit but recomputes the erf-attenuated
    ones every SCF iteration (direct SCF, 0.28 s of ethanol's 0.76 s per iteration on one core).
    Here they are computed once per geometry and contracted like the full-range ones: the same
    integrals without direct SCF's 1e-13 screening (labels agree to ~1e-13 Ha). A new geometry
    (an optimisation's scanner resets ``mf.mol``) computes them anew; objects derived from
    ``mf`` (scanner, second-order solver, gradients) inherit the behaviour with the class.
    """
    omega, alpha, _ = mf._numint.rsh_and_hybrid_coeff(mf.xc, spin=mf.mol.spin)
    if omega and alpha != 0 and not isinstance(mf, _IncoreLongRange):
        mf.__class__ = type(mf.__class__.__name__, (_IncoreLongRange, mf.__class__), {})


def _cache_ao_values(mf) -> None:
    """AO values (and first derivatives) on the DFT grid computed once per geometry, not every iteration.

    PySCF evaluates them anew in every SCF iteration (about half of the XC time); the cached
    blocks are the same numbers. All or nothing: a grid whose AO values exceed
    :data:`INCORE_BYTES` is evaluated as before. Second derivatives (the gradient's, used once)
    are never cached.
    """
    ni = mf._numint
    base, held = ni.block_loop, {}

    def block_loop(mol, grids, nao=None, deriv=0, max_memory=2000, non0tab=None, blksize=None, buf=None):
        if grids.coords is None:
            grids.build(with_non0tab=True)
        entry = held.get(deriv)
        geometry = _geometry(mol)
        if entry is not None and entry[0] == geometry and entry[1] is grids.coords and entry[2] is non0tab:
            yield from entry[3]
            return
        blocks, size = ([] if deriv <= 1 else None), 0
        for ao, mask, weight, coords in base(mol, grids, nao, deriv, max_memory, non0tab, blksize, buf):
            if blocks is not None:
                size += ao.nbytes
                if size <= INCORE_BYTES:
                    blocks.append((ao.copy(order="K"), mask, weight, coords))
                else:
                    blocks = None
            yield ao, mask, weight, coords
        if blocks is not None:
            held[deriv] = (geometry, grids.coords, non0tab, blocks)

    ni.block_loop = block_loop


class _IterationCounter:
    """SCF callback counting iterations (DIIS ``cycle`` or second-order ``imacro``)."""

    def __init__(self):
        self.iterations = 0

    def __call__(self, env: dict) -> None:
        self.iterations = max(self.iterations, int(env.get("cycle", env.get("imacro", -1))) + 1)


def run_scf(mol, level: Level, dm0=None):
    """A converged mean-field object, trying the rungs of :data:`SCF_LADDER` in turn.

    ``dm0``: an initial density (e.g. :meth:`Guesses.initial_density`); the first rung starts
    from it, and if that rung does not converge from it, again from PySCF's own guess before
    the ladder goes on. Each later rung starts from the previous rung's density. Returns
    ``(mf, rung, iterations)``; raises :class:`SCFConvergenceError` naming what each rung did.
    """
    dm, iterations, attempts = None, 0, []
    rungs = [(SCF_LADDER[0], dm0)] if dm0 is not None else []
    rungs += [(rung, None) for rung in SCF_LADDER]
    for n, (rung, guess) in enumerate(rungs):
        mf = _mean_field(mol, level)
        if rung == "level_shift":
            mf.level_shift, mf.damp, mf.diis_start_cycle = 0.5, 0.5, 3
        elif rung == "newton":
            mf = mf.newton()  # max_cycle now counts macro iterations
        counter = _IterationCounter()
        mf.callback = counter
        try:
            mf.kernel(dm0=guess if guess is not None else dm)
        except (np.linalg.LinAlgError, ValueError, RuntimeError) as exc:
            attempts.append(f"{rung}: {type(exc).__name__}: {exc}")
            continue
        finally:
            iterations += counter.iterations
        if mf.converged:
            return mf, rung, iterations
        if guess is not None:  # the nearby conformer's density did not help: start afresh
            attempts.append(f"{rung} from a neighbour's density: not converged in {level.max_cycle} cycles")
            continue
        attempts.append(f"{rung}: not converged in {level.max_cycle} cycles")
        dm = mf.make_rdm1()
    raise SCFConvergenceError("SCF failed: " + "; ".join(attempts))


# ---- initial guesses from labelled neighbours ------------------------------------------
#: A labelled conformer further than this (RMSD, Angstrom, same atom order, no alignment) is
#: not used as a guess. DNMS conformers of one molecule lie within ~0.05-0.3 A of each other.
GUESS_MAX_RMSD = 0.5


def molecule_id(structure: Structure, level: Level) -> str:
    """What two structures must share for one's orbitals to start the other's SCF: atoms in
    order, charge, multiplicity, basis and its convention."""
    h = hashlib.sha1(np.ascontiguousarray(structure.numbers, dtype=np.int64).tobytes())
    h.update(f"{int(structure.charge)},{int(structure.multiplicity)},{level.basis.lower()},{level.basis_convention}".encode())
    return h.hexdigest()[:16]


class Guesses:
    """Converged orbitals of labelled structures, to start the SCF of a nearby conformer.

    Kept in this process and, with ``folder``, on disk so that every worker (and a resumed
    run) shares them: ``FOLDER/<molecule id>/<structure key>.npz`` holding ``coordinates``
    (Angstrom), ``mo_coeff`` and ``mo_occ`` (float64, as PySCF returns them), each written
    atomically. The guess for a structure is the density of the nearest stored conformer
    (RMSD on the same atom order, at most :data:`GUESS_MAX_RMSD`), its occupied orbitals
    re-orthonormalised in the new geometry's overlap (the AO basis moves with the atoms).
    A guess only changes the SCF's path: the converged result is that of a fresh start
    (tests/test_labeling.py checks 1e-6 Ha and 1e-5 Ha/A).
    """

    MEMORY_KEEP = 64

    def __init__(self, folder: Optional[str | Path] = None, max_rmsd: float = GUESS_MAX_RMSD):
        self.folder = Path(folder) if folder else None
        self.max_rmsd = max_rmsd
        self.held: dict[str, dict[str, tuple]] = {}  # molecule id -> key -> (coordinates, mo_coeff | path, mo_occ)

    def _refresh(self, mid: str) -> dict:
        held = self.held.setdefault(mid, {})
        if self.folder is not None and (self.folder / mid).is_dir():
            for path in (self.folder / mid).glob("*.npz"):
                if path.stem not in held:
                    try:
                        with np.load(path) as data:
                            held[path.stem] = (data["coordinates"], path, None)
                    except (OSError, ValueError, KeyError):  # being written by another worker: next time
                        continue
        return held

    def nearest(self, structure: Structure, level: Level) -> Optional[tuple[float, np.ndarray, np.ndarray]]:
        """(RMSD, mo_coeff, mo_occ) of the nearest stored conformer within the cut-off, or None."""
        held = self._refresh(molecule_id(structure, level))
        best, best_key = self.max_rmsd, None
        for key, (coords, _, _) in held.items():
            if coords.shape != structure.coordinates.shape:
                continue
            rmsd = float(np.sqrt(np.mean(np.sum((coords - structure.coordinates) ** 2, axis=1))))
            if rmsd <= best:
                best, best_key = rmsd, key
        if best_key is None:
            return None
        coords, mo_coeff, mo_occ = held[best_key]
        if isinstance(mo_coeff, Path):
            try:
                with np.load(mo_coeff) as data:
                    mo_coeff, mo_occ = data["mo_coeff"], data["mo_occ"]
            except (OSError, ValueError, KeyError):
                return None
        return best, mo_coeff, mo_occ

    def put(self, structure: Structure, level: Level, key: str, mo_coeff, mo_occ) -> None:
        mid = molecule_id(structure, level)
        mo_coeff = np.asarray(mo_coeff, dtype=np.float64)
        mo_occ = np.asarray(mo_occ, dtype=np.float64)
        coords = np.array(structure.coordinates, dtype=np.float64)
        held = self.held.setdefault(mid, {})
        if self.folder is None:  # this process only: the latest MEMORY_KEEP conformers of each molecule
            held[key] = (coords, mo_coeff, mo_occ)
            while len(held) > self.MEMORY_KEEP:
                del held[next(iter(held))]
            return
        folder = self.folder / mid
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, coordinates=coords, mo_coeff=mo_coeff, mo_occ=mo_occ)
            os.replace(tmp, folder / f"{key}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        held[key] = (coords, folder / f"{key}.npz", None)  # orbitals read back when needed

    def initial_density(self, structure: Structure, level: Level, mol) -> tuple[Optional[np.ndarray], str]:
        """(density to start ``mol``'s SCF from, or None; what it is: ``minao`` or ``neighbour:RMSD``)."""
        found = self.nearest(structure, level)
        if found is None:
            return None, "minao"
        rmsd, mo_coeff, mo_occ = found
        s = mol.intor_symmetric("int1e_ovlp")
        if mo_coeff.shape[-2] != s.shape[0]:
            return None, "minao"

        def density(c, occ):
            c = c[:, occ > 0]
            w, v = np.linalg.eigh(c.T @ s @ c)
            if w.min() < 1e-8:
                raise np.linalg.LinAlgError("neighbour's orbitals are linearly dependent here")
            c = c @ (v / np.sqrt(w)) @ v.T  # Loewdin: orthonormal in the new overlap
            return (c * occ[occ > 0]) @ c.T

        try:
            if mo_coeff.ndim == 3:  # unrestricted: (alpha, beta)
                dm = np.array([density(mo_coeff[k], mo_occ[k]) for k in range(2)])
            else:
                dm = density(mo_coeff, mo_occ)
        except np.linalg.LinAlgError:
            return None, "minao"
        return dm, f"neighbour:{rmsd:.3f}"


_GUESSES: dict[Optional[str], Guesses] = {}


def guesses_for(folder: Optional[str | Path]) -> Guesses:
    """This process's :class:`Guesses` for ``folder`` (None: in memory only), kept between labels."""
    key = None if folder is None else str(Path(folder).resolve())
    if key not in _GUESSES:
        _GUESSES[key] = Guesses(folder)
    return _GUESSES[key]


# ---- single points ---------------------------------------------------------------------
def structure_key(structure: Structure) -> str:
    """Identity of a structure: elements, coordinates to 1e-6 A, charge, multiplicity."""
    return structure_keys(structure.numbers, structure.coordinates, structure.charge, structure.multiplicity)[0]


def identity(structure: Structure) -> dict:
    """The columns of a label that name its structure and the worker that computed it."""
    return dict(key=structure_key(structure), name=structure.name or "", charge=int(structure.charge),
                multiplicity=int(structure.multiplicity), host=f"{socket.gethostname()}:{os.getpid()}")


def provenance(level: Level) -> dict:
    """What every label at ``level`` records of it (:class:`~anif.labeling.record.Label`): the level's
    columns and the program (PySCF, libxc and, on a CUDA device, gpu4pyscf versions)."""
    return {**level.columns(), "program": program_version(resolve_device(level.device))}


def label_structure(structure: Structure, level: Level = Level(), threads: Optional[int] = None,
                    guesses: Optional[str | Path] | bool = None) -> Label:
    """Energy (Ha) and forces (Ha/A) of one structure, or a failed :class:`Label`; never raises on SCF trouble.

    ``threads``: PySCF/OpenMP threads for this call (None leaves PySCF's default, i.e.
    OMP_NUM_THREADS). ``guesses``: a folder of converged orbitals shared by the workers
    (:class:`Guesses`), True for this process's memory only, None/False for PySCF's own initial
    guess (a from-scratch run; also whenever :data:`FAST_SCF` is off). ``level.device`` ``auto`` is
    resolved here (``cuda`` when gpu4pyscf can run).
    """
    from pyscf import lib

    if threads:
        lib.num_threads(int(threads))
    start = time.perf_counter()
    record = {**identity(structure), **level.columns()}
    key = record["key"]
    try:
        device = resolve_device(level.device)
    except InputError as exc:
        return Label(ok=False, reason=str(exc), wall_time_s=time.perf_counter() - start, **record)
    if device != level.device:
        level = replace(level, device=device)
    record.update(program=program_version(device), device=device)
    fresh = guesses is None or guesses is False or not FAST_SCF
    store = None if fresh else guesses_for(None if guesses is True else guesses)
    try:
        mol = build_molecule(structure, level)
        dm0, guess = store.initial_density(structure, level, mol) if store is not None else (None, "minao")
        mf, rung, iterations = run_scf(mol, level, dm0)
        gradient = mf.nuc_grad_method().kernel()  # Ha/Bohr
        if hasattr(gradient, "get"):  # a CuPy array (gpu4pyscf)
            gradient = gradient.get()
    except (SCFConvergenceError, np.linalg.LinAlgError, ValueError, RuntimeError) as exc:
        reason = str(exc) if isinstance(exc, SCFConvergenceError) else f"{type(exc).__name__}: {exc}"
        return Label(ok=False, reason=reason, scf_converged=0, wall_time_s=time.perf_counter() - start, **record)
    if store is not None:
        mo_coeff, mo_occ = mf.mo_coeff, mf.mo_occ
        if hasattr(mo_coeff, "get"):
            mo_coeff, mo_occ = mo_coeff.get(), mo_occ.get()
        try:
            store.put(structure, level, key, mo_coeff, mo_occ)
        except OSError:  # a full or read-only disk costs the next conformer its head start, not this label
            pass
    return Label(ok=True, energy=float(mf.e_tot), forces=-np.asarray(gradient) / lib.param.BOHR,  # Ha/Bohr -> Ha/A
                 scf_converged=1, scf_strategy=rung, scf_iterations=int(iterations), scf_guess=guess,
                 wall_time_s=time.perf_counter() - start, **record)


# ---- optimisation and normal modes -----------------------------------------------------
@dataclass
class Optimized:
    structure: Structure
    energy: float  # Hartree
    converged: bool
    steps: int


_GEOMETRIC_LOG_INI = """[loggers]
keys=root
[handlers]
keys=null
[formatters]
keys=plain
[logger_root]
level=WARNING
handlers=null
[handler_null]
class=NullHandler
args=()
[formatter_plain]
format=%(message)s
"""


@contextmanager
def _geometric_log():
    """A geomeTRIC logging config that keeps it quiet; the root logger it rewrites is restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.ini"
        path.write_text(_GEOMETRIC_LOG_INI)
        try:
            yield str(path)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)


#: geomeTRIC settings of the oracle's optimisations (Hessian-free: its model Hessian, no computed one);
#: ``optimize(..., optimizer={})`` runs geomeTRIC's defaults. See the README's gradient counts.
OPTIMIZER: dict = {}


def optimize(structure: Structure, level: Level = Level(), convergence: str = "GAU_TIGHT", max_steps: int = 200,
             threads: Optional[int] = None, optimizer: Optional[dict] = None) -> Optimized:
    """Minimise ``structure`` at ``level`` with geomeTRIC (default: Gaussian's 'tight' criteria).

    ``optimizer``: geomeTRIC parameters (None: :data:`OPTIMIZER`). ``steps`` counts the gradients.
    Each step's SCF starts from the previous step's density (PySCF's scanner does that) and the
    fast SCF's caches follow the geometry; the minimum's energy is the last step's, which is
    computed at the returned geometry, so no further SCF runs.
    """
    from pyscf import lib
    from pyscf.geomopt import geometric_solver

    check_structure(structure, check_level(level))
    level = replace(level, device=resolve_device(level.device))
    if threads:
        lib.num_threads(int(threads))
    mf, _, _ = run_scf(build_molecule(structure, level), level)
    steps, last = [0], {}

    def count(env):
        steps[0] += 1
        last.update(energy=float(env["energy"]), coordinates=np.array(env["mol"].atom_coords()))

    with _geometric_log() as log_ini:
        converged, mol = geometric_solver.kernel(mf, maxsteps=max_steps, convergence_set=convergence,
                                                 assert_convergence=False, callback=count, logIni=log_ini,
                                                 **(OPTIMIZER if optimizer is None else optimizer))
    result = Structure(structure.numbers, mol.atom_coords(unit="Angstrom"), name=structure.name,
                       charge=structure.charge, multiplicity=structure.multiplicity, bonds=structure.bonds)
    if last and np.array_equal(last["coordinates"], mol.atom_coords()):
        energy = last["energy"]
    else:  # geomeTRIC returned a geometry it did not compute
        energy = float(run_scf(build_molecule(result, level), level)[0].e_tot)
    return Optimized(result, energy, bool(converged), steps[0])


def hessian(structure: Structure, level: Level = Level(), finite_difference: bool = False, step: float = 5e-3,
            client=None, threads: Optional[int] = None) -> np.ndarray:
    """Cartesian Hessian (3N, 3N) in Ha/A^2: analytic, or central differences of analytic gradients.

    With ``finite_difference`` the 6N displaced gradients (``step`` A) run on ``client``'s
    Dask pool when one is given.
    """
    from pyscf import lib

    check_structure(structure, check_level(level))
    level = replace(level, device=resolve_device(level.device))
    if threads:
        lib.num_threads(int(threads))
    n = structure.n_atoms
    if not finite_difference:
        mf, _, _ = run_scf(build_molecule(structure, level), level)
        h = mf.Hessian().kernel()  # (N, N, 3, 3) Ha/Bohr^2
        return h.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) / lib.param.BOHR**2
    displaced = []
    for sign in (1.0, -1.0):
        for k in range(3 * n):
            coords = structure.coordinates.copy().reshape(-1)
            coords[k] += sign * step
            displaced.append(Structure(structure.numbers, coords.reshape(n, 3), name=f"{structure.name}:d{k}",
                                       charge=structure.charge, multiplicity=structure.multiplicity))
    if client is None:
        results = [label_structure(s, level) for s in displaced]
    else:
        results = [None] * len(displaced)
        for i, r in as_completed_with_progress(client, label_structure, displaced, "hessian", level=level,
                                               threads=threads):
            results[i] = r
    bad = [r for r in results if isinstance(r, BaseException) or not r.ok]
    if bad:
        raise SCFConvergenceError(f"finite-difference Hessian: {len(bad)} displaced gradients failed")
    gradients = -np.array([r.forces.reshape(-1) for r in results])
    h = (gradients[: 3 * n] - gradients[3 * n:]) / (2 * step)
    return 0.5 * (h + h.T)
