"""MD steps/s of the ANI-1x ensemble in OpenMM (CPU platform): anif's TorchForce and
PythonForce beside a plain torchani-in-PythonForce baseline (what openmmml does), in one run.

    TORCHANI_DATA_DIR=../shared/torchani .venv/bin/python scripts/benchmark_md.py [--steps 300]
"""

import argparse
import time

import numpy as np
import openmm
import torch
from openmm import unit

from anif.models import load_ani, load_model
from anif.openmm_plugin import create_system
from anif.structures import from_smiles
from anif.units import HARTREE_TO_KJ_MOL

MOLECULES = {"paracetamol": "CC(=O)Nc1ccc(O)cc1", "palmitic acid": "CCCCCCCCCCCCCCCC(=O)O"}


def baseline_system(numbers, ani):
    """openmmml-style PythonForce calling stock torchani directly."""
    species = torch.tensor([list(numbers)])

    def compute(state):
        x = torch.tensor(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[None], dtype=torch.float32,
                         requires_grad=True)
        energy = ani((species, x)).energies.sum()
        (grad,) = torch.autograd.grad(energy, x)
        return energy.item() * HARTREE_TO_KJ_MOL, -grad[0].numpy() * HARTREE_TO_KJ_MOL * 10

    system = openmm.System()
    for z in numbers:
        system.addParticle(openmm.app.Element.getByAtomicNumber(int(z)).mass)
    system.addForce(openmm.PythonForce(compute))
    return system


def steps_per_second(system, coords, steps):
    integrator = openmm.LangevinMiddleIntegrator(300, 1, 0.0005)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(coords / 10)
    context.setVelocitiesToTemperature(300, 1)
    integrator.step(20)  # warm-up (TorchScript profiling runs)
    start = time.perf_counter()
    integrator.step(steps)
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    model, ani = load_model("ani1x"), load_ani("ani1x")
    print(f"{'molecule':16s} {'atoms':>5s} {'TorchForce':>11s} {'PythonForce':>12s} {'baseline':>9s} "
          f"{'Torch/base':>10s}")
    for name, smiles in MOLECULES.items():
        mol = from_smiles(smiles, seed=0)
        rates = [
            steps_per_second(create_system(mol.numbers, model, backend="torch")[0], mol.coordinates, args.steps),
            steps_per_second(create_system(mol.numbers, model, backend="python")[0], mol.coordinates, args.steps),
            steps_per_second(baseline_system(mol.numbers, ani), mol.coordinates, args.steps),
        ]
        print(f"{name:16s} {mol.n_atoms:5d} {rates[0]:11.1f} {rates[1]:12.1f} {rates[2]:9.1f} "
              f"{rates[0] / rates[2]:10.2f}   (steps/s)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
