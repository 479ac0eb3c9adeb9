"""Speed of the fused ANI-1x ensemble against stock torchani, on the CPU.

"kernels" is the default path (compiled CPU kernels, anif.models.extension); "TorchScript" is the fused ensemble
without them (load_model(..., implementation="torchscript")). Prints, in one run, as ratios fused / stock:
  1. MD steps/s: OpenMM CPU platform, the ensemble as a TorchForce (anif.openmm_plugin.create_force),
     LangevinMiddleIntegrator, for ~20, ~50, ~100 and ~300 atoms;
  2. QBC screening throughput (molecules/s) for 1,000 small molecules: stock one at a time, stock and fused
     through anif.models.ensemble.score_structures (size-sorted padded batches);
  3. time per energy + forces evaluation vs number of atoms (plain module calls, no OpenMM), also as a PNG.

    .venv/bin/python scripts/benchmark_speed.py [--threads 2] [--seconds 3] [--plot speed.png]

Timings are the 20th percentile of many short timed calls, so sporadic load on the machine inflates them less.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARACETAMOL = "CC(=O)Nc1ccc(O)cc1"  # 20 atoms
PALMITIC_ACID = "CCCCCCCCCCCCCCCC(=O)O"  # 50 atoms
ALA10 = "N" + "C(C)C(=O)N" * 9 + "C(C)C(=O)O"  # deca-alanine, 103 atoms


def water_cluster(n_molecules: int, spacing: float = 3.1, seed: int = 0):
    """n randomly oriented waters filling a cubic lattice (liquid-like density)."""
    from anif.structures import Structure

    rng = np.random.default_rng(seed)
    side = int(np.ceil(n_molecules ** (1 / 3) - 1e-9))
    local = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]])
    coords = []
    for ijk in list(np.ndindex(side, side, side))[:n_molecules]:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        coords.append(local @ q.T + np.array(ijk) * spacing)
    return Structure(np.array([8, 1, 1] * n_molecules), np.concatenate(coords), name=f"{n_molecules} waters")


def best_time(fn, seconds: float, quantile: float = 0.2) -> float:
    """A low quantile of fn()'s wall time over a ~seconds window (robust to stalls from other load)."""
    fn()
    times, total = [], 0.0
    while total < seconds or len(times) < 5:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        total += times[-1]
    return float(np.quantile(times, quantile))


def md_seconds_per_step(model, structure, seconds: float, steps: int = 10) -> float:
    import openmm

    from anif.openmm_plugin import create_system
    from anif.units import NM_TO_ANGSTROM

    system, _ = create_system(model, structure.numbers, backend="torch")
    integrator = openmm.LangevinMiddleIntegrator(300.0, 1.0, 0.0005)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(structure.coordinates / NM_TO_ANGSTROM)
    context.setVelocitiesToTemperature(300.0, 1)
    integrator.step(steps)  # warm-up: TorchScript profiling runs
    return best_time(lambda: integrator.step(steps), seconds) / steps


def evaluation_seconds(model, structure, seconds: float) -> float:
    import torch

    species = torch.tensor(structure.numbers)[None]
    coords = torch.tensor(structure.coordinates, dtype=torch.float32)[None]

    def call():
        x = coords.clone().requires_grad_()
        energy = model(species, x, None, None).mean(0).sum()
        torch.autograd.grad(energy, x)

    for _ in range(3):
        call()
    return best_time(call, seconds)


def screening_set(n: int, seed: int = 0):
    """n small CHNO molecules: the GDB-11-like set embedded once, then jittered copies."""
    from anif.structures import Structure, from_smiles

    lines = (ROOT / "anif" / "data" / "gdb11_like.smi").read_text().splitlines()
    smiles = [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]
    base = [from_smiles(s, seed=seed) for s in smiles]
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        s = base[len(out) % len(base)]
        jitter = rng.normal(scale=0.05, size=s.coordinates.shape) if len(out) >= len(base) else 0.0
        out.append(Structure(s.numbers, s.coordinates + jitter, name=s.name))
    return out


def network_flops(model, numbers) -> float:
    """FLOPs of the members' networks for one energy + forces evaluation (forward + input gradient)."""
    index = {int(z): i for i, z in enumerate(model.atomic_numbers)}
    macs = 0
    for z in numbers:
        net = model.networks[index[int(z)]]
        macs += net.w0.numel() + sum(layer.weight.numel() for layer in net.layers)  # all members
    return 2 * 2 * macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per measurement (s)")
    parser.add_argument("--molecules", type=int, default=1000, help="molecules in the screening set")
    parser.add_argument("--batch-size", type=int, default=250, help="screening batch size")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of time per evaluation vs atoms")
    args = parser.parse_args()

    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    import torch

    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from anif.models.ensemble import score_structures

    def screen(model, structures, batch_size):
        return score_structures(model, structures, batch_size)[1]
    from anif.models.ensemble import evaluate, load_model
    from anif.structures import from_smiles

    console = Console()
    models = {impl: load_model("ani1x", implementation=impl) for impl in ("stock", "torchscript", "kernels")}
    fused = models["kernels"]
    if not fused.use_kernels:
        console.print("[red]compiled kernels unavailable: 'kernels' is the TorchScript path[/red]")
    console.print(f"ANI-1x, {fused.num_members} members; torch {torch.__version__}, {args.threads} threads, "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    systems = [
        ("paracetamol", from_smiles(PARACETAMOL, seed=1)),
        ("palmitic acid", from_smiles(PALMITIC_ACID, seed=1)),
        ("deca-alanine", from_smiles(ALA10, seed=1)),
        ("100 waters", water_cluster(100)),
    ]
    md = Table(title="MD: OpenMM CPU platform, TorchForce (create_force), LangevinMiddleIntegrator 0.5 fs")
    for col in ("system", "atoms", "stock steps/s", "TorchScript steps/s", "kernels steps/s", "speed-up",
                "kernels ms/step", "net GFLOP/step", "net GFLOP/s"):
        md.add_column(col, justify="right")
    with console.status("MD timings") as status:
        for name, structure in systems:
            status.update(f"MD: {name}")
            rates = {impl: 1.0 / md_seconds_per_step(m, structure, args.seconds) for impl, m in models.items()}
            flops = network_flops(fused, structure.numbers)
            md.add_row(name, str(structure.n_atoms), f"{rates['stock']:.1f}", f"{rates['torchscript']:.1f}",
                       f"{rates['kernels']:.1f}",
                       f"{rates['kernels'] / rates['stock']:.2f}x", f"{1e3 / rates['kernels']:.2f}",
                       f"{flops / 1e9:.3f}", f"{flops * rates['kernels'] / 1e9:.1f}")
    console.print(md)

    with console.status("embedding the screening set"):
        molecules = screening_set(args.molecules)
    sizes = np.array([m.n_atoms for m in molecules])
    scr = Table(title=f"QBC screening (rho, no forces) of {len(molecules)} molecules, {sizes.min()}-{sizes.max()} "
                      f"atoms (mean {sizes.mean():.1f})")
    for col in ("path", "molecules/s", "fused speed-up", "max |rho - rho_stock| kcal/mol"):
        scr.add_column(col, justify="right")
    rho, seconds = {}, {}

    def one_by_one():
        return np.array([evaluate(models["stock"], m.numbers, m.coordinates, forces=False).rho_kcal_mol[0]
                         for m in molecules])

    runs = {
        "stock, one at a time": one_by_one,
        f"stock, score_structures() batches of {args.batch_size}": lambda: screen(models["stock"], molecules, args.batch_size),
        f"TorchScript, score_structures() batches of {args.batch_size}":
            lambda: screen(models["torchscript"], molecules, args.batch_size),
        f"fused, score_structures() batches of {args.batch_size}": lambda: screen(fused, molecules, args.batch_size),
    }
    with console.status("screening") as status:
        screen(fused, molecules[:50], args.batch_size)  # warm-up
        for label, run in runs.items():
            status.update(f"screening: {label}")
            start = time.perf_counter()
            rho[label] = run()
            seconds[label] = time.perf_counter() - start
    fused_label = list(runs)[-1]
    for label in runs:
        scr.add_row(label, f"{len(molecules) / seconds[label]:.0f}", f"{seconds[label] / seconds[fused_label]:.2f}x",
                    f"{np.abs(rho[label] - rho['stock, one at a time']).max():.1e}")
    console.print(scr)

    scripted = {impl: torch.jit.script(m) for impl, m in models.items()}
    scaling = Table(title="energy + forces per call vs atoms (water clusters, TorchScript module, no OpenMM)")
    for col in ("atoms", "stock ms", "TorchScript ms", "fused ms", "speed-up"):
        scaling.add_column(col, justify="right")
    points = []
    with console.status("scaling") as status:
        for n_molecules in (3, 7, 17, 33, 67, 100, 200):
            structure = water_cluster(n_molecules)
            status.update(f"scaling: {structure.n_atoms} atoms")
            t = {impl: evaluation_seconds(m, structure, args.seconds / 2) for impl, m in scripted.items()}
            points.append((structure.n_atoms, t["stock"], t["torchscript"], t["kernels"]))
            scaling.add_row(str(structure.n_atoms), f"{1e3 * t['stock']:.2f}", f"{1e3 * t['torchscript']:.2f}",
                            f"{1e3 * t['kernels']:.2f}", f"{t['stock'] / t['kernels']:.2f}x")
    console.print(scaling)
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n, stock, script, fused_t = (np.array(c) for c in zip(*points))
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.loglog(n, 1e3 * stock, "o-", label="stock torchani")
        ax.loglog(n, 1e3 * script, "^-", label="fused, TorchScript")
        ax.loglog(n, 1e3 * fused_t, "s-", label="fused, compiled kernels")
        ax.set_xlabel("atoms (water clusters)")
        ax.set_ylabel("ms per energy + forces")
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        console.print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
