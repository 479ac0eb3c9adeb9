"""GPU throughput: ensemble energies + forces of padded batches (paracetamol, palmitic acid, a
tripeptide), stock torchani vs anif's fused TorchScript path, same device, same run (median of 20
after 5 warm-ups). Needs a CUDA device:

    TORCHANI_DATA_DIR=../shared/torchani .venv/bin/python scripts/benchmark_gpu.py
"""
import time

import numpy as np
import torch

from anif.models.ensemble import evaluate, load_model, pad_structures
from anif.structures import from_smiles

if not torch.cuda.is_available():
    raise SystemExit("no CUDA device: run this on a GPU machine")

rng = np.random.default_rng(0)
base = [from_smiles(s, seed=1) for s in ["CC(=O)Nc1ccc(O)cc1", "CCCCCCCCCCCCCCCC(=O)O", "NCC(=O)NC(C)C(=O)NC(CO)C(=O)O"]]
for batch in (1, 64, 512):
    mols = [base[i % 3] for i in range(batch)]
    species, coords = pad_structures(mols)
    coords = coords + rng.normal(scale=0.02, size=coords.shape) * (species[..., None] >= 0)
    rates = {}
    for impl in ("stock", "torchscript"):
        model = load_model("ani1x", implementation=impl).cuda()
        times = []
        for i in range(25):
            torch.cuda.synchronize(); t = time.perf_counter()
            evaluate(model, species, coords)
            torch.cuda.synchronize(); times.append(time.perf_counter() - t)
        rates[impl] = batch / np.median(times[5:])
    print(f"batch {batch:4d} ({species.shape[1]} atoms max): stock {rates['stock']:9.1f} structures/s, "
          f"fused TorchScript {rates['torchscript']:9.1f} structures/s, {rates['torchscript'] / rates['stock']:.2f}x")
