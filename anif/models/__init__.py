"""ANI ensembles: loading and saving (:mod:`.ensemble`), the ensemble evaluated with all members
at once (:mod:`.kernels`, implementation ``"kernels"``), and the compiled CPU operators it runs on
(:mod:`.extension`, built from ``csrc/``). Names load their submodule on first use, so importing
the package stays cheap."""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "ensemble": ("IMPLEMENTATIONS", "MODEL_JSON", "MODEL_WEIGHTS", "Ensemble", "EnsembleResult", "StockAniEnsemble",
                 "build_ani", "cache_root", "check_supported", "evaluate", "load_ani", "load_model", "member_spread",
                 "pad_structures", "save_model", "score_force_spread", "score_structures", "supported_numbers", "force_spread"),
    "kernels": ("FusedAniEnsemble",),
})
