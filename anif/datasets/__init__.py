"""Data on disk: the crash-safe ANI-format HDF5 store with merge, split and summary
(:mod:`.store`), COMP6 readers (:mod:`.comp6`) and extended XYZ in and out (:mod:`.extxyz`).
The molecule lists shipped with anif are package data in ``anif/data/``. Names load their
submodule on first use, so importing the package stays cheap."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "store": ("CANDIDATE_METHOD", "PROVENANCE", "STORE_KINDS", "DatasetStore", "check_labels", "merge",
              "open_output", "read_any", "split", "stored_forces", "structure_keys", "summary"),
    "comp6": ("Comp6Molecule", "read_comp6", "read_comp6_file"),
    "extxyz": ("export_extxyz", "import_extxyz", "read_extxyz"),
})
