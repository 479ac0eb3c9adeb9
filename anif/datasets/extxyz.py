"""Extended XYZ in and out of the ANI HDF5 store, through ASE's reader and writer.

Extended XYZ is how the data sets of other ML-potential tools travel (MACE, NequIP, DeePMD via
dpdata, ASE databases). ASE's units are eV and eV/Angstrom; the store's are Hartree and
Hartree/Angstrom (:data:`anif.units.HARTREE_TO_EV`, ASE's own constant). Energies and forces are
found under configurable keys (``energy``/``forces`` by default: ASE's calculator results; other
keys in ``atoms.info`` / ``atoms.arrays``, e.g. MACE's ``REF_energy``/``REF_forces``). The
per-conformer columns of the store (provenance: ``source``, ``sampler``, ``al_cycle``,
``rho_kcal_mol``, ``method``; ``charge``, ``multiplicity`` and others when present) and the group
(``anif_group``) ride in each frame's comment line, so export then import gives the same store:
energies to float64 round-off, coordinates and forces to ASE's 8 decimals.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError

#: Energy units of an extended XYZ file: ASE's (eV, eV/A) or the store's (Hartree, Hartree/A).
UNITS = ("ev", "hartree")
#: Comment-line key holding the store's group name.
GROUP_KEY = "anif_group"
#: Store columns that are not per-conformer scalars to carry in the comment line.
_NOT_CARRIED = ("species", "coordinates", "energies", "forces", "structure_key")
#: Comment-line keys that ASE itself writes or reads, never store columns.
_ASE_KEYS = ("pbc", "Lattice", "Properties", "energy", "free_energy", "forces", "stress", "virial")


def _per_ev(units: str) -> float:
    """Factor from the file's energy unit to Hartree."""
    from ..units import HARTREE_TO_EV

    if units.lower() not in UNITS:
        raise InputError(f"unknown --units {units!r} (use {' or '.join(UNITS)})")
    return 1.0 / HARTREE_TO_EV if units.lower() == "ev" else 1.0


def _value(atoms, key: str, per_atom: bool):
    """A frame's value under ``key``: calculator results, then info (per frame) or arrays (per atom)."""
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    if key in results:
        return results[key]
    where = atoms.arrays if per_atom else atoms.info
    return where.get(key)


def read_extxyz(path: str | Path, energy_key: str = "energy", forces_key: str = "forces", units: str = "ev"):
    """Frames of an extended XYZ file as (group or None, numbers, coordinates A, energy Ha, forces Ha/A or
    None, {column: value}); every frame must hold an energy. Raises InputError with the reason."""
    import ase.io

    path = Path(path)
    scale = _per_ev(units)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        frames = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(f"{path}: not a readable extended XYZ file ({reason})") from None
    if not frames:
        raise InputError(f"{path}: contains no frames")
    out = []
    for i, atoms in enumerate(frames, 1):
        energy = _value(atoms, energy_key, per_atom=False)
        if energy is None:
            raise InputError(f"{path}: frame {i} has no energy under {energy_key!r} (--energy-key); "
                             "anif stores labelled conformers only")
        try:
            energy = float(energy) * scale
        except (TypeError, ValueError):
            raise InputError(f"{path}: frame {i}: energy {energy!r} under {energy_key!r} is not a number") from None
        forces = _value(atoms, forces_key, per_atom=True)
        if forces is not None:
            forces = np.asarray(forces, dtype=np.float64)
            if forces.shape != (len(atoms), 3):
                raise InputError(f"{path}: frame {i}: {forces_key!r} has shape {forces.shape}, not ({len(atoms)}, 3)")
            forces = forces * scale
        columns = {}
        for key, value in atoms.info.items():
            if key in _ASE_KEYS or key in (energy_key, GROUP_KEY):
                continue
            if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
                columns[key] = value.item() if isinstance(value, np.generic) else value
        group = atoms.info.get(GROUP_KEY)
        out.append((str(group) if group is not None else None, atoms.numbers.astype(np.int64),
                    np.asarray(atoms.positions, dtype=np.float64), energy, forces, columns))
    return out


def import_extxyz(path: str | Path, out: str | Path, energy_key: str = "energy", forces_key: str = "forces",
                  units: str = "ev", method: Optional[str] = None) -> tuple[int, int]:
    """Append an extended XYZ file's frames to the label store ``out`` (kind "labels"); (frames, added).

    ``method`` sets the level of theory of frames that carry none (a ``method`` in the comment line
    wins). Everything is read and checked before the store is opened: a bad file writes nothing.
    """
    from .store import PROVENANCE, open_output

    frames = read_extxyz(path, energy_key, forces_key, units)
    with_forces = [f[4] is not None for f in frames]
    if any(with_forces) and not all(with_forces):
        missing = with_forces.index(False) + 1
        raise InputError(f"{path}: frame {missing} has no {forces_key!r} while others do; give all frames forces "
                         "or none")
    batches: "OrderedDict[tuple, list]" = OrderedDict()
    for group, numbers, coords, energy, forces, columns in frames:
        if method is not None and not columns.get("method"):
            columns["method"] = method
        batches.setdefault((group, tuple(int(z) for z in numbers)), []).append((coords, energy, forces, columns))
    store = open_output(out, kind="labels")
    added = 0
    with store.transaction():
        for (group, numbers), rows in batches.items():
            properties = {}
            for name in sorted({k for r in rows for k in r[3]}):  # a column some frames lack: its unset value
                given = [r[3][name] for r in rows if name in r[3]]
                text = isinstance(PROVENANCE.get(name), str) or any(isinstance(v, str) for v in given)
                unset = PROVENANCE.get(name, "" if text else np.nan)
                values = [r[3].get(name, unset) for r in rows]
                properties[name] = (np.array([str(v) for v in values], dtype=object) if text
                                    else np.asarray(values))
            forces = np.stack([r[2] for r in rows]) if rows[0][2] is not None else None
            added += store.append(group, list(numbers), np.stack([r[0] for r in rows]),
                                  np.array([r[1] for r in rows]), forces, **properties)
    return len(frames), added


def export_extxyz(path: str | Path, out: str | Path, energy_key: str = "energy", forces_key: str = "forces",
                  units: str = "ev") -> int:
    """Write every conformer of an ANI-format store to an extended XYZ file with ASE; returns how many.

    Legacy-layout (COMP6 v1) gradients are written as forces. The file is written whole or not at all.
    """
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from .store import DatasetStore, stored_forces
    from ..outputs import atomic_write_text

    scale = 1.0 / _per_ev(units)
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out}: is a folder, not a file")
    store = DatasetStore(path, "r")
    frames = []
    for group, data in store:
        if "energies" not in data:
            raise InputError(f"{path}: group {group} has no energies")
        coords = np.asarray(data["coordinates"], dtype=np.float64)
        numbers = np.asarray(data["species"]).reshape(-1, coords.shape[1])[0]
        forces = data.get("forces")
        if forces is not None:
            forces = stored_forces(forces, store.legacy).reshape(coords.shape)
        columns = {k: np.asarray(v) for k, v in data.items()
                   if k not in _NOT_CARRIED and np.ndim(v) == 1 and len(v) == len(coords)}
        for c in range(len(coords)):
            atoms = ase.Atoms(numbers=numbers, positions=coords[c])
            results = {}
            info = {GROUP_KEY: group}
            for key, values in columns.items():
                value = values[c]
                value = value.decode() if isinstance(value, bytes) else value
                value = value.item() if isinstance(value, np.generic) else value
                if isinstance(value, str) and not value:
                    continue  # unset; ASE cannot write an empty value
                info[key] = value
            energy = float(data["energies"][c]) * scale
            if energy_key == "energy":
                results["energy"] = energy
            else:
                info[energy_key] = energy
            if forces is not None:
                if forces_key == "forces":
                    results["forces"] = forces[c] * scale
                else:
                    atoms.arrays[forces_key] = forces[c] * scale
            atoms.info.update(info)
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
            frames.append(atoms)
    if not frames:
        raise InputError(f"{path}: contains no conformers")
    import io

    buffer = io.StringIO()
    ase.io.write(buffer, frames, format="extxyz")
    try:
        atomic_write_text(out, buffer.getvalue())
    except OSError as exc:
        raise InputError(f"{out}: cannot write there ({exc.strerror or exc})") from None
    return len(frames)
