"""Training ANI ensembles as ANI-1x was trained (``anif train``): the settings (:mod:`.settings`),
the conformers, folds and batches (:mod:`.data`) and the members' training (:mod:`.trainer`).
Names load their submodule on first use, so importing the package (or its torch-free settings)
stays cheap."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "settings": ("ARCHITECTURES", "DEFAULT_FORCE_WEIGHT", "INITIAL_LR", "MIN_LR_FRACTION", "TrainSettings"),
    "data": ("ConformerSet", "TrainingData", "assign_folds", "read_conformers"),
    "trainer": ("TrainResult", "train_ensemble"),
})
