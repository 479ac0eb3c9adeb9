"""Labels: the reference method (wB97X/6-31G(d) with PySCF: single points, optimisation, normal
modes; :mod:`.reference`), its level of theory (:mod:`.settings`), the oracle interface that
``anif label`` and the campaign share (:mod:`.oracles`), the label record both write
(:mod:`.record`), ``anif label``'s batches (:mod:`.batch`) and labels from a teacher model
(:mod:`.teacher`). Names load their submodule on first use, so importing the package (or its
settings) stays cheap."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "settings": ("DEVICES", "Level"),
    "record": ("Label",),
    "reference": ("check_level", "hessian", "label_structure", "optimize", "resolve_device", "structure_key"),
    "oracles": ("ModelMinimaOracle", "Oracle", "PySCFOracle", "TeacherOracle", "label_task"),
    "batch": ("failures_path", "label_file", "read_input"),
    "teacher": ("write_teacher_data",),
})
