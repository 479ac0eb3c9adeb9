"""ANI ensembles as OpenMM forces that also report the ensemble's disagreement.

The default is an openmm-torch ``TorchForce`` running a TorchScript module that returns
``E_mean + p * sigma`` (kJ/mol) with a global parameter ``p`` = 0 (:data:`SIGMA_PARAMETER`).
Its energy-parameter derivative dE/dp is sigma at the current step, so
``State.getEnergyParameterDerivatives()[SIGMA_PARAMETER]`` carries the disagreement at no
extra cost. When openmmtorch cannot load, an ``openmm.PythonForce`` computes the same
energy and forces and keeps sigma on its callable.
"""

from __future__ import annotations

import logging
import warnings
from typing import Optional, Sequence

import numpy as np
import openmm
import torch
from torch import Tensor

from ..errors import AnifError
from ..models import check_supported, member_spread
from ..units import HARTREE_TO_KJ_MOL, KJ_MOL_TO_KCAL_MOL

#: Global parameter whose energy derivative is sigma (kJ/mol).
SIGMA_PARAMETER = "anif_sigma"


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
        # follows .to()/.double() of the module, so the model's precision is used
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=next(model.parameters()).dtype))

    def energy(self, positions: Tensor, box: Optional[Tensor], scale: Tensor) -> Tensor:
        dtype = self.dtype_probe.dtype
        if self.subset:
            positions = positions.index_select(0, self.atoms)
        coords = (positions * 10.0).to(dtype)
        cell: Optional[Tensor] = None
        pbc: Optional[Tensor] = None
        if box is not None:
            cell = (box * 10.0).to(dtype)
            # wrap into the reduced (OpenMM) box: c, then b, then a
            coords = coords - torch.outer(torch.floor(coords[:, 2] / cell[2, 2]), cell[2])
            coords = coords - torch.outer(torch.floor(coords[:, 1] / cell[1, 1]), cell[1])
            coords = coords - torch.outer(torch.floor(coords[:, 0] / cell[0, 0]), cell[0])
            pbc = self.pbc
        members = self.model(self.species, coords.unsqueeze(0), cell, pbc)[:, 0]
        sigma = member_spread(members.unsqueeze(1))[0]
        return (members.mean() + scale.to(dtype) * sigma).to(torch.float64) * self.hartree_to_kj


class _MoleculeModule(_EnsembleEnergy):
    def forward(self, positions: Tensor, anif_sigma: Tensor) -> Tensor:
        return self.energy(positions, None, anif_sigma)


class _PeriodicModule(_EnsembleEnergy):
    def forward(self, positions: Tensor, boxvectors: Tensor, anif_sigma: Tensor) -> Tensor:
        return self.energy(positions, boxvectors, anif_sigma)


class PythonEnsembleComputation:
    """The PythonForce callable: energy and forces from the ensemble; keeps the last sigma."""

    def __init__(self, module: _EnsembleEnergy, periodic: bool):
        self.module = module
        self.periodic = periodic
        self.sigma_kj_mol = float("nan")

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
        self.sigma_kj_mol = grad_s.item()
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
    model : AniEnsemble (anif.models) -- member energies in Hartree from Angstrom.
    numbers : atomic numbers of the atoms the ensemble acts on (same order as ``atoms``).
    atoms : particle indices of those atoms in the System, or None for all particles.
    periodic : use the System's periodic box (positions wrapped, minimum image via torchani).
    backend : 'torch' (openmm-torch TorchForce, default) or 'python' (openmm.PythonForce).
    """
    numbers = [int(z) for z in numbers]
    check_supported(model, numbers)
    if atoms is not None and len(atoms) != len(numbers):
        raise AnifError(f"{len(atoms)} atom indices but {len(numbers)} atomic numbers")
    module_cls = _PeriodicModule if periodic else _MoleculeModule
    module = module_cls(model, numbers, atoms)
    ot = _openmmtorch() if backend == "torch" else None
    if backend not in ("torch", "python"):
        raise AnifError(f"unknown backend {backend!r} (use 'torch' or 'python')")
    if ot is not None:
        force = ot.TorchForce(torch.jit.freeze(torch.jit.script(module).eval()))  # weights become constants
        force.addGlobalParameter(SIGMA_PARAMETER, 0.0)
        force.addEnergyParameterDerivative(SIGMA_PARAMETER)
        force.setUsesPeriodicBoundaryConditions(periodic)
        force.setName("AniEnsembleTorchForce")
    else:
        # the PythonForce sees only its particles: select nothing inside the module
        module = module_cls(model, numbers, None)
        computation = PythonEnsembleComputation(module, periodic)
        force = openmm.PythonForce(computation)
        if atoms is not None:
            force.setParticles(list(atoms))
        force.setUsesPeriodicBoundaryConditions(periodic)
        force.setName("AniEnsemblePythonForce")
        force.anif_computation = computation
    force.anif_n_atoms = len(numbers)
    return force


def create_system(
    numbers: Sequence[int],
    model: torch.nn.Module,
    box_vectors=None,
    backend: str = "torch",
    remove_cm_motion: bool = True,
) -> tuple[openmm.System, openmm.Force]:
    """A System of the given atoms (element masses) driven only by the ensemble force.

    ``box_vectors``: three Vec3 / (3, 3) array in nm for a periodic system, else None.
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


def sigma_from_state(state: openmm.State, force: openmm.Force) -> float:
    """sigma (kcal/mol) at the State's positions.

    TorchForce: the energy-parameter derivative (the State needs ``getParameterDerivatives``).
    PythonForce: the value its callable kept from the last evaluation.
    """
    computation = getattr(force, "anif_computation", None)
    if computation is not None:
        return computation.sigma_kj_mol * KJ_MOL_TO_KCAL_MOL
    derivatives = state.getEnergyParameterDerivatives()
    if SIGMA_PARAMETER not in derivatives:
        raise AnifError("State lacks the sigma derivative: call getState(getParameterDerivatives=True)")
    return derivatives[SIGMA_PARAMETER] * KJ_MOL_TO_KCAL_MOL


def read_qbc(context_or_state, force: openmm.Force) -> tuple[float, float]:
    """(sigma, rho) in kcal/mol for a Context (evaluated now) or a State."""
    state = context_or_state
    if isinstance(context_or_state, openmm.Context):
        state = context_or_state.getState(
            getEnergy=True, getParameterDerivatives=True, groups={force.getForceGroup()}
        )
    sigma = sigma_from_state(state, force)
    return sigma, sigma / float(np.sqrt(force.anif_n_atoms))


__all__ = [
    "SIGMA_PARAMETER",
    "create_force",
    "create_system",
    "read_qbc",
    "sigma_from_state",
]
