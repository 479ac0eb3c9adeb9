"""Which committee disagreement ranks the real errors: rho (energies) or the members' force spread?

For a finished campaign (``anif al run``): every cycle's model, and ANI-1x, on each generated test
set (``test_sets/*.h5``), or on ``--data`` files. Per structure, the members' energy spread rho
(kcal/mol per sqrt(atom), as QBC uses it) and their force spread (the mean over atoms of the norm of
the members' standard deviation of the force, kcal/mol/A), against the ensemble mean's energy error
per sqrt(atom) and force error (mean over atoms of its norm). Prints the Spearman correlations pooled
over the test set and within each molecule, and writes qbc_measures.json to --out (default: the
campaign folder's plots/).

Usage: python scripts/qbc_measures.py RUN [--data FILE.h5 ...] [--out DIR]
Needs TORCHANI_DATA_DIR pointing at the ANI-1x networks.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from anif.accuracy.metrics import spearman_or_none  # noqa: E402
from anif.datasets.comp6 import read_comp6_file  # noqa: E402
from anif.models.ensemble import force_spread, load_ani, member_spread  # noqa: E402
from anif.units import HARTREE_TO_KCAL_MOL  # noqa: E402


def spreads(ani, molecule) -> dict[str, np.ndarray]:
    """Per conformer: rho, force spread, |energy error| / sqrt(N) and force error of ``ani`` (kcal/mol)."""
    n = len(molecule.species)
    species = torch.as_tensor(np.asarray(molecule.species)).unsqueeze(0).repeat(molecule.n_conformers, 1)
    out = ani.members_forces((species, torch.tensor(molecule.coordinates, dtype=torch.float64)))
    energies = out.energies.detach() * HARTREE_TO_KCAL_MOL  # (members, conformers)
    forces = out.forces.detach() * HARTREE_TO_KCAL_MOL  # (members, conformers, atoms, 3)
    return {
        "rho": member_spread(energies).numpy() / np.sqrt(n),
        "force_spread": force_spread(forces, torch.tensor(float(n))).numpy(),
        "energy_error": np.abs(energies.mean(0).numpy() - molecule.energies * HARTREE_TO_KCAL_MOL) / np.sqrt(n),
        "force_error": np.full(molecule.n_conformers, np.nan) if molecule.forces is None else
        np.linalg.norm(forces.mean(0).numpy() - molecule.forces * HARTREE_TO_KCAL_MOL, axis=-1).mean(-1),
    }


def _spearman(x, y):
    """None with fewer than 4 structures, without the reference (a test file without forces) or where
    either side is constant."""
    return None if len(x) < 4 or np.isnan(y).any() else spearman_or_none(x, y)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def measures(ani, molecules) -> dict:
    """Spearman correlations of each spread with each error, pooled and within each molecule."""
    per = {m.name: spreads(ani, m) for m in molecules}
    pooled = {k: np.concatenate([p[k] for p in per.values()]) for k in next(iter(per.values()))}
    pairs = {"rho~E": ("rho", "energy_error"), "forces~E": ("force_spread", "energy_error"),
             "forces~F": ("force_spread", "force_error")}
    return {"pooled": {name: _spearman(pooled[a], pooled[b]) for name, (a, b) in pairs.items()},
            "within": {mol: {name: _spearman(p[a], p[b]) for name, (a, b) in pairs.items()} for mol, p in per.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a campaign folder (anif al run --out)")
    parser.add_argument("--data", type=Path, nargs="+", help="labelled test files (default: the campaign's test_sets/*.h5)")
    parser.add_argument("--out", type=Path, help="folder for qbc_measures.json (default: RUN/plots)")
    args = parser.parse_args()
    files = args.data or sorted((args.run / "test_sets").glob("*.h5"))
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing or not (args.run / "models").is_dir():
        parser.error(f"{', '.join(missing) or args.run}: no such test file or campaign folder (anif al run --out)")
    models = {"ani1x": "ani1x", **{d.name: str(d) for d in sorted((args.run / "models").glob("cycle_*"))
                                   if (d / "model.json").is_file()}}
    result: dict = {}
    for path in files:
        molecules = read_comp6_file(path, subset=path.stem)
        for name, spec in models.items():
            m = measures(load_ani(spec).double(), molecules)
            result.setdefault(path.stem, {})[name] = m
            within = "; ".join(f"{mol}: {_fmt(v['rho~E'])} / {_fmt(v['forces~E'])}" for mol, v in m["within"].items())
            print(f"{path.stem} {name:10s} Spearman with |E error|: rho {_fmt(m['pooled']['rho~E'])}, force spread "
                  f"{_fmt(m['pooled']['forces~E'])} (with |F error| {_fmt(m['pooled']['forces~F'])}); within molecules "
                  f"rho / forces: {within}")
    out = args.out or args.run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    (out / "qbc_measures.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'qbc_measures.json'}")


if __name__ == "__main__":
    main()
