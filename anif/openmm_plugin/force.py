"""ANI ensembles as OpenMM forces that also report the ensemble's disagreement.

The default is an openmm-torch ``TorchForce`` running a TorchScript module that returns
``E_mean + p * sigma`` (kJ/mol) with a global parameter ``p`` = 0 (:data:`SIGMA_PARAMETER`).
Its energy-parameter derivative dE/dp is sigma at the current step, so
``State.getEnergyParameterDerivatives()[SIGMA_PARAMETER]`` carries the disagreement at no
extra cost. When openmmtorch cannot load, an ``openmm.PythonForce`` computes the same
energy and forces and publishes sigma through a process-wide table (see :func:`sigma_from_state`).

Everything :func:`read_qbc` and the reporters need lives in the System itself, so it survives
``System.getForce(i)`` (a new Python proxy), ``copy.deepcopy``, an ``XmlSerializer`` round trip,
openmmml's ``createMixedSystem`` and checkpoints: the ensemble's atom count is the default value
of the global parameter :data:`ATOMS_PARAMETER`, and :func:`find_ensemble_force` recognises an
ensemble force by its global parameters.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from typing import Optional, Sequence

import numpy as np
import openmm
import torch
from torch import Tensor

from ..errors import AnifError
from ..models.ensemble import check_supported, member_spread
from ..units import HARTREE_TO_KJ_MOL, KJ_MOL_TO_KCAL_MOL, NM_TO_ANGSTROM

#: Global parameter whose energy derivative is sigma (kJ/mol).
SIGMA_PARAMETER = "anif_sigma"
#: Global parameter whose default value is the number of atoms the ensemble acts on (rho = sigma / sqrt(N)).
ATOMS_PARAMETER = "anif_n_atoms"
#: Global parameter naming the PythonForce fallback's entry in the sigma table.
_PYTHON_ID_PARAMETER = "anif_python_id"


class _EnsembleEnergy(torch.nn.Module):
    """OpenMM-facing ensemble: positions in nm -> E_mean + p * sigma in kJ/mol."""

    def __init__(self, model: torch.nn.Module, numbers: Sequence[int], atoms: Optional[Sequence[int]]):
        super().__init__()
        self.model = model
        self.register_buffer("species", torch.tensor([list(numbers)], dtype=torch.long))
        self.register_buffer("atoms", torch.tensor(list(atoms) if atoms is not None else [], dtype=torch.long))
        self.subset = atoms is not None
        self.register_buffer("pbc", torch.ones(3, dtype=torch.bool))
        self.hartree_to_kj = HARTREE_TO_KJ_MOL
        self.angstrom_per_nm = NM_TO_ANGSTROM
        # follows .to()/.double() of the module, so the model's precision is used
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=next(model.parameters()).dtype))

    def energy(self, positions: Tensor, box: Optional[Tensor], scale: Tensor) -> Tensor:
        dtype = self.dtype_probe.dtype
        if self.subset:
            positions = positions.index_select(0, self.atoms)
        coords = (positions * self.angstrom_per_nm).to(dtype)
        cell: Optional[Tensor] = None
        pbc: Optional[Tensor] = None
        if box is not None:
            cell = (box * self.angstrom_per_nm).to(dtype)
            pbc = self.pbc
        if hasattr(self.model, "interaction_energies"):  # decided when scripted: self energies added in float64
            members = self.model.interaction_energies(self.species, coords.unsqueeze(0), cell, pbc)[:, 0]
            offset = self.model.self_energy(self.species)[0]
        else:
            members = self.model(self.species, coords.unsqueeze(0), cell, pbc)[:, 0]
            offset = torch.zeros((), dtype=torch.float64, device=members.device)
        sigma = member_spread(members.unsqueeze(1))[0]
        return ((members.mean() + scale.to(dtype) * sigma).to(torch.float64) + offset) * self.hartree_to_kj


class _MoleculeModule(_EnsembleEnergy):
    def forward(self, positions: Tensor, anif_sigma: Tensor, anif_n_atoms: Tensor) -> Tensor:
        return self.energy(positions, None, anif_sigma)


class _PeriodicModule(_EnsembleEnergy):
    def forward(self, positions: Tensor, boxvectors: Tensor, anif_sigma: Tensor, anif_n_atoms: Tensor) -> Tensor:
        return self.energy(positions, boxvectors, anif_sigma)


#: sigma (kJ/mol) of the last evaluation of each PythonForce fallback in this process, by id.
_PYTHON_SIGMA: dict[int, float] = {}
_python_ids = itertools.count(1)


class PythonEnsembleComputation:
    """The PythonForce callable: energy and forces from the ensemble; publishes sigma by id.

    OpenMM pickles the callable, so copies of the force (deepcopy, XML, openmmml) hold copies of
    it; they share the id and so the entry in the table that :func:`sigma_from_state` reads.
    """

    def __init__(self, module: _EnsembleEnergy, periodic: bool, force_id: int):
        self.module = module
        self.periodic = periodic
        self.force_id = force_id

    def __call__(self, state: openmm.State):
        device = self.module.dtype_probe.device
        positions = torch.tensor(state.getPositions(asNumpy=True)._value, dtype=torch.float64, device=device,
                                 requires_grad=True)
        box = None
        if self.periodic:
            box = torch.tensor(state.getPeriodicBoxVectors(asNumpy=True)._value, dtype=torch.float64, device=device)
        scale = torch.zeros((), dtype=torch.float64, device=device, requires_grad=True)  # dE/dscale = sigma
        energy = self.module.energy(positions, box, scale)
        grad_x, grad_s = torch.autograd.grad(energy, (positions, scale))
        _PYTHON_SIGMA[self.force_id] = grad_s.item()
        return energy.item(), -grad_x.cpu().numpy()


def _load_torch_kernels() -> None:
    """Load openmm-torch's CPU/Reference kernels if openmm was imported before torch.

    OpenMM loads its plugins on import; openmm-torch's kernel library then fails for want of
    the CUDA runtime libraries that ``import torch`` brings in. Loading it again now works.
    """
    global _KERNELS_CHECKED
    if _KERNELS_CHECKED:
        return
    _KERNELS_CHECKED = True
    import os

    from openmm.version import openmm_library_path

    for failure in openmm.Platform.getPluginLoadFailures():
        if "libOpenMMTorchReference" in failure:
            openmm.Platform.loadPluginLibrary(os.path.join(openmm_library_path, "plugins", "libOpenMMTorchReference.so"))


_KERNELS_CHECKED = False


def _openmmtorch():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # openmmtorch imports the deprecated simtk.openmm, which logs a warning
    try:
        import openmmtorch

        _load_torch_kernels()
        return openmmtorch
    except Exception as exc:  # ImportError, or missing CUDA stub libraries
        warnings.warn(f"openmmtorch unavailable ({exc}); falling back to openmm.PythonForce")
        return None
    finally:
        root.setLevel(level)


def create_force(
    model: torch.nn.Module,
    numbers: Sequence[int],
    atoms: Optional[Sequence[int]] = None,
    periodic: bool = False,
    backend: str = "torch",
) -> openmm.Force:
    """An OpenMM force for ``model`` acting on ``atoms`` (all particles if None).

    Parameters
    ----------
    model : an anif.models.Ensemble -- member energies in Hartree from Angstrom.
    numbers : atomic numbers of the atoms the ensemble acts on (same order as ``atoms``).
    atoms : particle indices of those atoms in the System, or None for all particles.
    periodic : use the System's periodic box (atoms need not be wrapped into it).
    backend : 'torch' (openmm-torch TorchForce, default) or 'python' (openmm.PythonForce).
    """
    if backend not in ("torch", "python"):
        raise AnifError(f"unknown backend {backend!r} (use 'torch' or 'python')")
    numbers = [int(z) for z in numbers]
    check_supported(model, numbers)
    if atoms is not None and len(atoms) != len(numbers):
        raise AnifError(f"{len(atoms)} atom indices but {len(numbers)} atomic numbers")
    module = (_PeriodicModule if periodic else _MoleculeModule)(model, numbers, atoms)
    ot = _openmmtorch() if backend == "torch" else None
    if ot is not None:
        force = ot.TorchForce(torch.jit.freeze(torch.jit.script(module).eval()))  # weights become constants
        force.addGlobalParameter(SIGMA_PARAMETER, 0.0)
        force.addGlobalParameter(ATOMS_PARAMETER, float(len(numbers)))
        force.addEnergyParameterDerivative(SIGMA_PARAMETER)
        force.setName("AniEnsembleTorchForce")
    else:
        force_id = next(_python_ids)
        force = openmm.PythonForce(
            PythonEnsembleComputation(module, periodic, force_id),
            {ATOMS_PARAMETER: float(len(numbers)), _PYTHON_ID_PARAMETER: float(force_id)},
        )
        force.setName("AniEnsemblePythonForce")
    force.setUsesPeriodicBoundaryConditions(periodic)
    return force


def create_system(
    model: torch.nn.Module,
    numbers: Sequence[int],
    box_vectors=None,
    backend: str = "torch",
    remove_cm_motion: bool = True,
) -> tuple[openmm.System, openmm.Force]:
    """A System of the given atoms (element masses) driven only by the ensemble force.

    Arguments in :func:`create_force`'s order. ``box_vectors``: three Vec3 / (3, 3) array in nm for a periodic system,
    else None.
    """
    from openmm.app import element

    system = openmm.System()
    for z in numbers:
        system.addParticle(element.Element.getByAtomicNumber(int(z)).mass)
    if box_vectors is not None:
        a, b, c = (openmm.Vec3(*np.asarray(v, dtype=float)) for v in np.asarray(box_vectors))
        system.setDefaultPeriodicBoxVectors(a, b, c)
    force = create_force(model, numbers, periodic=box_vectors is not None, backend=backend)
    system.addForce(force)
    if remove_cm_motion:
        system.addForce(openmm.CMMotionRemover())
    return system, force


def _global_parameters(force: openmm.Force) -> dict[str, float]:
    if isinstance(force, openmm.PythonForce):
        return dict(force.getGlobalParameters())
    if hasattr(force, "getNumGlobalParameters") and hasattr(force, "getGlobalParameterDefaultValue"):
        return {force.getGlobalParameterName(i): force.getGlobalParameterDefaultValue(i)
                for i in range(force.getNumGlobalParameters())}
    return {}


def _as_specific(force: openmm.Force) -> openmm.Force:
    """The force with its concrete class (System.getForce returns TorchForce as a plain Force
    when openmmtorch was imported after the System was built)."""
    if type(force) is openmm.Force:
        ot = _openmmtorch()
        if ot is not None and ot.TorchForce.isinstance(force):
            return ot.TorchForce.cast(force)
    return force


def is_ensemble_force(force: openmm.Force) -> bool:
    """Whether ``force`` is an anif ensemble force (from :func:`create_force` or openmmml)."""
    return ATOMS_PARAMETER in _global_parameters(_as_specific(force))


def _locate(system: openmm.System) -> list[tuple[openmm.Force, Optional[openmm.CustomCVForce]]]:
    """Every ensemble force of the System, with the CustomCVForce holding it (openmmml's
    ``createMixedSystem(interpolate=True)`` nests the ML force in one) or None."""
    found = []
    for i in range(system.getNumForces()):
        force = _as_specific(system.getForce(i))
        if isinstance(force, openmm.CustomCVForce):
            found += [(f, force) for f in (_as_specific(force.getCollectiveVariable(k))
                                           for k in range(force.getNumCollectiveVariables())) if is_ensemble_force(f)]
        elif is_ensemble_force(force):
            found.append((force, None))
    return found


def _only(system: openmm.System) -> tuple[openmm.Force, Optional[openmm.CustomCVForce]]:
    found = _locate(system)
    if len(found) != 1:
        raise AnifError(f"the System holds {len(found)} anif ensemble forces (expected exactly one)")
    return found[0]


def find_ensemble_force(system: openmm.System) -> openmm.Force:
    """The System's ensemble force (the only one, possibly inside a CustomCVForce; error if none or several)."""
    return _only(system)[0]


def sigma_needs_inner_context(system: openmm.System) -> bool:
    """True when the ensemble force sits inside a CustomCVForce (openmmml's interpolating mixed
    System): OpenMM does not pass inner parameter derivatives out, so sigma is read from the
    CustomCVForce's inner Context (one more evaluation of the ML region)."""
    return _only(system)[1] is not None


def ensemble_atom_count(force: openmm.Force) -> int:
    """Number of atoms the ensemble force acts on (rho = sigma / sqrt(N))."""
    params = _global_parameters(_as_specific(force))
    if ATOMS_PARAMETER not in params:
        raise AnifError(f"force {force.getName()!r} is not an anif ensemble force")
    return int(round(params[ATOMS_PARAMETER]))


def exposes_sigma_derivative(force: openmm.Force) -> bool:
    """True for the TorchForce (sigma as an energy-parameter derivative), False for the PythonForce."""
    return not isinstance(_as_specific(force), openmm.PythonForce)


def sigma_from_state(state: openmm.State, force: openmm.Force) -> float:
    """sigma (kcal/mol) at the State's positions.

    TorchForce: the energy-parameter derivative (the State needs ``getParameterDerivatives``).
    PythonForce: the value its callable published at its last evaluation.
    """
    force = _as_specific(force)
    if isinstance(force, openmm.PythonForce):
        force_id = int(force.getGlobalParameters()[_PYTHON_ID_PARAMETER])
        if force_id not in _PYTHON_SIGMA:
            raise AnifError("the PythonForce has not been evaluated yet: compute a State first")
        return _PYTHON_SIGMA[force_id] * KJ_MOL_TO_KCAL_MOL
    derivatives = state.getEnergyParameterDerivatives()
    if SIGMA_PARAMETER not in derivatives:
        raise AnifError("State lacks the sigma derivative: call getState(getParameterDerivatives=True)")
    return derivatives[SIGMA_PARAMETER] * KJ_MOL_TO_KCAL_MOL


def read_qbc(context_or_state, force: Optional[openmm.Force] = None) -> tuple[float, float]:
    """(sigma, rho) in kcal/mol for a Context (evaluated now) or a State.

    ``force`` is any handle of the ensemble force; with a Context it may be left out (the
    System's only ensemble force is used, also inside openmmml's interpolating CustomCVForce).
    """
    state = context_or_state
    if isinstance(context_or_state, openmm.Context):
        inner, holder = _only(context_or_state.getSystem())
        force = force or inner
        if holder is not None:
            state = holder.getInnerContext(context_or_state).getState(getParameterDerivatives=True)
        else:
            state = context_or_state.getState(getParameterDerivatives=True, groups={force.getForceGroup()})
    elif force is None:
        raise AnifError("read_qbc on a State needs the ensemble force")
    sigma = sigma_from_state(state, force)
    return sigma, sigma / float(np.sqrt(ensemble_atom_count(force)))


__all__ = [
    "ATOMS_PARAMETER",
    "SIGMA_PARAMETER",
    "create_force",
    "create_system",
    "ensemble_atom_count",
    "exposes_sigma_derivative",
    "find_ensemble_force",
    "is_ensemble_force",
    "read_qbc",
    "sigma_from_state",
    "sigma_needs_inner_context",
]
