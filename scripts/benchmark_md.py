"""MD steps/s of the ANI-1x ensemble in OpenMM (CPU platform), in one run:

1. anif's TorchForce and PythonForce beside a plain torchani-in-PythonForce baseline (what
   openmmml does);
2. the periodic path (dimer boxes, an ML solute in a solvent box) beside the non-periodic one for
   the same ML atoms: a box of waters and an ethanol in a 2 nm box.

    TORCHANI_DATA_DIR=../shared/torchani .venv/bin/python scripts/benchmark_md.py [--steps 300]
"""

import argparse
import time

import numpy as np
import openmm
import torch
from openmm import unit

from anif.models.ensemble import load_ani, load_model
from anif.openmm_plugin import create_system
from anif.structures import from_smiles
from anif.units import HARTREE_TO_KJ_MOL, NM_TO_ANGSTROM

MOLECULES = {"paracetamol": "CC(=O)Nc1ccc(O)cc1", "palmitic acid": "CCCCCCCCCCCCCCCC(=O)O"}


def baseline_system(numbers, ani):
    """openmmml-style PythonForce calling stock torchani directly."""
    species = torch.tensor([list(numbers)])

    def compute(state):
        x = torch.tensor(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[None], dtype=torch.float32,
                         requires_grad=True)
        energy = ani((species, x)).energies.sum()
        (grad,) = torch.autograd.grad(energy, x)
        return energy.item() * HARTREE_TO_KJ_MOL, -grad[0].numpy() * HARTREE_TO_KJ_MOL * NM_TO_ANGSTROM

    system = openmm.System()
    for z in numbers:
        system.addParticle(openmm.app.Element.getByAtomicNumber(int(z)).mass)
    system.addForce(openmm.PythonForce(compute))
    return system


def steps_per_second(system, coords, steps):
    integrator = openmm.LangevinMiddleIntegrator(300, 1, 0.0005)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(coords / NM_TO_ANGSTROM)
    context.setVelocitiesToTemperature(300, 1)
    integrator.step(20)  # warm-up (TorchScript profiling runs)
    start = time.perf_counter()
    integrator.step(steps)
    return steps / (time.perf_counter() - start)


def water_box(n_side: int, spacing: float, seed: int = 0):
    """n_side**3 randomly oriented waters on a cubic lattice: numbers, coordinates (A), box edge (A)."""
    rng = np.random.default_rng(seed)
    local = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]])
    coords = [local @ np.linalg.qr(rng.normal(size=(3, 3)))[0].T + np.array(ijk) * spacing
              for ijk in np.ndindex(n_side, n_side, n_side)]
    return np.tile([8, 1, 1], n_side**3), np.concatenate(coords), n_side * spacing


def periodic_table(model, steps):
    """Periodic (kernels' minimum image; torchani's neighbour list as before) vs isolated, same atoms."""
    from anif.models.kernels import FusedAniEnsemble

    neighbour_list = FusedAniEnsemble(model.ani, minimum_image=False).eval()
    print(f"\n{'ML atoms':28s} {'atoms':>5s} {'periodic':>9s} {'(torchani nl)':>13s} {'isolated':>9s} "
          f"{'ratio':>6s}   (steps/s)")
    numbers, coords, edge = water_box(4, 3.1)
    ethanol = from_smiles("CCO", seed=0)
    cases = [("64 waters, 12.4 A box", numbers, coords, edge),
             ("ethanol, 20 A box", ethanol.numbers, ethanol.coordinates - ethanol.coordinates.mean(0) + 10.0, 20.0)]
    for name, z, x, edge in cases:
        box = np.eye(3) * edge / NM_TO_ANGSTROM
        systems = [create_system(model, z, box_vectors=box)[0], create_system(neighbour_list, z, box_vectors=box)[0],
                   create_system(model, z)[0]]
        # best of three rounds, interleaved, so load on a shared machine hits all three alike
        periodic, before, isolated = np.max([[steps_per_second(system, x, steps) for system in systems]
                                             for _ in range(3)], axis=0)
        print(f"{name:28s} {len(z):5d} {periodic:9.1f} {before:13.1f} {isolated:9.1f} {periodic / isolated:6.2f}")
    print("(a filled box gives each atom more neighbours than the same atoms isolated: more AEV work)")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--periodic-only", action="store_true", help="only the periodic vs isolated table")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    model, ani = load_model("ani1x"), load_ani("ani1x")
    if args.periodic_only:
        return periodic_table(model, args.steps)
    print(f"{'molecule':16s} {'atoms':>5s} {'TorchForce':>11s} {'PythonForce':>12s} {'baseline':>9s} "
          f"{'Torch/base':>10s}")
    for name, smiles in MOLECULES.items():
        mol = from_smiles(smiles, seed=0)
        rates = [
            steps_per_second(create_system(model, mol.numbers, backend="torch")[0], mol.coordinates, args.steps),
            steps_per_second(create_system(model, mol.numbers, backend="python")[0], mol.coordinates, args.steps),
            steps_per_second(baseline_system(mol.numbers, ani), mol.coordinates, args.steps),
        ]
        print(f"{name:16s} {mol.n_atoms:5d} {rates[0]:11.1f} {rates[1]:12.1f} {rates[2]:9.1f} "
              f"{rates[0] / rates[2]:10.2f}   (steps/s)")
    periodic_table(model, args.steps)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
