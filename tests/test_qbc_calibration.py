"""rho_hat calibration: exact on synthetic arrays, and end to end through `anif qbc calibrate`."""

import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anif.errors import InputError
from anif.accuracy.calibration import calibrate
from anif.units import HARTREE_TO_KCAL_MOL as KCAL

ROOT = Path(__file__).resolve().parents[1]


def test_calibrate_known_threshold():
    rng = np.random.default_rng(0)
    bad_rho = np.linspace(0.1, 1.0, 100)  # 100 bad structures; 98% capture keeps the top 98
    good_rho = rng.uniform(0.0, 0.5, 900)
    rho = np.concatenate([bad_rho, good_rho])
    worst = np.concatenate([rng.uniform(1.6, 5.0, 100), rng.uniform(0.0, 1.4, 900)])
    energy_error = rng.normal(size=1000) * (1 + rho)
    order = rng.permutation(1000)
    cal = calibrate(rho[order], worst[order], energy_error[order], error_bound=1.5, capture=0.98)
    step = 0.9 / 99
    assert cal.rho_hat == pytest.approx(0.1 + 1.5 * step, rel=1e-12)  # between the 99th and 98th largest
    assert cal.n_bad == 100 and cal.captured == pytest.approx(0.98)
    above = rho > cal.rho_hat
    assert cal.selected_fraction == pytest.approx(above.mean())
    assert cal.rmse_above == pytest.approx(np.sqrt(np.mean(energy_error[above] ** 2)))
    assert cal.rmse_below == pytest.approx(np.sqrt(np.mean(energy_error[~above] ** 2)))
    full = calibrate(rho, worst, energy_error, capture=1.0)
    assert full.captured == 1.0 and 0.099 < full.rho_hat < 0.1
    with pytest.raises(InputError, match="nothing to calibrate"):
        calibrate(rho, worst * 0, energy_error)


def test_qbc_calibrate_cli_on_synthetic_labels(tmp_path, monkeypatch, capsys, s66x8_path, ani1x_torchani, one_torch_thread):
    """Reference energies are built so that exactly the chosen structures are 'bad'; rho from torchani."""
    import h5py

    from anif.cli import main
    from anif.datasets.store import DatasetStore

    model = copy.deepcopy(ani1x_torchani).double()
    rng = np.random.default_rng(1)
    data = tmp_path / "synthetic.h5"
    store = DatasetStore(data)
    rhos, bads = [], []
    with h5py.File(s66x8_path, "r") as f:
        for name in sorted(f["s66x8"])[:12]:
            g = f["s66x8"][name]
            z = torch.tensor([{"H": 1, "C": 6, "N": 7, "O": 8}[s.decode()] for s in g["species"][()]])
            x = torch.tensor(g["coordinates"][()], dtype=torch.float64)
            with torch.no_grad():
                members = model((z.expand(len(x), -1), x), ensemble_values=True).energies.numpy()  # (M, C)
            n = len(z)
            rho = members.std(0, ddof=1) / math.sqrt(n) * KCAL
            bad = rng.random(len(x)) < 0.4
            # worst member error per sqrt(atom) = 3.0 (bad) or 0.5 (good): E_ref = min member - target
            target = np.where(bad, 3.0, 0.5) * math.sqrt(n) / KCAL - (members.max(0) - members.min(0))
            target = np.maximum(target, 0.0)
            e_ref = members.min(0) - target
            worst = np.abs(members - e_ref).max(0) / math.sqrt(n) * KCAL
            bad = worst > 1.5
            store.append(name.replace("/", "_"), z.numpy(), x.numpy(), e_ref)
            rhos.append(rho)
            bads.append(bad)
    rho, bad = np.concatenate(rhos), np.concatenate(bads)
    assert 10 < bad.sum() < len(bad) - 10
    top = np.sort(rho[bad])[::-1]
    k = math.ceil(0.9 * top.size - 1e-9)
    expected = 0.5 * (top[k - 1] + top[k])

    monkeypatch.setattr(sys, "argv", ["anif", "qbc", "calibrate", "--model", "ani1x", "--data", str(data),
                                      "--capture", "0.9", "--json-out", str(tmp_path / "cal.json"),
                                      "--plot", str(tmp_path / "cal.png")])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    out = capsys.readouterr().out
    assert "rho_hat" in out and "selected" in out and "RMSE above" in out
    cal = json.loads((tmp_path / "cal.json").read_text())
    assert cal["rho_hat"] == pytest.approx(expected, rel=1e-6)
    assert cal["n_bad"] == int(bad.sum())
    assert cal["selected_fraction"] == pytest.approx(np.mean(rho > expected))
    assert (tmp_path / "cal.png").read_bytes()[:4] == b"\x89PNG"


def test_qbc_ranking_counts_what_rho_catches():
    """Spearman of rho with |E - E_ref| / sqrt(N) against scipy; the capture fraction counted by hand."""
    from scipy.stats import spearmanr

    from anif.accuracy.metrics import MoleculePrediction, qbc_ranking
    from anif.datasets.comp6 import Comp6Molecule
    from anif.units import HARTREE_TO_KCAL_MOL

    rng = np.random.default_rng(3)
    species = np.array([6, 1, 1, 1, 1])  # N = 5
    error_kcal = np.array([0.5, 4.0, -5.0, 3.0, -0.2, 6.0])  # per sqrt(5): 0.22, 1.79, 2.24, 1.34, 0.09, 2.68
    rho = np.array([0.1, 0.5, 0.2, 0.3, 0.05, 0.9])
    reference = -40.0 + rng.normal(0, 1e-3, 6)
    molecule = Comp6Molecule("t", "methane", species, np.zeros((6, 5, 3)), reference, None)
    prediction = MoleculePrediction(molecule, reference + error_kcal / HARTREE_TO_KCAL_MOL, None, np.zeros((2, 6)), rho)
    ranking = qbc_ranking([prediction], rho_hat=0.3)
    assert ranking.n_bad == 3  # errors per sqrt(atom) above 1.5: 1.79, 2.24, 2.68
    assert ranking.captured == pytest.approx(2 / 3)  # rho 0.5 and 0.9 exceed 0.3; 0.2 does not
    assert ranking.spearman == pytest.approx(spearmanr(rho, np.abs(error_kcal)).statistic)
    lo, hi = ranking.spearman_ci95
    assert lo <= ranking.spearman <= hi
    flat = MoleculePrediction(molecule, reference, None, np.zeros((2, 6)), np.zeros(6))
    assert qbc_ranking([flat], 0.3).spearman is None and qbc_ranking([flat], 0.3).captured is None
    assert qbc_ranking([flat], 0.3).spearman_ci95 is None


def test_spearman_interval_is_the_bootstrap_of_scipys_spearman():
    """The vectorised interval equals scipy's spearmanr over the same resamples, and says what
    24 structures can tell: a weak true correlation reads anywhere in a ~0.8 wide window."""
    from scipy.stats import spearmanr

    from anif.accuracy.metrics import spearman_interval

    rng = np.random.default_rng(7)
    rho = rng.lognormal(-1.5, 0.5, 24)
    error = rho * rng.lognormal(0.0, 1.0, 24)  # rank correlation about 0.4, as the quickstart's
    draws = 400
    idx = np.random.default_rng(0).integers(0, 24, size=(draws, 24))
    by_hand = np.array([spearmanr(rho[i], error[i]).statistic for i in idx])
    expected = np.percentile(by_hand[np.isfinite(by_hand)], [2.5, 97.5])
    lo, hi = spearman_interval(rho, error, draws=draws, seed=0)
    np.testing.assert_allclose([lo, hi], expected, atol=1e-12)
    assert lo < spearmanr(rho, error).statistic < hi and 0.5 < hi - lo < 1.1
    assert spearman_interval(rho, error, draws=draws) == (lo, hi)  # seeded: a report shows one interval
    assert spearman_interval(rho, 3 * rho) == pytest.approx((1.0, 1.0))
    assert spearman_interval(rho, np.ones(24)) is None and spearman_interval(rho[:3], error[:3]) is None


def test_calibrated_spearman_is_the_mean_over_draws_of_a_calibrated_committees():
    """What a committee whose errors are exactly as spread as its rho would show: scipy's Spearman of rho
    against rho |z| averaged over the same seeded draws; high where rho spans decades, near zero where
    it hardly varies, so a measured correlation can be read against what its test set allows."""
    from scipy.stats import spearmanr

    from anif.accuracy.metrics import calibrated_spearman

    rng = np.random.default_rng(3)
    rho = rng.lognormal(-1.5, 0.5, 48)
    z = np.abs(np.random.default_rng(0).standard_normal((50, 48)))
    by_hand = np.mean([spearmanr(rho, rho * zz).statistic for zz in z])
    assert calibrated_spearman(rho, draws=50) == pytest.approx(by_hand, abs=1e-12)
    assert 0.3 < calibrated_spearman(rho) < 0.6
    assert calibrated_spearman(rng.lognormal(0.0, 3.0, 48)) > 0.85
    assert abs(calibrated_spearman(rng.lognormal(0.0, 0.01, 48))) < 0.1
    assert calibrated_spearman(np.ones(48)) is None and calibrated_spearman(rho[:3]) is None


def _each_members_force_spread(ani1x_torchani, molecule) -> np.ndarray:
    """Per conformer, kcal/mol/A: the per-atom norm of the standard deviation of the forces that each
    released member gives, run alone through torchani, averaged over atoms."""
    species = torch.as_tensor(np.asarray(molecule.species))[None].repeat(molecule.n_conformers, 1)
    forces = []
    for i in range(8):
        coords = torch.tensor(molecule.coordinates, dtype=torch.float64, requires_grad=True)
        energy = ani1x_torchani[i].double()((species, coords)).energies
        forces.append(-torch.autograd.grad(energy.sum(), coords)[0].numpy() * KCAL)
    return np.linalg.norm(np.std(forces, axis=0, ddof=1), axis=-1).mean(-1)


def test_force_spread_is_the_spread_of_each_members_own_forces(s66x8_path, ani1x_torchani, one_torch_thread):
    """[qbc] measure = "forces" and the force_spearman of every evaluation: anif's fused ensemble gives each
    member's forces in one pass; their disagreement equals the released members' run one at a time, in one
    molecule's batch and in a padded batch of different sizes, and the ensemble's forces do not change."""
    from scipy.stats import spearmanr

    from anif.accuracy import predict, qbc_ranking
    from anif.datasets.comp6 import read_comp6_file
    from anif.models import load_model, score_force_spread
    from anif.structures import Structure

    molecules = [m for m in read_comp6_file(s66x8_path)[:6] if m.n_conformers][:3]
    assert len({len(m.species) for m in molecules}) > 1  # the padded batch mixes sizes
    expected = [_each_members_force_spread(ani1x_torchani, m) for m in molecules]
    model = load_model("ani1x").double()
    got = predict(model, molecules, progress=False, member_forces=True)
    plain = predict(model, molecules, progress=False)
    for p, q, e in zip(got, plain, expected):
        np.testing.assert_allclose(p.force_spread_kcal_mol_a, e, rtol=1e-6)
        np.testing.assert_allclose(p.forces, q.forces, rtol=0, atol=1e-12)
        assert q.force_spread_kcal_mol_a is None and (e > 0.1).all()
    structures = [Structure(np.asarray(m.species), x) for m in molecules for x in m.coordinates]
    order = np.random.default_rng(0).permutation(len(structures))
    batched = score_force_spread(model, [structures[i] for i in order], batch_size=5)
    np.testing.assert_allclose(batched, np.concatenate(expected)[order], rtol=1e-6)
    err = np.concatenate([np.abs(p.energy_error_kcal) / np.sqrt(len(p.molecule.species)) for p in got])
    ranking = qbc_ranking(got, 0.23)
    assert ranking.force_spearman == pytest.approx(spearmanr(np.concatenate(expected), err).statistic, abs=1e-9)
    assert qbc_ranking(plain, 0.23).force_spearman is None and ranking.spearman == qbc_ranking(plain, 0.23).spearman


def test_qbc_measures_spreads_match_anifs_rho_and_each_members_own_forces(s66x8_path, ani1x_torchani, one_torch_thread):
    """scripts/qbc_measures.py: rho and the energy error are the campaign's (anif.accuracy.predict on the
    fused ensemble); the force spread is the per-atom norm of the standard deviation of the forces that each
    released member, run alone through torchani, gives."""
    from anif.accuracy import predict
    from anif.datasets.comp6 import read_comp6_file
    from anif.models.ensemble import load_ani, load_model

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from qbc_measures import measures, spreads
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    molecules = read_comp6_file(s66x8_path)[:2]
    got = spreads(load_ani("ani1x").double(), molecules[0])
    p = predict(load_model("ani1x").double(), molecules[:1], progress=False)[0]
    n = len(molecules[0].species)
    np.testing.assert_allclose(got["rho"], p.rho_kcal_mol, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["energy_error"], np.abs(p.energy_error_kcal) / np.sqrt(n), atol=1e-5)
    np.testing.assert_allclose(got["force_spread"], _each_members_force_spread(ani1x_torchani, molecules[0]), rtol=1e-6)
    assert (got["force_spread"] > 0).all() and (got["rho"] > 0).all()
    m = measures(load_ani("ani1x").double(), molecules)
    assert set(m["pooled"]) == {"rho~E", "forces~E", "forces~F"} and all(-1 <= v <= 1 for v in m["pooled"].values())
    assert set(m["within"]) == {x.name for x in molecules}
