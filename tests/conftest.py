"""Shared fixtures. Data in ../shared is read in place; under CI (CI=true) missing data fails."""

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("ANIF_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
os.environ.setdefault("TORCHANI_DATA_DIR", str(SHARED / "torchani"))
os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")


def float32_atol(values, floor: float = 2e-5) -> float:
    """Absolute tolerance for float32 results: ``floor``, or 4 float32 ulps at the largest magnitude
    compared if that is larger (one ulp at -510 Ha is 3.05e-5 Ha)."""
    import numpy as np

    return max(floor, 4 * float(np.spacing(np.float32(np.abs(values).max()))))


def float32_qbc_atol(energy_hartree, n_atoms: int = 1) -> float:
    """Tolerance (kcal/mol) for sigma (n_atoms=1) or rho = sigma/sqrt(N) computed from float32 member
    energies of magnitude ``energy_hartree``: one float32 ulp there (each member is rounded by up to half
    an ulp, so their standard deviation moves by about that much); 0.0096 kcal/mol at 155 Ha."""
    import numpy as np

    ulp = float(np.spacing(np.float32(abs(float(energy_hartree)))))
    return ulp * 627.5094740631 / float(np.sqrt(n_atoms))


def require_shared(relative: str) -> Path:
    """Path to a file under ../shared; fail under CI, skip elsewhere, when it is missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"shared data missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one thread: on two shared cores, oversubscribed OpenMP
    threads spin, and small networks are faster single-threaded anyway."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ani1x():
    """The released ANI-1x ensemble (8 members), stock torchani evaluation."""
    require_shared("torchani/Neurochem/ani-1x_8x.info")
    from anif.models.ensemble import load_model

    return load_model("ani1x", implementation="stock")


@pytest.fixture(scope="session")
def ani1x_torchani():
    """ANI-1x straight from torchani, for independent reference computations."""
    require_shared("torchani/Neurochem/ani-1x_8x.info")
    import torchani

    return torchani.neurochem.load_model_from_name("ani1x")


@pytest.fixture(scope="session")
def s66x8_path():
    return require_shared("data/comp6/s66x8_wb97x6-31gd.h5")


def run_anif(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run ``anif ARGS`` through the real entry point in this process; (exit status, stdout, stderr)."""
    import sys

    from anif.cli import main

    monkeypatch.setattr(sys, "argv", ["anif", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err
