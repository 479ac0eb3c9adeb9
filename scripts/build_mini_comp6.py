"""Build a mini-COMP6: a small, deterministic extrapolation test set labelled by the ANI-1x teacher.

COMP6 (Smith et al. 2018) tests on molecules larger than any in the training set, sampled by MD
and by normal modes, plus dimers. This is the same at laptop scale, for campaigns whose pool is the
shipped GDB-11-like set (1-6 heavy atoms), small dipeptides and dimers of those:

- drug-like molecules (8-11 heavy atoms), a GDB-like set of 7-8 heavy atoms (hand-picked: the shipped
  GDB-11-like file stops at 6) and two tripeptides (13-14 heavy atoms, from anif/data/amino_acids.smi);
- per molecule: the teacher's minimum, frames of Langevin MD with ANI-1x at 300 K and at 600 K, and
  normal-mode conformers (the teacher's finite-difference Hessian at 450 K);
- dimers of small molecules (random orientation, optimised by the teacher into a complex, then normal
  modes around it);
- every conformer labelled by the teacher (energy and forces), written as ANI-format HDF5 (one group
  per molecule, so dE, the conformer energy differences within a molecule, is COMP6's), method
  ``teacher:ani1x``.

Every random choice is seeded; on the same machine and library versions the file is the same.
The shipped copy is data/mini_comp6.h5 (well under 1 MB); rebuild it with

    TORCHANI_DATA_DIR=../shared/torchani python scripts/build_mini_comp6.py --out data/mini_comp6.h5

Use it in a campaign as ``[test_sets.mini_comp6] file = "mini_comp6.h5"``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

DRUG_LIKE = [
    ("CC(=O)Nc1ccc(O)cc1", "paracetamol"),
    ("NC(=O)c1cccnc1", "nicotinamide"),
    ("COC(=O)c1ccccc1O", "methyl-salicylate"),
    ("OCc1ccccc1", "benzyl-alcohol"),
    ("CC(C)Cc1ccccc1", "isobutylbenzene"),
]
GDB_LIKE = [
    ("CC(C)CC(=O)OC", "gdb-methyl-isovalerate"),
    ("OCC1CCCCC1", "gdb-cyclohexylmethanol"),
    ("NC(=O)CCCC=O", "gdb-oxopentanamide"),
    ("CCOC(=O)CN", "gdb-glycine-ethyl-ester"),
]
TRIPEPTIDES = (("Gly", "Gly", "Gly"), ("Ala", "Gly", "Gly"))
DIMERS = [("O", "O"), ("CO", "O"), ("NC=O", "NC=O"), ("CC=O", "CO")]


def tripeptides() -> list[tuple[str, str]]:
    """H-AA1-AA2-AA3-OH from the amino-acid SMILES (RDKit amide coupling, as the dipeptides)."""
    from anif.sampling.search import DATA_DIR, dipeptides, read_smiles_file

    amino = dict((name, smi) for smi, name in read_smiles_file(DATA_DIR / "amino_acids.smi"))
    out = []
    for a, b, c in TRIPEPTIDES:
        di = next(s for s, n in dipeptides([(amino[a], a), (amino[b], b)]) if n == f"{a}-{b}")
        tri = next(s for s, n in dipeptides([(di, f"{a}-{b}"), (amino[c], c)]) if n == f"{a}-{b}-{c}")
        out.append((tri, f"{a}-{b}-{c}"))
    return out


def build(out: Path, seed: int = 2018, frames: int = 3, modes: int = 4) -> dict:
    from anif.labeling.oracles import TeacherOracle
    from anif.datasets.store import DatasetStore
    from anif.models.ensemble import load_model
    from anif.sampling.dnms import dnms_conformers
    from anif.sampling.frames import md_frames
    from anif.sampling.search import random_dimers
    from anif.sampling.settings import DNMSSettings, FrameSettings
    from anif.structures import from_smiles

    teacher = TeacherOracle("ani1x")
    model = load_model("ani1x")
    nms = DNMSSettings(temperature=450.0, pool=8 * modes, keep=modes, min_rmsd=0.05, optimize=False)
    molecules = [(s, n, "drug") for s, n in DRUG_LIKE] + [(s, n, "gdb") for s, n in GDB_LIKE]
    molecules += [(s, n, "tripeptide") for s, n in tripeptides()]
    work = []
    for k, (smiles, name, kind) in enumerate(molecules):
        work.append((name, kind, from_smiles(smiles, seed=seed + k, name=name), True))
    for k, (a, b) in enumerate(DIMERS):
        monomers = [from_smiles(a, seed=seed, name=a), from_smiles(b, seed=seed, name=b)]
        for m in monomers:
            m.coordinates = teacher.optimize(m)[0].coordinates
        trial = seed + 100 * (k + 1)  # random_dimers draws its pair: the first seed that draws (a, b)
        while (dimer := random_dimers(monomers, 1, trial, contact=(2.0, 2.6))[0]).name != f"{a}+{b}":
            trial += 1
        work.append((f"dimer:{a}+{b}", "dimer", dimer, False))
    if out.exists():
        out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    store = DatasetStore(out, "a", kind="labels")
    counts: dict[str, int] = {}
    for k, (name, kind, start, md) in enumerate(work):
        t0 = time.perf_counter()
        minimum = teacher.optimize(start)[0]
        conformers = [minimum]
        if md:
            for j, temperature in enumerate((300.0, 600.0)):
                settings = FrameSettings(temperature=temperature, n=frames, equilibration_ps=0.2, interval_ps=0.05)
                conformers += [c.structure for c in md_frames(model, minimum, seed + 1000 * k + j, settings)]
        hessian = teacher.hessian(minimum)
        conformers += [c.structure for c in dnms_conformers(minimum, hessian, nms, np.random.default_rng(seed + k))]
        labels = [teacher.label(c) for c in conformers]
        ok = [(c, r) for c, r in zip(conformers, labels) if r.ok]
        group = f"{kind}_{k:02d}"
        with store.transaction():
            store.append(group, minimum.numbers, np.stack([c.coordinates for c, _ in ok]),
                         np.array([r.energy for _, r in ok]), np.stack([r.forces for _, r in ok]),
                         name=name, kind=kind, method=teacher.method,
                         sampler=np.array(["minimum"] + ["md"] * (2 * frames if md else 0)
                                          + ["nms"] * (len(conformers) - 1 - (2 * frames if md else 0)))[:len(ok)])
        counts[kind] = counts.get(kind, 0) + len(ok)
        print(f"{name:28s} {int((minimum.numbers > 1).sum()):2d} heavy atoms, {len(ok):2d} conformers "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    del store
    shutil.rmtree(out.parent / f".{out.name}.anif", ignore_errors=True)  # the store's write journal: not data
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "mini_comp6.h5")
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--frames", type=int, default=3, help="MD frames per temperature (300 K, 600 K)")
    parser.add_argument("--modes", type=int, default=4, help="normal-mode conformers per molecule")
    args = parser.parse_args()
    counts = build(args.out, args.seed, args.frames, args.modes)
    print(f"{args.out}: {sum(counts.values())} conformers {counts}, {args.out.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
