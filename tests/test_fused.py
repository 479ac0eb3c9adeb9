"""The fused ensemble gives the stock torchani ensemble's numbers (energies, forces, members)."""

import copy
import inspect

import numpy as np
import pytest
import torch

from anif.models.ensemble import evaluate, load_model, pad_structures, save_model
from anif.structures import Structure, from_smiles
from anif.units import HARTREE_TO_KJ_MOL
from conftest import float32_atol, float32_qbc_atol

SMILES = ["C", "CC(=O)Nc1ccc(O)cc1", "CCCCCCCCCCCCCCCC(=O)O", "NCC(=O)NC(C)C(=O)NC(CO)C(=O)O"]  # methane: the networks
# kernel (FusedAniEnsemble.kernel_network_rows); the others (20+ atoms): BLAS products


@pytest.fixture(scope="module", params=["kernels", "torchscript"])
def fused(ani1x, request):
    """Both fused paths: the compiled CPU kernels (the default) and TorchScript operations."""
    from anif.models.kernels import FusedAniEnsemble

    model = FusedAniEnsemble(ani1x.ani, kernels=request.param == "kernels").eval()
    assert model.use_kernels == (request.param == "kernels")
    return model


@pytest.fixture(scope="module")
def molecules():
    return [from_smiles(s, seed=1) for s in SMILES]


def water_box(n_side: int, spacing: float, seed: int = 0) -> tuple[Structure, np.ndarray]:
    """n_side**3 randomly oriented waters on a cubic lattice, and the (3, 3) cell in Angstrom."""
    rng = np.random.default_rng(seed)
    local = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]])
    numbers, coords = [], []
    for ijk in np.ndindex(n_side, n_side, n_side):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        coords.append(local @ q.T + np.array(ijk) * spacing + rng.uniform(-0.2, 0.2, 3))
        numbers += [8, 1, 1]
    return Structure(np.array(numbers), np.concatenate(coords), name="water"), np.eye(3) * n_side * spacing


def assert_same(stock_result, fused_result):
    atol = float32_atol(stock_result.member_energies)
    np.testing.assert_allclose(fused_result.member_energies, stock_result.member_energies, rtol=0, atol=atol)
    np.testing.assert_allclose(fused_result.energy, stock_result.energy, rtol=0, atol=atol)
    np.testing.assert_allclose(fused_result.forces, stock_result.forces, rtol=0, atol=2e-5)
    # sigma is a difference of member energies: their float32 round-off carries over
    np.testing.assert_allclose(fused_result.sigma, stock_result.sigma, rtol=0, atol=float32_atol(stock_result.member_energies, 1e-5))


def test_molecules_of_several_sizes_match_stock(ani1x, fused, molecules):
    for mol in molecules:
        stock = evaluate(ani1x, mol.numbers, mol.coordinates)
        assert_same(stock, evaluate(fused, mol.numbers, mol.coordinates))
    # the README sanity value of torchani: methane
    coords = [[0.03192167, 0.00638559, 0.01301679], [-0.83140486, 0.39370209, -0.26395324],
              [-0.66518241, -0.84461308, 0.20759389], [0.45554739, 0.54289633, 0.81170881],
              [0.66091919, -0.16799635, -0.91037834]]
    assert evaluate(fused, [6, 1, 1, 1, 1], coords).energy[0] == pytest.approx(-40.45901870727539, abs=1e-5)


def test_padded_batch_of_mixed_sizes_matches_one_by_one(ani1x, fused, molecules):
    species, coords = pad_structures(molecules)
    batch = evaluate(fused, species, coords)
    for i, mol in enumerate(molecules):
        stock = evaluate(ani1x, mol.numbers, mol.coordinates)
        np.testing.assert_allclose(batch.member_energies[:, i], stock.member_energies[:, 0],
                                   atol=float32_atol(stock.member_energies))
        np.testing.assert_allclose(batch.forces[i, : mol.n_atoms], stock.forces[0], atol=2e-5)
        assert np.all(batch.forces[i, mol.n_atoms :] == 0)


@pytest.mark.parametrize("n_side, spacing", [(3, 3.3), (2, 3.4), (4, 2.9)])
def test_periodic_box_matches_torchani_pbc(ani1x, fused, n_side, spacing):
    # 10 A box (< 2 cutoffs) and 6.8 A box (several images of one atom within the cutoff): torchani's
    # neighbour list; 11.6 A box (>= 2 cutoffs): the kernels' minimum image
    box, cell = water_box(n_side, spacing)
    pbc = np.array([True, True, True])
    stock = evaluate(ani1x, box.numbers, box.coordinates, cell=cell, pbc=pbc)
    assert_same(stock, evaluate(fused, box.numbers, box.coordinates, cell=cell, pbc=pbc))
    # periodic images matter here: the isolated cluster has other energies
    assert abs(stock.energy[0] - evaluate(ani1x, box.numbers, box.coordinates).energy[0]) > 1e-3


def test_torchscript_and_double_precision_forces_are_energy_gradients(fused, molecules):
    mol = molecules[1]
    scripted = torch.jit.script(fused)
    species = torch.tensor(mol.numbers)[None]
    x32 = torch.tensor(mol.coordinates, dtype=torch.float32)[None]
    assert torch.equal(scripted(species, x32, None, None), fused(species, x32, None, None))

    double = torch.jit.script(copy.deepcopy(fused).double())
    x = torch.tensor(mol.coordinates, dtype=torch.float64)[None].requires_grad_()
    energy = double(species, x, None, None).mean()
    (grad,) = torch.autograd.grad(energy, x)
    h = 1e-4
    for atom, axis in [(0, 0), (4, 1), (11, 2), (19, 0)]:
        shifted = []
        for sign in (1, -1):
            y = x.detach().clone()
            y[0, atom, axis] += sign * h
            shifted.append(double(species, y, None, None).mean())
        fd = (shifted[0] - shifted[1]) / (2 * h)
        assert float(grad[0, atom, axis]) == pytest.approx(float(fd), abs=1e-7)


@pytest.mark.parametrize(
    "numbers, coordinates",
    [
        ([1, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]),  # H2: no angle triplet
        ([6, 8], [[0.0, 0.0, 0.0], [0.0, 0.0, 1.13]]),  # CO
        ([8, 1, 1], [[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]]),  # water
        ([8, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 7.5]]),  # atoms farther apart than every cutoff
    ],
    ids=["H2", "CO", "water", "separated"],
)
def test_small_molecules_match_torchani_ani1x(fused, ani1x_torchani, numbers, coordinates):
    """Both fused paths (and their TorchScript compilation) give torchani's own ANI-1x energy and
    forces, also for structures without angular terms."""
    species = torch.tensor([numbers])
    x = torch.tensor([coordinates], dtype=torch.float32, requires_grad=True)
    reference = ani1x_torchani((species, x)).energies
    (reference_forces,) = torch.autograd.grad(-reference.sum(), x)
    result = evaluate(fused, numbers, coordinates)
    assert result.energy[0] == pytest.approx(reference.item(), abs=2e-5)
    np.testing.assert_allclose(result.forces[0], reference_forces[0].numpy(), rtol=0, atol=2e-5)
    scripted = torch.jit.script(fused)
    members = scripted(species, x.detach(), None, None)
    assert float(members.mean()) == pytest.approx(reference.item(), abs=2e-5)


def torchforce_state(model, mol):
    import openmm

    from anif.openmm_plugin import create_system, read_qbc

    system, force = create_system(model, mol.numbers, backend="torch")
    assert type(force).__name__ == "TorchForce"
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(mol.coordinates / 10.0)
    state = context.getState(getEnergy=True, getForces=True, getPositions=True)
    kj, nm = openmm.unit.kilojoule_per_mole, openmm.unit.nanometer
    return (
        state.getPotentialEnergy().value_in_unit(kj),
        state.getForces(asNumpy=True).value_in_unit(kj / nm),
        read_qbc(context, force)[0],
        state.getPositions(asNumpy=True).value_in_unit(nm) * 10.0,
    )


def test_inside_a_torchforce_matches_stock(ani1x, fused, molecules):
    mol = molecules[1]
    energy, forces, sigma, positions = torchforce_state(fused, mol)
    # stock numbers for the (float32-rounded) positions OpenMM holds; float32 sums of
    # ~1.4e6 kJ/mol have an ulp of 0.125 kJ/mol
    stock = evaluate(ani1x, mol.numbers, positions)
    assert energy == pytest.approx(stock.energy[0] * HARTREE_TO_KJ_MOL, abs=0.3)
    np.testing.assert_allclose(forces, stock.forces[0] * HARTREE_TO_KJ_MOL * 10.0, atol=0.05)
    # stock sigma carries the float32 round-off of its member totals (fused adds self energies in float64)
    assert sigma == pytest.approx(stock.sigma_kcal_mol[0], abs=float32_qbc_atol(stock.energy[0]))


def test_batched_qbc_gives_stock_rho_in_input_order(ani1x, molecules):
    from anif.models.ensemble import score_structures

    structures = molecules + molecules[::-1] + [molecules[0]]
    energy, rho = score_structures(load_model("ani1x"), structures, batch_size=3)
    stock_energy = [evaluate(ani1x, s.numbers, s.coordinates, forces=False).energy[0] for s in structures]
    np.testing.assert_allclose(energy, stock_energy, atol=float32_atol(stock_energy))
    expected = [evaluate(ani1x, s.numbers, s.coordinates, forces=False).rho_kcal_mol[0] for s in structures]
    # stock rho carries the float32 round-off of its member totals (fused adds self energies in float64)
    tolerance = [float32_qbc_atol(e, s.n_atoms) for e, s in zip(stock_energy, structures)]
    assert np.all(np.abs(rho - np.array(expected)) <= tolerance)
    assert rho.shape == (len(structures),) and np.all(rho > 0)


def test_load_model_defaults_to_the_kernels_and_keeps_stock(tmp_path, molecules):
    from anif.errors import AnifError, UnsupportedElementError
    from anif.models.kernels import FusedAniEnsemble

    model = load_model("ani1x")
    assert isinstance(model, FusedAniEnsemble) and model.cutoff == pytest.approx(5.2)
    assert [int(z) for z in model.atomic_numbers] == [1, 6, 7, 8]
    assert model.use_kernels and not load_model("ani1x", implementation="torchscript").use_kernels
    assert not isinstance(load_model("ani1x", implementation="stock"), FusedAniEnsemble)
    for gone in ("nope", "fused"):  # one name per implementation
        with pytest.raises(AnifError):
            load_model("ani1x", implementation=gone)
    # saving goes through the wrapped torchani module; a reloaded model gives the same numbers
    directory = save_model(model, tmp_path / "m")
    mol = molecules[1]
    again = evaluate(load_model(str(directory)), mol.numbers, mol.coordinates)
    first = evaluate(model, mol.numbers, mol.coordinates)
    np.testing.assert_allclose(again.member_energies, first.member_energies, atol=1e-6)
    with pytest.raises(UnsupportedElementError):
        evaluate(model, [6, 17], [[0, 0, 0], [1.8, 0, 0]])
    with pytest.raises(Exception, match="not support"):
        model(torch.tensor([[6, 17]]), torch.tensor([[[0.0, 0, 0], [1.8, 0, 0]]]), None, None)


def test_no_grad_path_gives_the_same_member_energies(ani1x, fused, molecules):
    # without gradients the CELU activations run in place; numbers must not change
    species, coords = pad_structures(molecules)
    species_t, coords_t = torch.as_tensor(species), torch.as_tensor(coords, dtype=torch.float32)
    with torch.no_grad():
        quiet = fused(species_t, coords_t, None, None)
        stock = ani1x(species_t, coords_t, None, None)
    recorded = fused(species_t, coords_t.clone().requires_grad_(), None, None)
    assert torch.equal(quiet, recorded.detach())
    np.testing.assert_allclose(quiet.numpy(), stock.numpy(), rtol=0, atol=float32_atol(stock.numpy()))


@pytest.mark.parametrize("aev", [{"cutoff_fn": "smooth"}, {"angular_zeta": 14.1, "angular_num_sections": 4}])
def test_other_aev_settings_match_stock(molecules, aev):
    # smooth cutoff: torchani's angular terms; other ANI parameters: the transposed ANI terms
    from anif.models.kernels import FusedAniEnsemble
    from anif.models.ensemble import StockAniEnsemble, build_ani

    from torchani.aev import AEVComputer

    torch.manual_seed(0)
    features = AEVComputer.like_1x(num_species=4, **aev).out_dim
    dims = {s: [features, 32, 16, 1] for s in "HCNO"}
    ani = build_ani("HCNO", dims, [-0.5, -38.0, -54.6, -75.0], members=3, aev=aev).eval()
    fused = FusedAniEnsemble(ani)
    assert fused.ani_angular == ("smooth" not in aev.values())
    for mol in molecules[1:3]:
        stock = evaluate(StockAniEnsemble(ani), mol.numbers, mol.coordinates)
        assert_same(stock, evaluate(fused, mol.numbers, mol.coordinates))


def test_model_folder_refuses_weights_from_another_save(tmp_path, ani1x):
    """A kill between save_model's two renames leaves new weights beside the old model.json: refused."""
    from anif.errors import InputError
    from anif.models.ensemble import Ensemble, build_ani

    save_model(ani1x, tmp_path / "a")
    assert isinstance(load_model(str(tmp_path / "a")), Ensemble)
    # Python >= 3.12 checks protocol members with inspect.getattr_static (nn.Module buffers are invisible to it)
    for model in (load_model(str(tmp_path / "a")), load_model(str(tmp_path / "a"), implementation="stock")):
        assert all(inspect.getattr_static(model, name, None) is not None for name in ("atomic_numbers", "cutoff"))
    other = build_ani("HCNO", {s: [384, 8, 1] for s in "HCNO"}, [0.0] * 4, members=2)
    save_model(type(ani1x)(other), tmp_path / "b")
    (tmp_path / "a" / "weights.pt").write_bytes((tmp_path / "b" / "weights.pt").read_bytes())
    with pytest.raises(InputError, match="does not belong"):
        load_model(str(tmp_path / "a"))


def test_ani1x_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch, molecules):
    import torchani

    from anif.models.ensemble import MODEL_WEIGHTS, load_ani

    monkeypatch.setenv("ANIF_CACHE_DIR", str(tmp_path))
    mol = molecules[1]
    species, coords = torch.as_tensor(mol.numbers[None]), torch.tensor(mol.coordinates[None], dtype=torch.float32)
    expected = torchani.neurochem.load_model_from_name("ani1x")((species, coords), ensemble_values=True).energies
    parsed = load_ani("ani1x")
    (entry,) = tmp_path.iterdir()

    def no_parsing(*args, **kwargs):
        raise AssertionError("the Neurochem files were parsed again")

    with monkeypatch.context() as patch:
        patch.setattr(torchani.neurochem, "load_model_from_name", no_parsing)
        cached = load_ani("ani1x")
    for ani in (parsed, cached):
        assert torch.equal(ani((species, coords), ensemble_values=True).energies, expected)
    # a damaged entry is parsed again and replaced
    (entry / MODEL_WEIGHTS).write_bytes(b"not a checkpoint")
    repaired = load_ani("ani1x")
    assert torch.equal(repaired((species, coords), ensemble_values=True).energies, expected)
    assert load_ani("ani1x") is not None and (entry / MODEL_WEIGHTS).stat().st_size > 1000
