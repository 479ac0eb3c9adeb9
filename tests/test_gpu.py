"""The GPU path: the fused ensemble's TorchScript operations on CUDA give torchani's numbers
(float64 on the CPU as the reference). Skipped where torch sees no CUDA device (CI has none);
run them on a GPU machine:

    ANIF_SHARED_DIR=../shared python -m pytest -q tests/test_gpu.py
"""

import copy

import numpy as np
import pytest
import torch

from anif.models.ensemble import evaluate, load_model, pad_structures
from anif.structures import from_smiles
from test_fused import SMILES, water_box

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def reference(ani1x):
    """torchani's own forward pass in float64 on the CPU."""
    return copy.deepcopy(ani1x).double()


@pytest.mark.parametrize("implementation", ["kernels", "torchscript"])
def test_padded_batch_on_cuda_matches_torchani(implementation, reference):
    """Both load_model paths on a CUDA device (the kernels are CPU-only: the TorchScript operations run)."""
    model = load_model("ani1x", implementation=implementation).cuda()
    species, coordinates = pad_structures([from_smiles(s, seed=1) for s in SMILES] + [from_smiles("[H][H]")])
    result = evaluate(model, species, coordinates)
    expected = evaluate(reference, species, coordinates)
    members, forces = expected.member_energies, expected.forces
    # float32 on the GPU: the networks' sums round at ~1e-6 of the interaction energies (a few Ha)
    np.testing.assert_allclose(result.member_energies, members, rtol=0, atol=2e-5)
    np.testing.assert_allclose(result.forces, forces, rtol=0, atol=5e-5)
    np.testing.assert_allclose(result.sigma, members.std(0, ddof=1), rtol=0, atol=2e-5)


def test_scripted_module_on_cuda_matches_eager_and_keeps_float64_self_energies():
    model = load_model("ani1x", implementation="torchscript").cuda()
    assert model.self_energies.dtype == torch.float64 and model.self_energies.is_cuda
    scripted = torch.jit.script(model)
    mol = from_smiles("CC(=O)Nc1ccc(O)cc1", seed=1)
    species = torch.as_tensor(mol.numbers[None], device="cuda")
    x = torch.tensor(mol.coordinates[None], dtype=torch.float32, device="cuda")
    # scripting may order float32 operations differently: a few ulps of the ~0.16 Ha interaction energies
    torch.testing.assert_close(scripted.interaction_energies(species, x), model.interaction_energies(species, x),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(scripted(species, x), model(species, x), rtol=0, atol=1e-4)  # totals: ulp 3e-5 Ha
    assert scripted.self_energy(species).dtype == torch.float64


def test_periodic_water_box_on_cuda_matches_torchani_pbc(reference):
    water, cell = water_box(3, 3.3)
    model = load_model("ani1x", implementation="torchscript").cuda()
    result = evaluate(model, water.numbers, water.coordinates, cell=cell, pbc=[True, True, True])
    expected = evaluate(reference, water.numbers, water.coordinates, cell=cell, pbc=[True, True, True])
    members, forces = expected.member_energies, expected.forces
    np.testing.assert_allclose(result.member_energies, members, rtol=0, atol=5e-5)
    np.testing.assert_allclose(result.forces, forces, rtol=0, atol=5e-5)
