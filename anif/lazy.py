"""Packages whose names load their submodule on first use (PEP 562), so importing the package
stays cheap (no torch or OpenMM until a name that needs them is used)."""

from __future__ import annotations

import importlib


def lazy_exports(package: str, homes: dict[str, tuple[str, ...]]):
    """``(__all__, __getattr__)`` for ``package``; ``homes`` maps a submodule to the names it defines."""
    home = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str):
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{home[name]}", package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return sorted(home), __getattr__
