"""Accuracy against reference labels (the COMP6 benchmark): the paper's E, dE and F errors for
any ensemble, tables and figures.

Metrics (Smith et al., J. Chem. Phys. 148, 241733, COMP6), each as MAE and RMSE:

- ``E``: ensemble-mean total energy minus reference, one value per conformer (kcal/mol);
- ``dE``: error of the energy difference of every conformer pair (i < j) within each
  molecule's set, (E_i - E_j) - (E_i^ref - E_j^ref) (kcal/mol);
- ``F``: error of every Cartesian force component (kcal/mol/A).

With ``max_energy`` only conformers whose reference energy lies within that many kcal/mol of
their molecule's minimum reference energy count (pairs too). ``overall`` pools the values of
all subsets. Evaluation runs in float64 by default so ~-500 Hartree totals carry no float32
rounding (about 0.01 kcal/mol) into the metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..datasets.comp6 import Comp6Molecule
from ..errors import InputError
from ..models.ensemble import check_supported, evaluate
from ..progress import step_progress
from ..units import HARTREE_TO_KCAL_MOL
from .settings import PAPER_ERROR_BOUND

METRIC_KEYS = ("E_mae", "E_rmse", "dE_mae", "dE_rmse", "F_mae", "F_rmse", "n_conformers")


@dataclass
class MoleculePrediction:
    """Ensemble results for one molecule's conformers (Hartree, Hartree/Angstrom)."""

    molecule: Comp6Molecule
    energy: np.ndarray  # (C,)
    forces: Optional[np.ndarray]  # (C, N, 3)
    member_energies: np.ndarray  # (M, C)
    rho_kcal_mol: np.ndarray  # (C,)
    force_spread_kcal_mol_a: Optional[np.ndarray] = None  # (C,) the members' force disagreement, with member_forces

    @property
    def energy_error_kcal(self) -> np.ndarray:
        return (self.energy - self.molecule.energies) * HARTREE_TO_KCAL_MOL

    @property
    def worst_member_error_per_sqrt_atom(self) -> np.ndarray:
        """max over members |E_m - E_ref| / sqrt(N), kcal/mol (the paper's Fig. 1 ordinate)."""
        worst = np.abs(self.member_energies - self.molecule.energies[None]).max(0)
        return worst * HARTREE_TO_KCAL_MOL / math.sqrt(self.molecule.species.shape[0])


def predict(
    model,
    molecules: Sequence[Comp6Molecule],
    forces: bool = True,
    atoms_per_batch: int = 8192,
    progress: bool = True,
    member_forces: bool = False,
) -> list[MoleculePrediction]:
    """Evaluate the ensemble on every conformer, batching conformers of one molecule; with
    ``member_forces`` also the members' force disagreement (:func:`anif.models.ensemble.force_spread`)."""
    for m in molecules:  # refuse before computing anything
        try:
            check_supported(model, m.species)
        except InputError as exc:
            raise type(exc)(f"{m.subset} {m.name}: {exc}") from None
    out, done = [], 0
    total = sum(m.n_conformers for m in molecules)
    with step_progress("evaluating conformers", total, enabled=progress, unit="conformers") as advance:
        for m in molecules:
            n_atoms = m.species.shape[0]
            step = max(1, atoms_per_batch // n_atoms)
            parts = []
            for start in range(0, m.n_conformers, step):
                coords = m.coordinates[start : start + step]
                parts.append(evaluate(model, np.tile(m.species, (coords.shape[0], 1)), coords, forces=forces,
                                      member_forces=member_forces))
                done += coords.shape[0]
                advance(done)
            out.append(
                MoleculePrediction(
                    molecule=m,
                    energy=np.concatenate([p.energy for p in parts]),
                    forces=np.concatenate([p.forces for p in parts]) if forces else None,
                    member_energies=np.concatenate([p.member_energies for p in parts], axis=1),
                    rho_kcal_mol=np.concatenate([p.rho_kcal_mol for p in parts]),
                    force_spread_kcal_mol_a=np.concatenate([p.force_sigma_kcal_mol_a for p in parts])
                    if member_forces else None,
                )
            )
    return out


def energy_window(reference: np.ndarray, max_energy: Optional[float]) -> np.ndarray:
    """Conformers within ``max_energy`` kcal/mol of the molecule's lowest reference energy."""
    if max_energy is None:
        return np.ones(reference.shape, dtype=bool)
    return (reference - reference.min()) * HARTREE_TO_KCAL_MOL <= max_energy


def _pair_errors(err: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(err.shape[0], k=1)
    return err[i] - err[j]


def error_samples(predictions: Sequence[MoleculePrediction], max_energy: Optional[float] = None) -> dict[str, dict]:
    """Per subset: arrays of E, dE and F errors (kcal/mol, kcal/mol/A) inside the window."""
    samples: dict[str, dict[str, list]] = {}
    for p in predictions:
        keep = energy_window(p.molecule.energies, max_energy)
        err = p.energy_error_kcal[keep]
        s = samples.setdefault(p.molecule.subset, {"E": [], "dE": [], "F": [], "F_ref": [], "F_pred": []})
        s["E"].append(err)
        s["dE"].append(_pair_errors(err))
        if p.forces is not None and p.molecule.forces is not None:
            ref = p.molecule.forces[keep].ravel() * HARTREE_TO_KCAL_MOL
            pred = p.forces[keep].ravel() * HARTREE_TO_KCAL_MOL
            ok = np.isfinite(ref)  # anif datasets mark conformers without forces with NaN
            s["F"].append(pred[ok] - ref[ok])
            s["F_ref"].append(ref[ok])
            s["F_pred"].append(pred[ok])
    return {name: {k: np.concatenate(v) if v else np.zeros(0) for k, v in s.items()} for name, s in samples.items()}


def _mae_rmse(values: np.ndarray) -> tuple[Optional[float], Optional[float]]:
    if values.size == 0:
        return None, None
    return float(np.abs(values).mean()), float(np.sqrt(np.mean(values**2)))


def metrics_from_samples(samples: dict[str, dict]) -> dict[str, dict]:
    """MAE/RMSE per subset and ``overall`` (all subsets pooled); None where nothing counts."""
    pooled = {k: np.concatenate([s[k] for s in samples.values()]) for k in ("E", "dE", "F")}
    out = {}
    for name, s in list(samples.items()) + [("overall", pooled)]:
        row = {}
        for key in ("E", "dE", "F"):
            row[f"{key}_mae"], row[f"{key}_rmse"] = _mae_rmse(s[key])
        row["n_conformers"] = int(s["E"].size)
        out[name] = row
    return out


def compute_metrics(predictions: Sequence[MoleculePrediction], max_energy: Optional[float] = None) -> dict[str, dict]:
    return metrics_from_samples(error_samples(predictions, max_energy))


@dataclass
class QBCRanking:
    """How well rho ranks the ensemble mean's real errors (the paper's Fig. 1).

    ``spearman``: rank correlation of rho with |E - E_ref| / sqrt(N) (None when either is constant);
    ``captured``: fraction of the structures with |E - E_ref| / sqrt(N) > ``error_bound`` whose
    rho > rho_hat (None when there are none); ``n_bad`` their number; ``spearman_ci95``: the
    Spearman correlation's 95% bootstrap interval (:func:`spearman_interval`);
    ``spearman_calibrated``: a calibrated committee's on the same structures (:func:`calibrated_spearman`);
    ``force_spearman``: the same rank correlation for the members' force disagreement instead of rho
    (None without it).
    """

    spearman: Optional[float]
    captured: Optional[float]
    n_bad: int
    spearman_ci95: Optional[tuple[float, float]] = None
    spearman_calibrated: Optional[float] = None
    force_spearman: Optional[float] = None


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``x`` with the same row of ``y`` (rows broadcast); rows
    where either side is constant have none and are dropped."""
    from scipy.stats import rankdata

    a, b = rankdata(x, axis=-1), rankdata(y, axis=-1)
    a -= a.mean(axis=-1, keepdims=True)
    b -= b.mean(axis=-1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    return (a * b).sum(axis=-1)[norm > 0] / norm[norm > 0]


def spearman_interval(rho, error, level: float = 0.95, draws: int = 2000,
                      seed: int = 0) -> Optional[tuple[float, float]]:
    """Percentile bootstrap interval of the Spearman correlation of ``rho`` with ``error``: how far
    it could move by the draw of the test structures alone (on 24 structures about 0.8 wide).
    Seeded, so a report shows the same interval every time; None with fewer than 4 structures
    or when either is constant."""
    rho, error = np.asarray(rho, dtype=float), np.asarray(error, dtype=float)
    if rho.size < 4 or np.ptp(rho) == 0 or np.ptp(error) == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, rho.size, size=(draws, rho.size))
    r = _spearman_rows(rho[idx], error[idx])  # resamples with a constant side have no correlation
    tail = 50.0 * (1.0 - level)
    return float(np.percentile(r, tail)), float(np.percentile(r, 100.0 - tail))


def calibrated_spearman(rho, draws: int = 2000, seed: int = 0) -> Optional[float]:
    """The Spearman correlation of ``rho`` with the error that a calibrated committee would reach on
    these structures: the mean over seeded draws of Spearman(rho, rho |z|), z standard normal (each
    error as large as its rho says, no more, no less). A test set whose rho spans a narrow range
    caps what a committee can show (0.4-0.5 when log rho has a standard deviation of 0.5, 0.6 at
    1.0); compare the measured correlation with it. None with fewer than 4 structures or a constant rho."""
    rho = np.asarray(rho, dtype=float)
    if rho.size < 4 or np.ptp(rho) == 0:
        return None
    errors = rho * np.abs(np.random.default_rng(seed).standard_normal((draws, rho.size)))
    return float(np.mean(_spearman_rows(rho, errors)))


def qbc_ranking(predictions: Sequence[MoleculePrediction], rho_hat: float,
                error_bound: float = PAPER_ERROR_BOUND) -> QBCRanking:
    """:class:`QBCRanking` over all conformers of ``predictions``."""
    rho = np.concatenate([p.rho_kcal_mol for p in predictions])
    err = np.concatenate([np.abs(p.energy_error_kcal) / math.sqrt(p.molecule.species.shape[0]) for p in predictions])
    spearman = spearman_or_none(rho, err)
    bad = err > error_bound
    captured = float(np.mean(rho[bad] > rho_hat)) if bad.any() else None
    spread = [p.force_spread_kcal_mol_a for p in predictions]
    return QBCRanking(spearman, captured, int(bad.sum()), None if spearman is None else spearman_interval(rho, err),
                      calibrated_spearman(rho), None if any(s is None for s in spread) else
                      spearman_or_none(np.concatenate(spread), err))


def spearman_or_none(x: np.ndarray, y: np.ndarray) -> Optional[float]:
    """Spearman correlation, None when either side is constant (or has fewer than 2 values)."""
    from scipy.stats import spearmanr

    return None if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0 else float(spearmanr(x, y).statistic)


# ---- figures --------------------------------------------------------------------------
def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_force_parity(samples: dict[str, dict], path: Path, model_name: str) -> Path:
    """Density of predicted vs reference force components (paper Fig. 3 style)."""
    plt = _figure()
    from matplotlib.colors import LogNorm

    ref = np.concatenate([s["F_ref"] for s in samples.values()])
    pred = np.concatenate([s["F_pred"] for s in samples.values()])
    if ref.size == 0:
        raise InputError("no reference forces in the data: cannot draw the force parity plot")
    mae, rmse = _mae_rmse(pred - ref)
    lim = float(np.percentile(np.abs(np.concatenate([ref, pred])), 99.9)) * 1.05
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=150)
    h = ax.hist2d(ref, pred, bins=150, range=[[-lim, lim], [-lim, lim]], norm=LogNorm(), cmap="viridis", cmin=1)
    fig.colorbar(h[3], ax=ax, label="force components per bin")
    ax.plot([-lim, lim], [-lim, lim], color="0.3", lw=0.8, ls="--")
    ax.set_xlabel("reference force component (kcal/mol/Å)")
    ax.set_ylabel(f"{model_name} force component (kcal/mol/Å)")
    ax.set_title(f"Force parity, {', '.join(samples)}")
    ax.text(0.04, 0.96, f"MAE {mae:.2f}\nRMSE {rmse:.2f}\nn = {ref.size:,}", transform=ax.transAxes, va="top",
            bbox=dict(boxstyle="round", fc="white", ec="0.7"))
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_error_vs_rho(
    rho: np.ndarray, worst_error: np.ndarray, rho_hat: float, error_bound: float, path: Path, title: str
) -> Path:
    """Density of worst member error per sqrt(atom) vs rho, with the QBC threshold (Fig. 1 style)."""
    plt = _figure()
    from matplotlib.colors import LogNorm

    bad = worst_error > error_bound
    caught = float(np.mean(rho[bad] > rho_hat)) if bad.any() else float("nan")
    selected = float(np.mean(rho > rho_hat))
    x = np.clip(rho, 1e-4, None)
    y = np.clip(worst_error, 1e-4, None)
    n_bins = int(np.clip(1.5 * math.sqrt(x.size), 20, 120))
    xbins = np.logspace(math.log10(min(x.min(), rho_hat) / 1.2), math.log10(max(x.max(), rho_hat) * 1.2), n_bins)
    ybins = np.logspace(math.log10(min(y.min(), error_bound) / 1.2), math.log10(max(y.max(), error_bound) * 1.2), n_bins)
    fig, ax = plt.subplots(figsize=(5.6, 4.6), dpi=150)
    h = ax.hist2d(x, y, bins=[xbins, ybins], norm=LogNorm(), cmap="viridis", cmin=1)
    fig.colorbar(h[3], ax=ax, label="structures per bin")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axvline(rho_hat, color="tab:red", lw=1.2, label=f"ρ̂ = {rho_hat:.3g} kcal/mol")
    ax.axhline(error_bound, color="0.3", lw=1.0, ls="--", label=f"error bound {error_bound:g} kcal/mol")
    ax.set_xlabel("ρ = σ/√N  (kcal/mol)")
    ax.set_ylabel("worst member |E − E_ref| / √N  (kcal/mol)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.text(0.03, 0.97, f"bad above bound caught: {caught:.1%}\nselected (ρ > ρ̂): {selected:.1%}\nn = {rho.size:,}",
            transform=ax.transAxes, va="top", fontsize=8, bbox=dict(boxstyle="round", fc="white", ec="0.7"))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_subset_bars(metrics: dict[str, dict], path: Path, title: str) -> Path:
    """MAE (solid) and RMSE (hatched) of E, dE, F for every subset and overall."""
    plt = _figure()
    names = list(metrics)
    kinds = [("E", "E (kcal/mol)"), ("dE", "ΔE (kcal/mol)"), ("F", "F (kcal/mol/Å)")]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(names) + 2), 4.8), dpi=150)
    width = 0.13
    colors = ("tab:blue", "tab:orange", "tab:green")
    x = np.arange(len(names))
    for k, ((key, label), color) in enumerate(zip(kinds, colors)):
        for j, stat in enumerate(("mae", "rmse")):
            vals = [metrics[n][f"{key}_{stat}"] or 0.0 for n in names]
            offset = (2 * k + j - 2.5) * width
            bars = ax.bar(x + offset, vals, width, color=color, alpha=1.0 if stat == "mae" else 0.55,
                          hatch=None if stat == "mae" else "//", edgecolor="white",
                          label=f"{label} {stat.upper()}")
            ax.bar_label(bars, fmt="%.2f", fontsize=6, rotation=90, padding=2)
    ax.set_xticks(x, [f"{n}\n({metrics[n]['n_conformers']} conf.)" for n in names])
    ax.set_ylabel("MAE (solid), RMSE (hatched)")
    ax.set_title(title)
    ax.margins(y=0.12)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
