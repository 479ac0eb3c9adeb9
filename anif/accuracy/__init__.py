"""Accuracy against reference labels: the paper's E, dE and F errors on COMP6, tables and
figures (:mod:`.metrics`, ``anif bench``), and the QBC threshold rho_hat calibrated as in the
paper's Fig. 1 (:mod:`.calibration`, ``anif qbc``) with its defaults (:mod:`.settings`). Names load
their submodule on first use."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "settings": ("CAPTURE", "PAPER_ERROR_BOUND", "RHO_HAT"),
    "calibration": ("Calibration", "calibrate"),
    "metrics": ("METRIC_KEYS", "MoleculePrediction", "calibrated_spearman", "compute_metrics", "predict",
                "qbc_ranking", "spearman_interval"),
})
