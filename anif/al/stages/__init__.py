"""The stages of a campaign's cycle, one module per box of Smith et al. (2018), Fig. 2.

=============  ==============================================  ==========================
stage          Fig. 2 box                                      module
=============  ==============================================  ==========================
``reduce``     (a) dataset reduction of a labelled set         :mod:`.reduce`
``search``     (b) configurational search of the sources       :mod:`.search`
``optimize``   (b) optimisation at the reference level         :mod:`.optimize`
``sample``     (c) conformational search: DNMS, RTS, dimers    :mod:`.sample`
``select``     QBC: rho > rho_hat                              :mod:`.select`
``label``      reference calculation (the oracle)              :mod:`.label`
``train``      train the ensemble                              :mod:`.train`
``evaluate``   test the ensemble                               :mod:`.evaluate`
=============  ==============================================  ==========================

Each stage is one function, ``run(ctx)``, of a :class:`~.context.StageContext` (the campaign's
folder, config, ledger, oracle and pool, and the :class:`~anif.al.ledger.Cycle` it runs in); it
commits its results to the ledger as they arrive and is idempotent, so a killed campaign resumes
at the stage it was in. :data:`STAGES` is the table the driver (:mod:`anif.al.campaign`) runs
them from; the names are those stored in the ledger's ``cycles.stage``.
"""

from __future__ import annotations

from typing import Callable

from . import evaluate, label, optimize, reduce, sample, search, select, train
from .context import StageContext

#: Stage name (as stored in the ledger) -> its entry point, in the order of a cycle.
STAGES: dict[str, Callable[[StageContext], None]] = {
    "reduce": reduce.run,
    "search": search.run,
    "optimize": optimize.run,
    "sample": sample.run,
    "select": select.run,
    "label": label.run,
    "train": train.run,
    "evaluate": evaluate.run,
}

#: Cycle kind -> its stages ("bootstrap-reduce": the bootstrap from a [bootstrap] dataset).
CYCLES = {
    "bootstrap": ("search", "optimize", "sample", "select", "label", "train", "evaluate"),
    "bootstrap-reduce": ("reduce", "search", "optimize", "sample", "select", "label", "train", "evaluate"),
    "configurational": ("search", "optimize", "sample", "select", "label", "train", "evaluate"),
    "conformational": ("sample", "select", "label", "train", "evaluate"),
}
