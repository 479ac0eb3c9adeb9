"""DNMS: diverse normal-mode sampling (ANI-1 normal-mode sampling + diversity selection).

From an optimised geometry and its Cartesian Hessian (the ensemble's own, by central finite
differences of the ensemble forces, or a reference Hessian passed in), the 3N-6 (3N-5)
vibrational modes q_i with force constants K_i are found. As in ANI-1 (Smith, Isayev,
Roitberg, Chem. Sci. 8, 3192 (2017)) each conformer gets random coefficients c_i >= 0 with
sum c_i = s <= 1 and displacements R_i = +-sqrt(3 c_i N_a k_B T / K_i) along q_i, so its
harmonic energy is sum 1/2 K_i R_i^2 = 1.5 N_a k_B T s. The c_i are a uniform point of the
simplex (Dirichlet(1, ..., 1)) scaled by s = u**bias with u uniform in [0, 1]: bias = 1 is
uniform in s, bias > 1 pulls the draws towards equilibrium (E[s] = 1 / (1 + bias)).

Diversity selection: the pool is visited in draw order and a conformer is kept only if its
RMSD after optimal superposition (Kabsch, same atom order) to the optimised geometry and to
every conformer kept so far is >= ``min_rmsd``; near-duplicates are dropped. The draw order is
random, so the kept conformers' energies follow the draws' (temperature and bias): visiting
the pool coldest first, as before, kept only its coldest eighth (methylamine's bootstrap
conformers at 300 K lay 0.1-0.6 kcal/mol above the minimum, its 500 K MD frames 5-11). The
kept conformers are QBC-tested in one batch and those with rho > rho_hat are returned.
"""

from __future__ import annotations


import numpy as np
from scipy.optimize import minimize

from ..errors import AnifError
from ..geometry import kabsch_rmsd
from ..models import evaluate
from ..structures import Structure
from ..vibrations import mode_directions
from .candidates import Candidate, score
from .settings import DNMSSettings

#: Boltzmann constant in Hartree per kelvin. Kept as written: openmm.unit's k_B / E_h differs in the
#: 10th digit, enough to change which conformers a seeded campaign draws.
KB_HARTREE = 3.166811563e-6


def optimize(model, structure: Structure, fmax: float = 5e-4, max_steps: int = 500) -> Structure:
    """Minimise the ensemble energy (L-BFGS) until the largest force component < fmax (Ha/A)."""
    species = structure.numbers[None]

    def energy_and_gradient(x):
        r = evaluate(model, species, x.reshape(1, -1, 3))
        return r.energy[0], -r.forces[0].ravel()

    res = minimize(energy_and_gradient, structure.coordinates.ravel(), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_steps, "gtol": fmax})
    return Structure(structure.numbers, res.x.reshape(-1, 3), name=structure.name)


def ensemble_hessian(model, structure: Structure, step: float = 5e-3) -> np.ndarray:
    """Cartesian Hessian (3N, 3N) in Ha/A^2: central differences of the ensemble forces, one batch."""
    x0 = structure.coordinates.ravel()
    n = len(x0)
    displaced = np.repeat(x0[None], 2 * n, axis=0)
    displaced[np.arange(n), np.arange(n)] += step
    displaced[n + np.arange(n), np.arange(n)] -= step
    species = np.repeat(structure.numbers[None], 2 * n, axis=0)
    grads = -evaluate(model, species, displaced.reshape(2 * n, -1, 3)).forces.reshape(2 * n, n)
    hessian = (grads[:n] - grads[n:]) / (2 * step)
    return 0.5 * (hessian + hessian.T)


def draw_displacements(force_constants, n_atoms: int, temperature: float, count: int,
                       rng: np.random.Generator, bias: float = 1.0, min_force_constant: float = 1e-3):
    """Mode displacements R (count, m) in A and the coefficients' sums s (count,), ANI-1 style."""
    k = np.maximum(np.asarray(force_constants), min_force_constant)
    s = rng.uniform(size=count) ** bias
    c = rng.dirichlet(np.ones(len(k)), size=count) * s[:, None]
    signs = rng.choice([-1.0, 1.0], size=c.shape)
    return signs * np.sqrt(3.0 * c * n_atoms * KB_HARTREE * temperature / k), s


def nms_pool(structure: Structure, hessian: np.ndarray, settings: DNMSSettings, rng: np.random.Generator):
    """``settings.pool`` normal-mode displaced coordinates (P, N, 3) A and their sums s (P,)."""
    constants, directions = mode_directions(structure.numbers, structure.coordinates, hessian)
    displacements, s = draw_displacements(constants, structure.n_atoms, settings.temperature, settings.pool, rng,
                                          settings.bias, settings.min_force_constant)
    return structure.coordinates[None] + np.einsum("pm,mnk->pnk", displacements, directions), s


def diversity_select(coordinates: np.ndarray, min_rmsd: float, keep: int | None = None,
                     known: np.ndarray | None = None) -> list[int]:
    """Indices kept, in input order of preference: each >= min_rmsd (Kabsch RMSD) from all kept before
    and from the ``known`` conformers (K, N, 3), e.g. the optimised geometry itself."""
    kept: list[int] = []
    known = np.zeros((0,) + coordinates.shape[1:]) if known is None else np.asarray(known)
    for i, x in enumerate(coordinates):
        others = np.concatenate([known, coordinates[kept]])
        if len(others) and kabsch_rmsd(x, others).min() < min_rmsd:
            continue
        kept.append(i)
        if keep is not None and len(kept) >= keep:
            break
    return kept


def sample_dnms(model, structure: Structure, rho_hat: float, seed: int,
                settings: DNMSSettings = DNMSSettings(), hessian: np.ndarray | None = None) -> list[Candidate]:
    """DNMS conformers of ``structure`` failing the QBC test (rho > rho_hat, kcal/mol).

    ``hessian``: a Cartesian Hessian (3N, 3N) in Ha/A^2 at ``structure`` (taken as optimised).
    Without it, ``settings.hessian`` decides: 'ensemble' optimises with the ensemble and uses
    its finite-difference Hessian (cheap); 'reference' optimises and computes the Hessian at
    the reference level with :mod:`anif.labeling` (PySCF, expensive).
    """
    if structure.n_atoms < 2:
        raise AnifError(f"{structure.name or 'structure'}: normal modes need at least 2 atoms")
    rng = np.random.default_rng(seed)
    hessian_source = "given" if hessian is not None else settings.hessian
    if hessian is None and settings.hessian == "reference":
        from .. import labeling

        structure = labeling.optimize(structure).structure
        hessian = labeling.hessian(structure)
    elif hessian is None:
        if settings.optimize:
            structure = optimize(model, structure)
        hessian = ensemble_hessian(model, structure, settings.fd_step)
    conformers = dnms_conformers(structure, hessian, settings, rng, hessian_source, seed)
    energy, rho = score(model, [c.structure for c in conformers])
    kept = []
    for c, e, r in zip(conformers, energy, rho):
        if r > rho_hat:
            c.rho_kcal_mol, c.energy = float(r), float(e)
            kept.append(c)
    return kept


def dnms_conformers(structure: Structure, hessian: np.ndarray, settings: DNMSSettings, rng: np.random.Generator,
                    hessian_source: str = "given", seed: int = -1) -> list[Candidate]:
    """The diversity-selected normal-mode conformers of ``structure`` (no QBC test: rho and energy NaN).

    Draws that break or form a covalent bond against ``structure`` (too hot a temperature, a soft
    mode) are dropped before the selection: fragments are never candidates."""
    from ..openmm_plugin.guard import bond_changes, bond_graph

    pool, s = nms_pool(structure, hessian, settings, rng)
    bonds = bond_graph(structure.numbers, structure.coordinates)
    intact = np.flatnonzero([bond_changes(structure.numbers, bonds, x) is None for x in pool])
    kept = [int(intact[i]) for i in diversity_select(pool[intact], settings.min_rmsd, settings.keep,
                                                     known=structure.coordinates[None])]
    scale = 1.5 * structure.n_atoms * KB_HARTREE * settings.temperature
    return [
        Candidate(Structure(structure.numbers, pool[i], name=structure.name), float("nan"), float("nan"), {
            "sampler": "dnms", "source": structure.name, "seed": int(seed), "draw": i,
            "temperature_k": settings.temperature, "harmonic_energy_ha": float(s[i] * scale),
            "hessian": hessian_source,
        })
        for i in kept
    ]


def sample_item(model, payload, rho_hat: float, seed: int, settings: DNMSSettings | None = None) -> list[Candidate]:
    """One DNMS work item: a Structure, or a ``(structure, hessian)`` pair (normal modes of that Hessian)."""
    structure, hessian = payload if isinstance(payload, tuple) else (payload, None)
    return sample_dnms(model, structure, rho_hat, seed, *(() if settings is None else (settings,)), hessian=hessian)
