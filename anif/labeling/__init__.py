"""Labels: the reference method (wB97X/6-31G(d) with PySCF: single points, optimisation, normal
modes, ``anif label``; :mod:`.reference`), its level of theory (:mod:`.settings`) and labels from a
teacher model (:mod:`.teacher`). Names load their submodule on first use, so importing the
package (or its settings) stays cheap."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "settings": ("DEVICES", "Level"),
    "reference": ("check_level", "failures_path", "hessian", "label_file", "label_structure", "optimize",
                  "read_input", "resolve_device", "structure_key"),
    "teacher": ("write_teacher_data",),
})
