"""The reference level of theory (:class:`Level`); torch- and PySCF-free, so the command line
can show its defaults cheaply."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional


def gaussian_cartesian(basis: str) -> bool:
    """Whether Gaussian uses Cartesian d functions (6D) for ``basis`` by default.

    Gaussian's 6D default covers the Pople double-zeta sets (3-21G, 4-31G, 6-21G, 6-31G and
    their +/* variants); 6-311G, Dunning, def2 and the rest are spherical (5D).
    """
    return re.match(r"^(3-21|4-31|6-21|6-31)\+{0,2}g", basis.strip().lower()) is not None


@dataclass(frozen=True)
class Level:
    """A reference level of theory and its numerical settings."""

    method: str = "wb97x"  # a libxc functional name, or "hf"
    basis: str = "6-31g*"
    cartesian: Optional[bool] = None  # None: Gaussian's convention for the basis
    grid: tuple[int, int] = (75, 302)  # radial, angular points per atom
    density_fit: bool = False
    conv_tol: float = 1e-9  # Hartree
    max_cycle: int = 100  # SCF iterations per rung of the retry ladder
    device: str = "auto"  # "auto" (CUDA when present and gpu4pyscf imports), "cpu" or "cuda"; same numbers

    @property
    def use_cartesian(self) -> bool:
        return gaussian_cartesian(self.basis) if self.cartesian is None else self.cartesian

    @property
    def basis_convention(self) -> str:
        return "cartesian" if self.use_cartesian else "spherical"

    @property
    def name(self) -> str:
        """Method/basis as COMP6's ``lot`` spells it, e.g. ``wb97x/6-31g*``."""
        return f"{self.method.lower()}/{self.basis.lower()}"

    @property
    def tag(self) -> str:
        """The level as labels record it (their ``method``): ``wb97x/6-31g*``, ``wb97x/6-31g*/df`` with
        density fitting (a store or a campaign never mixes the two)."""
        return self.name + ("/df" if self.density_fit else "")

    def columns(self) -> dict:
        """The level's provenance columns of a label (:class:`anif.labeling.record.Label`)."""
        return {"method": self.tag, "basis": self.basis.lower(), "basis_convention": self.basis_convention,
                "density_fit": int(self.density_fit), "grid": f"{self.grid[0]},{self.grid[1]}"}

    @property
    def is_hf(self) -> bool:
        return self.method.lower() in ("hf", "rhf", "uhf")


#: Where the SCF runs: ``auto`` picks ``cuda`` when torch sees a CUDA device and gpu4pyscf imports.
DEVICES = ("auto", "cpu", "cuda")
