"""The compiled CPU kernels (anif.models.extension, anif/models/csrc/ani_kernels.cpp): the descriptor and the
networks against torchani's own modules, their hand-written gradients against autograd through
torchani and against finite differences."""

import copy

import numpy as np
import pytest
import torch

from anif.models.ensemble import pad_structures
from anif.structures import from_smiles


@pytest.fixture(scope="module")
def kernel_model(ani1x):
    from anif.models.kernels import FusedAniEnsemble

    model = FusedAniEnsemble(ani1x.ani).eval()
    assert model.use_kernels, "the compiled kernels did not load (they need g++ and ninja)"
    return model


def padded_batch(dtype=torch.float64):
    """Three molecules of different sizes, -1 padded; element indices and coordinates."""
    molecules = [from_smiles(s, seed=2) for s in ("CO", "CC(=O)Nc1ccc(O)cc1", "NCC(=O)O")]
    species, coords = pad_structures(molecules)
    return torch.as_tensor(species), torch.as_tensor(coords, dtype=dtype)


@pytest.fixture(autouse=True, params=[1, 2], ids=["1-thread", "2-threads"])
def torch_threads(request):
    """Every kernel test with one thread and with two (the kernels split atoms and members over threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def kernel_aev(model, elem, coords, cell=None):
    a = model.aev_computer
    box = coords.new_zeros(0) if cell is None else cell
    return torch.ops.anif.aev(coords, elem, a.radial.shifts, model.radial_eta, model.cutoff, a.angular.shifts,
                              a.angular.sections, model.angular_eta, model.zeta, model.angular_cutoff,
                              model.triu_index, box)


def kernel_networks(model, aev, elem):
    return torch.ops.anif.networks(aev, elem.reshape(-1), elem.shape[0], model.depth, model.kernel_weights,
                                   model.kernel_biases, model.celu_alpha)


def test_aev_and_its_gradient_match_torchani(kernel_model):
    species, coords = padded_batch()
    elem = kernel_model.element_index[species]
    reference_computer = copy.deepcopy(kernel_model.aev_computer).double()
    x_ref = coords.clone().requires_grad_()
    reference = reference_computer(elem, x_ref).reshape(-1, reference_computer.out_dim)
    x = coords.clone().requires_grad_()
    aev = kernel_aev(kernel_model, elem, x)
    assert aev.shape == reference.shape
    np.testing.assert_allclose(aev.detach().numpy(), reference.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert float(reference.detach()[elem.reshape(-1) < 0].abs().sum()) == 0 and float(aev.detach().abs().sum()) > 10
    # a random linear functional of the AEV: its coordinate gradient, kernel vs autograd through torchani
    weights = torch.randn(aev.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((aev * weights).sum(), x)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), x_ref)
    np.testing.assert_allclose(grad.numpy(), grad_ref.numpy(), rtol=1e-8, atol=1e-10)
    assert float(grad[species < 0].abs().sum()) == 0


def water_box(n_side: int, spacing: float, seed: int = 0):
    """n_side**3 randomly oriented waters on a cubic lattice (atomic numbers, coordinates, cell; Angstrom)."""
    rng = np.random.default_rng(seed)
    local = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]])
    coords = []
    for ijk in np.ndindex(n_side, n_side, n_side):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        coords.append(local @ q.T + np.array(ijk) * spacing + rng.uniform(-0.2, 0.2, 3))
    return np.tile([8, 1, 1], n_side**3), np.concatenate(coords), np.eye(3) * n_side * spacing


@pytest.mark.parametrize("triclinic", [False, True], ids=["cubic", "triclinic"])
def test_periodic_aev_and_gradient_match_torchani(kernel_model, triclinic):
    # 11.2 A box (>= 2 cutoffs: minimum image); atoms shifted out of the box on purpose
    numbers, coords, cell = water_box(4, 2.8)
    if triclinic:  # an OpenMM reduced box: b and c lean by less than half a width
        cell[1, 0], cell[2, 0], cell[2, 1] = 3.0, -2.0, 4.0
    coords = coords + np.array([-1.5, 0.7, 2.0])
    elem = kernel_model.element_index[torch.as_tensor(numbers)[None]]
    x = torch.as_tensor(coords, dtype=torch.float64)[None].requires_grad_()
    cell_t = torch.as_tensor(cell, dtype=torch.float64)
    aev = kernel_aev(kernel_model, elem, x, cell_t)
    reference_computer = copy.deepcopy(kernel_model.aev_computer).double()
    x_ref = x.detach().clone().requires_grad_()
    reference = reference_computer(elem, x_ref, cell=cell_t, pbc=torch.ones(3, dtype=torch.bool)).reshape(aev.shape)
    np.testing.assert_allclose(aev.detach().numpy(), reference.detach().numpy(), rtol=1e-9, atol=1e-12)
    isolated = kernel_aev(kernel_model, elem, x.detach())
    assert float((isolated - aev.detach()).abs().max()) > 0.01  # the images matter
    weights = torch.randn(aev.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((aev * weights).sum(), x)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), x_ref)
    np.testing.assert_allclose(grad.numpy(), grad_ref.numpy(), rtol=1e-8, atol=1e-10)


def test_aev_gradient_is_finite_difference_exact(kernel_model):
    elem = kernel_model.element_index[torch.tensor([[6, 8, 1, 1, 1, 1]])]
    coords = torch.as_tensor(from_smiles("CO", seed=3).coordinates, dtype=torch.float64)[None].requires_grad_()
    assert torch.autograd.gradcheck(lambda x: kernel_aev(kernel_model, elem, x), (coords,), eps=1e-6, atol=1e-6)



def test_aev_jacobian_products_match_autograd_through_torchani(kernel_model):
    """aev_vjp (J^T g) and aev_jvp (J u), the products force training uses, against torchani."""
    from anif.models.extension import aev_arguments

    species, coords = padded_batch()
    elem = kernel_model.element_index[species]
    reference = copy.deepcopy(kernel_model.aev_computer).double()
    args = aev_arguments(kernel_model.aev_computer)
    generator = torch.Generator().manual_seed(3)
    u = torch.randn(coords.shape, dtype=torch.float64, generator=generator)
    g = torch.randn(coords.shape[0] * coords.shape[1], reference.out_dim, dtype=torch.float64, generator=generator)

    def torchani_aev(x):
        return reference(elem, x).reshape(-1, reference.out_dim)

    _, jvp_ref = torch.autograd.functional.jvp(torchani_aev, coords, u)
    jvp = torch.ops.anif.aev_jvp(coords, elem, u, *args)
    np.testing.assert_allclose(jvp.numpy(), jvp_ref.numpy(), rtol=1e-9, atol=1e-11)
    assert float(jvp.abs().max()) > 1
    x = coords.clone().requires_grad_()
    (vjp_ref,) = torch.autograd.grad((torchani_aev(x) * g).sum(), x)
    vjp = torch.ops.anif.aev_vjp(coords, elem, g, *args)
    np.testing.assert_allclose(vjp.numpy(), vjp_ref.numpy(), rtol=1e-9, atol=1e-11)
    # padding rows are not atoms: they neither move the AEV nor receive a gradient
    assert float(vjp[species < 0].abs().sum()) == 0
    np.testing.assert_allclose(torch.ops.anif.aev_jvp(coords, elem, u * (species >= 0).unsqueeze(-1), *args).numpy(),
                               jvp.numpy(), rtol=1e-12, atol=1e-14)

def test_networks_and_their_gradient_match_the_members(kernel_model):
    species, coords = padded_batch()
    elem = kernel_model.element_index[species]
    members = list(kernel_model.ani.potentials["nnp"].neural_networks.members)
    aev = kernel_aev(kernel_model, elem, coords)
    double = copy.deepcopy(kernel_model).double()
    x = aev.clone().requires_grad_()
    energies = kernel_networks(double, x, elem)
    # reference: each member's torchani atomic networks, atom by atom, in float64
    flat = elem.reshape(-1)
    x_ref = aev.clone().requires_grad_()
    reference = torch.zeros(len(members), species.shape[0], dtype=torch.float64)
    for m, member in enumerate(members):
        for row in torch.nonzero(flat >= 0).flatten().tolist():
            net = copy.deepcopy(member.atomics[kernel_model.ani.symbols[int(flat[row])]]).double()
            reference[m, row // species.shape[1]] += net(x_ref[row : row + 1])[0, 0]
    np.testing.assert_allclose(energies.detach().numpy(), reference.detach().numpy(), rtol=0, atol=1e-10)
    mix = torch.randn(energies.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((energies * mix).sum(), x)
    (grad_ref,) = torch.autograd.grad((reference * mix).sum(), x_ref)
    # torch's CELU backward and the kernel's (derivative from the activation) differ at ~1e-9
    np.testing.assert_allclose(grad.numpy(), grad_ref.numpy(), rtol=0, atol=1e-8)
    one = x[:1].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: kernel_networks(double, a, elem[:1, :1]), (one,), eps=1e-6, atol=1e-6)
    # float32: the same numbers to round-off, with and without gradients
    with torch.no_grad():
        quiet = kernel_networks(kernel_model, aev.float(), elem)
    recorded = kernel_networks(kernel_model, aev.float().requires_grad_(), elem)
    assert torch.equal(quiet, recorded.detach())
    np.testing.assert_allclose(quiet.double().numpy(), reference.detach().numpy(), rtol=0, atol=2e-5)


def test_kernels_reject_bad_input_and_leave_denormals_alone(kernel_model):
    species, coords = padded_batch(torch.float32)
    elem = kernel_model.element_index[species]
    aev = kernel_aev(kernel_model, elem, coords)
    with pytest.raises(RuntimeError, match="has no network"):
        kernel_networks(kernel_model, aev, torch.full_like(elem, 7))
    with pytest.raises(RuntimeError, match=r"coordinates \(B, N, 3\)"):
        kernel_aev(kernel_model, elem, coords[..., :2])
    # the kernels flush denormals only while they run
    kernel_networks(kernel_model, aev, elem)
    assert np.float32(1e-40) * np.float32(1.0) != 0


def test_a_finished_build_loads_without_the_build_tooling(tmp_path, monkeypatch):
    """Once built, the kernels load from the cache entry's record: no cpp_extension (setuptools)
    import and no ninja run in later processes; a record of other flags is not used."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from anif.models import extension as kernels

    assert kernels.load()
    probe = "import sys; from anif.models import extension as kernels; print(kernels.load(), 'torch.utils.cpp_extension' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["True", "False"], result.stderr
    name = next(Path(p).stem for p in torch.ops.loaded_libraries if Path(p).name.startswith("anif_kernels_"))
    path, expected = kernels._record(name)
    stale = tmp_path / path.name
    stale.write_text(json.dumps({**json.loads(path.read_text()), "flags": ["-O0"]}))
    monkeypatch.setattr(kernels, "_record", lambda _: (stale, expected))
    assert not kernels._load_built(name)
