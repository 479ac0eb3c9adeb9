"""Samplers: RTS and dimer sampling in OpenMM, DNMS, configurational search, `anif sample` CLI.

rho values are recomputed independently with plain torchani (``energies_qbcs``); geometry is
checked with brute-force periodic images and scipy's superposition.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torchani.units import hartree2kcalmol

from anif.structures import from_smiles
from conftest import float32_qbc_atol

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torchani_rho(ani, numbers, coordinates) -> float:
    """rho (kcal/mol) of one structure straight from torchani."""
    species = torch.tensor(np.asarray(numbers)[None], dtype=torch.long)
    coords = torch.tensor(np.asarray(coordinates)[None], dtype=torch.float32)
    with torch.no_grad():
        return float(hartree2kcalmol(ani.energies_qbcs((species, coords)).qbcs[0]))


@pytest.fixture(scope="module")
def methanol():
    return from_smiles("CO", seed=3, name="methanol")


# ---- RTS ------------------------------------------------------------------------------
def test_rts_defaults_follow_the_paper_schedule():
    from anif.openmm_plugin.sampling_reporters import TemperatureRampReporter
    from anif.sampling import RTSSettings

    s = RTSSettings()
    assert (s.t_start, s.t_end, s.ramp_ps) == (300.0, 1000.0, 4.0)
    assert s.steps == 8000  # 4 ps at 0.5 fs: the trajectory ends with the ramp
    ramp = TemperatureRampReporter(1, s.t_start, s.t_end, s.ramp_ps)
    assert [ramp.temperature(t) for t in (0.0, 1.0, 2.0, 4.0, 5.0)] == [300.0, 475.0, 650.0, 1000.0, 1000.0]


def _read_csv(path):
    return np.genfromtxt(path, delimiter=",", names=True)


def test_rts_heats_along_the_ramp_and_ends_empty_when_rho_hat_is_unreachable(ani1x, tmp_path):
    from anif.sampling import RTSSettings, rts_trajectory

    hexane = from_smiles("CCCCCC", seed=1, name="hexane")
    settings = RTSSettings(ramp_ps=0.3, friction=50.0)  # same code path, shorter ramp, tight thermostat
    candidate, ramp, steps = rts_trajectory(ani1x, hexane, 1e3, seed=7, settings=settings,
                                            log_prefix=tmp_path / "rts")
    assert candidate is None and steps == settings.steps == 600
    log = _read_csv(tmp_path / "rts.ramp.csv")
    assert len(log) == 600 and log["step"][-1] == 600
    expected = 300.0 + 700.0 * np.minimum(log["step"] * 0.0005 / 0.3, 1.0)
    np.testing.assert_allclose(log["target_temperature_k"], expected, atol=1e-3)
    qbc = _read_csv(tmp_path / "rts.qbc.csv")
    assert len(qbc) == 600 and np.all(qbc["rho_kcal_mol"] < 1e3)
    kinetic = qbc["temperature_k"]
    target_at_step = np.interp(qbc["step"], log["step"], log["target_temperature_k"])
    late = slice(300, 600)
    # the kinetic temperature follows the ramp: it rises, and late in the ramp matches the target
    assert kinetic[:150].mean() < kinetic[450:].mean() - 200
    assert abs(kinetic[late].mean() / target_at_step[late].mean() - 1) < 0.2


def test_rts_returns_structures_failing_the_qbc_test(ani1x, ani1x_torchani, methanol):
    from anif.sampling import RTSSettings, sample_rts

    start = torchani_rho(ani1x_torchani, methanol.numbers, methanol.coordinates)
    rho_hat = start + 0.01
    candidates = sample_rts(ani1x, methanol, rho_hat, seed=11, settings=RTSSettings(ramp_ps=0.25, repeats=2))
    assert candidates, "no trajectory reached rho_hat"
    for c in candidates:
        assert c.rho_kcal_mol > rho_hat
        assert torchani_rho(ani1x_torchani, c.structure.numbers, c.structure.coordinates) > rho_hat
        assert 0 < c.provenance["step"] <= 500 and c.provenance["sampler"] == "rts"
    assert len({c.provenance["seed"] for c in candidates}) == len(candidates)


# ---- MD sampling ------------------------------------------------------------------------
def test_md_sampler_keeps_the_frames_failing_the_qbc_test(ani1x, ani1x_torchani, methanol):
    from anif.sampling import FrameSettings, sample_md
    from anif.geometry import kabsch_rmsd

    settings = FrameSettings(temperature=500.0, n=6, equilibration_ps=0.1, interval_ps=0.05)
    frames = sample_md(ani1x, methanol, -np.inf, seed=4, settings=settings)
    assert len(frames) == 6
    times = [c.provenance["time_ps"] for c in frames]
    assert np.allclose(np.diff(times), 0.05) and times[0] == pytest.approx(0.15)
    rho = np.array([torchani_rho(ani1x_torchani, c.structure.numbers, c.structure.coordinates) for c in frames])
    assert np.allclose([c.rho_kcal_mol for c in frames], rho, atol=1e-3, rtol=1e-3)
    assert min(kabsch_rmsd(a.structure.coordinates, b.structure.coordinates[None])[0]
               for i, a in enumerate(frames) for b in frames[i + 1:]) > 0.01  # the trajectory moves
    assert all(c.provenance["sampler"] == "md" and c.provenance["temperature_k"] == 500.0 for c in frames)
    rho_hat = float(np.median(rho))
    kept = sample_md(ani1x, methanol, rho_hat, seed=4, settings=settings)
    assert kept and all(c.rho_kcal_mol > rho_hat for c in kept)
    assert sample_md(ani1x, methanol, np.inf, seed=4, settings=settings) == []


# ---- dimers ---------------------------------------------------------------------------
def _min_image_contact(a, b, box):
    """Closest a-b atom distance over all 27 neighbouring images (brute force)."""
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) * box
    return min(np.linalg.norm(a[:, None] - (b + s)[None], axis=-1).min() for s in shifts)


def test_dimer_pairs_are_whole_close_failing_and_unique(ani1x, ani1x_torchani):
    from anif.sampling import DimerSettings, run_dimer_box

    conformers = [from_smiles("O", seed=1, name="water"), from_smiles("C", seed=1, name="methane")]
    settings = DimerSettings(molecules=10, density=0.5, time_ps=0.05, interval=50, cutoff=3.5)
    rho_hat = 0.2
    candidates, reporter, chosen = run_dimer_box(ani1x, conformers, rho_hat, seed=5, settings=settings,
                                                 keep_frames=True)
    assert sorted(reporter.frames) == [50, 100]
    assert candidates and reporter.tested >= len(candidates)
    pairs = [tuple(c.provenance["molecules"]) for c in candidates]
    assert len(set(pairs)) == len(pairs)
    box = np.full(3, candidates[0].provenance["box_a"])
    extents = [np.linalg.norm(c.coordinates[:, None] - c.coordinates[None], axis=-1).max() for c in conformers]
    for c, (i, j) in zip(candidates, pairs):
        mi, mj = conformers[chosen[i]], conformers[chosen[j]]
        na = mi.n_atoms
        np.testing.assert_array_equal(c.structure.numbers, np.concatenate([mi.numbers, mj.numbers]))
        a, b = c.structure.coordinates[:na], c.structure.coordinates[na:]
        # whole molecules: no intramolecular distance beyond the molecule's size (+ vibration)
        for half, extent in ((a, extents[chosen[i]]), (b, extents[chosen[j]])):
            assert np.linalg.norm(half[:, None] - half[None], axis=-1).max() < extent + 0.5
        # the same atoms as in the box frame, molecule j moved by whole box vectors only
        frame = reporter.frames[c.provenance["step"]]
        start_i = sum(conformers[k].n_atoms for k in chosen[:i])
        start_j = sum(conformers[k].n_atoms for k in chosen[:j])
        np.testing.assert_allclose(a, frame[start_i:start_i + na], atol=1e-9)
        lattice = (b - frame[start_j:start_j + mj.n_atoms]) / box
        np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-9)
        assert np.ptp(np.round(lattice), axis=0).max() == 0
        contact = np.linalg.norm(a[:, None] - b[None], axis=-1).min()
        assert contact <= settings.cutoff
        assert contact == pytest.approx(_min_image_contact(frame[start_i:start_i + na],
                                                           frame[start_j:start_j + mj.n_atoms], box), abs=1e-9)
        assert torchani_rho(ani1x_torchani, c.structure.numbers, c.structure.coordinates) > rho_hat


# ---- DNMS -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def optimised_methanol(ani1x, methanol):
    from anif.sampling.dnms import optimize

    return optimize(ani1x, methanol)


def _torchani_hessian(ani, structure, step=5e-3):
    """Hessian (Ha/A^2) by central differences of torchani energies' autograd forces."""
    x0 = torch.tensor(structure.coordinates, dtype=torch.float64).reshape(-1)
    n = len(x0)
    disp = x0.repeat(2 * n, 1)
    disp[torch.arange(n), torch.arange(n)] += step
    disp[n + torch.arange(n), torch.arange(n)] -= step
    coords = disp.reshape(2 * n, -1, 3).float().requires_grad_(True)
    species = torch.tensor(structure.numbers).repeat(2 * n, 1)
    energy = ani((species, coords)).energies
    grad = torch.autograd.grad(energy.sum(), coords)[0].reshape(2 * n, n).double().numpy()
    h = (grad[:n] - grad[n:]) / (2 * step)
    return 0.5 * (h + h.T)


@pytest.mark.parametrize("temperature,bias", [(300.0, 1.0), (1000.0, 2.0)])
def test_dnms_displacements_match_the_temperature(ani1x, ani1x_torchani, optimised_methanol, temperature, bias):
    from anif.sampling.dnms import KB_HARTREE, DNMSSettings, ensemble_hessian, nms_pool

    s = optimised_methanol
    settings = DNMSSettings(temperature=temperature, pool=4000, bias=bias)
    pool, _ = nms_pool(s, ensemble_hessian(ani1x, s), settings, np.random.default_rng(0))
    h = _torchani_hessian(ani1x_torchani, s)  # independent Hessian
    dx = (pool - s.coordinates).reshape(len(pool), -1)
    harmonic = 0.5 * np.einsum("pi,ij,pj->p", dx, h, dx)
    # ANI-1 NMS: harmonic energy = 1.5 N k T sum(c), sum(c) = u**bias -> mean 1 / (1 + bias)
    ratio = harmonic / (1.5 * s.n_atoms * KB_HARTREE * temperature)
    assert ratio.mean() == pytest.approx(1.0 / (1.0 + bias), rel=0.05)
    assert ratio.max() < 1.05
    # displacements are pure vibrations: the centre of mass does not move
    masses = np.array([{1: 1.008, 6: 12.011, 8: 15.999}[z] for z in s.numbers])
    com_shift = np.einsum("n,pnk->pk", masses, pool - s.coordinates) / masses.sum()
    assert np.abs(com_shift).max() < 1e-3 < np.abs(pool - s.coordinates).max()


def test_dnms_keeps_conformers_as_hot_as_its_draws(ani1x, ani1x_torchani, optimised_methanol):
    """The kept eighth of the pool is not its coldest eighth: their harmonic energies (independent
    Hessian) average 1.5 N k T / (1 + bias), as the draws do."""
    from anif.sampling.dnms import KB_HARTREE, DNMSSettings, dnms_conformers, ensemble_hessian

    s = optimised_methanol
    settings = DNMSSettings(temperature=300.0, pool=2048, keep=256, bias=1.0, min_rmsd=0.02)
    kept = dnms_conformers(s, ensemble_hessian(ani1x, s), settings, np.random.default_rng(4))
    h = _torchani_hessian(ani1x_torchani, s)
    dx = np.array([(c.structure.coordinates - s.coordinates).ravel() for c in kept])
    ratio = 0.5 * np.einsum("pi,ij,pj->p", dx, h, dx) / (1.5 * s.n_atoms * KB_HARTREE * settings.temperature)
    assert len(kept) == 256
    assert 0.45 < ratio.mean() < 0.65  # 0.5, a little more as min_rmsd drops the coldest draws


def _rmsd(x, y):
    """RMSD after optimal superposition (scipy), independent of anif's Kabsch code."""
    x, y = x - x.mean(0), y - y.mean(0)
    rot, _ = Rotation.align_vectors(x, y)
    return np.sqrt(((x - rot.apply(y)) ** 2).sum(1).mean())


def test_dnms_diversity_selection_removes_planted_duplicates(ani1x, optimised_methanol):
    from anif.sampling import DNMSSettings, diversity_select, sample_dnms
    from anif.sampling.dnms import ensemble_hessian, nms_pool

    s = optimised_methanol
    pool, _ = nms_pool(s, ensemble_hessian(ani1x, s), DNMSSettings(pool=40), np.random.default_rng(1))
    originals = [pool[k] for k in diversity_select(pool, 0.05)]
    rng = np.random.default_rng(2)
    planted = [Rotation.random(random_state=k).apply(x) + rng.normal(size=3) + rng.normal(scale=1e-4, size=x.shape)
               for k, x in enumerate(originals[:3])]  # rigidly moved copies (+ 1e-4 A noise) of the first 3
    mixed = np.array(originals[:3] + planted + originals[3:])
    kept = diversity_select(mixed, 0.05)
    assert len(kept) == len(originals)
    assert all(not (3 <= k < 3 + len(planted)) for k in kept)
    for a in range(len(kept)):
        for b in range(a):
            assert _rmsd(mixed[kept[a]], mixed[kept[b]]) >= 0.05

    candidates = sample_dnms(ani1x, s, 0.0, seed=3, settings=DNMSSettings(pool=64, keep=8, optimize=False))
    assert 1 < len(candidates) <= 8
    for a in range(len(candidates)):
        assert _rmsd(candidates[a].structure.coordinates, s.coordinates) >= 0.05  # not the optimum again
        for b in range(a):
            assert _rmsd(candidates[a].structure.coordinates, candidates[b].structure.coordinates) >= 0.05


# ---- configurational search -----------------------------------------------------------
def test_search_skips_with_reasons_and_scores_the_rest(ani1x, ani1x_torchani):
    from anif.sampling import configurational_search

    molecules = [("CCO", "ethanol"), ("c1ccncc1", "pyridine"), ("C1CC(", "broken"), ("CCCl", "chloroethane"),
                 ("C[NH3+]", "methylammonium"), ("[CH2]C", "ethyl")]
    result = configurational_search(ani1x, molecules, rho_hat=0.23, seed=4)
    reasons = dict(result.skipped)
    assert set(reasons) == {"broken", "chloroethane", "methylammonium", "ethyl"}
    assert "invalid SMILES" in reasons["broken"] and "Cl" in reasons["chloroethane"]
    assert "charge" in reasons["methylammonium"] and "radical" in reasons["ethyl"]
    assert [c.structure.name for c in result.scored] == ["ethanol", "pyridine"]
    for c in result.scored:
        assert c.structure.n_atoms == {"ethanol": 9, "pyridine": 11}[c.structure.name]  # with hydrogens
        c.structure.validate(min_distance=0.9)  # embedded: no overlapping atoms
        assert c.rho_kcal_mol == pytest.approx(
            torchani_rho(ani1x_torchani, c.structure.numbers, c.structure.coordinates),
            abs=float32_qbc_atol(c.energy, c.structure.n_atoms))
    assert result.candidates == [c for c in result.scored if c.rho_kcal_mol > 0.23]


def test_shipped_sources_are_valid_chno_molecules():
    from anif.sampling import dipeptides, gdb11_like
    from anif.sampling.search import screen_smiles

    gdb = gdb11_like()
    assert 200 <= len(gdb) <= 1000 and len({s for s, _ in gdb}) == len(gdb)
    assert all(screen_smiles(s, {1, 6, 7, 8}) is None for s, _ in gdb)
    peptides = dict((name, s) for s, name in dipeptides())
    assert len(peptides) == 400
    assert peptides["Gly-Ala"] in ("C[C@H](NC(=O)CN)C(=O)O",)
    assert screen_smiles(peptides["Cys-Gly"], {1, 6, 7, 8}).startswith("element(s) S")


def test_conformers_from_smiles_are_distinct_minima_and_not_mirror_images():
    """[bootstrap] starts: glycine's UFF minima differ in their NH2/COOH orientation; no two kept are the
    same conformer or each other's mirror image (by Kabsch RMSD over all atoms in the given order); one
    start is exactly from_smiles; a rigid molecule has one conformer however many are asked for."""
    from anif.errors import InputError
    from anif.structures import CONFORMER_RMSD, conformers_from_smiles, from_smiles

    def rmsd(a, b):
        a, b = a - a.mean(0), b - b.mean(0)
        u, _, vt = np.linalg.svd(a.T @ b)
        d = np.sign(np.linalg.det(u @ vt))
        r = u @ np.diag([1.0, 1.0, d]) @ vt
        return float(np.sqrt(((a @ r - b) ** 2).sum(1).mean()))

    gly = conformers_from_smiles("NCC(=O)O", 3, seed=7, name="gly")
    assert [s.name for s in gly] == ["gly", "gly #2", "gly #3"]
    for i, a in enumerate(gly):
        assert a.numbers.tolist() == gly[0].numbers.tolist()
        for b in gly[i + 1:]:  # in atom order, as ANI and the oracle see them, and mirrored
            assert min(rmsd(a.coordinates, b.coordinates), rmsd(a.coordinates * [-1, 1, 1], b.coordinates)) > CONFORMER_RMSD
    one = conformers_from_smiles("NCC(=O)O", 1, seed=7)
    np.testing.assert_array_equal(one[0].coordinates, from_smiles("NCC(=O)O", seed=7).coordinates)
    assert len(conformers_from_smiles("C=O", 4, seed=7)) == 1
    with pytest.raises(InputError, match="invalid SMILES"):
        conformers_from_smiles("C1CC(", 3)


def test_random_dimers_touch_at_the_requested_contact():
    from anif.sampling import random_dimers

    monomers = [from_smiles("O", seed=1, name="water"), from_smiles("CC", seed=1, name="ethane")]
    dimers = random_dimers(monomers, 20, seed=3, contact=(2.0, 3.5))
    for d in dimers:
        first = {"water": 3, "ethane": 8}[d.name.split("+")[0]]
        contact = np.linalg.norm(d.coordinates[:first, None] - d.coordinates[None, first:], axis=-1).min()
        assert 2.0 - 1e-3 <= contact <= 3.5 + 1e-3
    assert len({d.name for d in dimers}) > 1


# ---- CLI ------------------------------------------------------------------------------
def _anif(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "anif", *args], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(__file__)))


def test_cli_search_writes_candidates_with_rho_and_provenance(ani1x, ani1x_torchani, tmp_path):
    import json

    from anif.datasets.store import DatasetStore

    out = tmp_path / "search.h5"
    r = _anif("sample", "search", "CCO", "C#N", "CCCl", "--gdb11", "6", "--model", "ani1x", "--rho-hat", "0.1",
              "--seed", "2", "--out", str(out), "--workers", "1", "--chunk", "4")
    assert r.returncode == 0, r.stderr
    assert "skipped CCCl: element(s) Cl" in r.stderr
    store = DatasetStore(out, "r")
    assert store.num_conformers() >= 1
    for _, data in store:
        for k in range(len(data["energies"])):
            rho = torchani_rho(ani1x_torchani, data["species"], data["coordinates"][k])
            atol = float32_qbc_atol(data["energies"][k], len(data["species"]))
            assert data["rho_kcal_mol"][k] == pytest.approx(rho, abs=atol) and rho > 0.1
            prov = json.loads(data["provenance"][k])
            assert prov["sampler"] == "search" and prov["source"] in ("input", "gdb11")


def test_cli_md_from_the_registry_writes_frames_with_rho(ani1x_torchani, tmp_path):
    """`anif sample md` (made from the md sampler's registration): one Langevin trajectory's frames,
    each with its rho recomputed by torchani, and the frame settings given as flags."""
    import json

    from anif.datasets.store import DatasetStore

    out = tmp_path / "md.h5"
    r = _anif("sample", "md", "--smiles", "CO", "--frames", "3", "--equilibration-ps", "0.01", "--interval-ps", "0.01",
              "--temperature", "500", "--rho-hat", "0", "--seed", "4", "--out", str(out), "--workers", "0")
    assert r.returncode == 0, r.stderr
    (group, data), = DatasetStore(out, "r")
    assert len(data["energies"]) == 3 and set(data["sampler"]) == {"md"}
    for k in range(3):
        rho = torchani_rho(ani1x_torchani, data["species"], data["coordinates"][k])
        assert data["rho_kcal_mol"][k] == pytest.approx(rho, abs=float32_qbc_atol(data["energies"][k], 6)) and rho > 0
        assert json.loads(data["provenance"][k])["seed"] == int(data["seed"][k])
    assert len({c.tobytes() for c in data["coordinates"]}) == 3


def test_cli_bad_input_is_one_line_error(tmp_path):
    r = _anif("sample", "rts", "--smiles", "C1CC(", "--rho-hat", "0.2", "--out", str(tmp_path / "x.h5"))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "error: no usable molecule in the input"
    assert "Traceback" not in r.stderr


# ---- candidate store ------------------------------------------------------------------
def test_write_candidates_keeps_each_atom_order_in_its_own_group(tmp_path):
    import json

    from anif.datasets.store import DatasetStore
    from anif.sampling import Candidate, write_candidates
    from anif.structures import Structure

    co = Structure([6, 8, 1, 1, 1, 1], np.arange(18.0).reshape(6, 3), name="a")
    oc = Structure([8, 6, 1, 1, 1, 1], np.arange(18.0).reshape(6, 3) + 1, name="b")
    out = tmp_path / "c.h5"
    write_candidates(out, [Candidate(co, 0.3, -115.0, {"sampler": "dnms", "source": "a", "seed": 1})])
    co_moved = Structure(co.numbers, co.coordinates + 0.5, name="a")
    assert write_candidates(out, [Candidate(oc, 0.4, -115.1, {"sampler": "rts", "source": "b", "seed": 2, "step": 9}),
                                  Candidate(co_moved, 0.5, -115.2, {"sampler": "rts", "source": "a", "seed": 3})]) == 2
    assert write_candidates(out, [Candidate(co, 0.6, -115.0, {"sampler": "rts", "source": "a", "seed": 4})]) == 0
    store = DatasetStore(out, "r")
    assert sorted(store.groups()) == ["CH4O", "CH4O_2"] and store.num_conformers() == 3
    first, second = store.read("CH4O"), store.read("CH4O_2")
    np.testing.assert_array_equal(first["species"], [6, 8, 1, 1, 1, 1])
    np.testing.assert_allclose(first["rho_kcal_mol"], [0.3, 0.5])
    np.testing.assert_allclose(second["coordinates"][0], oc.coordinates)
    assert [str(x) for x in first["sampler"]] == ["dnms", "rts"] and json.loads(second["provenance"][0])["step"] == 9
    from anif.datasets.store import CANDIDATE_METHOD  # the energies are placeholders, not labels

    assert [str(x) for x in first["method"]] == [CANDIDATE_METHOD] * 2
