"""The paper's samplers: configurational search, DNMS, RTS and dimer sampling.

Every sampler returns :class:`Candidate` objects (structure, rho in kcal/mol, ensemble energy,
provenance); :func:`write_candidates` stores them through :class:`anif.datasets.DatasetStore`.
RTS and dimer sampling drive OpenMM simulations with the ensemble force through the reporters
in :mod:`anif.openmm_plugin.sampling_reporters`. :mod:`anif.sampling.parallel` runs any of them
over many molecules on the Dask pool; :mod:`anif.sampling.registry` registers each sampler once
(name, settings, needs, run function, provenance) for everything that runs one. The names below
load their submodule on first use, so importing the package (or its torch-free
:mod:`anif.sampling.settings`) stays cheap.
"""

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "candidates": ("Candidate", "score", "write_candidates"),
    "dimers": ("run_dimer_box", "sample_dimers"),
    "dnms": ("diversity_select", "sample_dnms"),
    "frames": ("md_frames", "sample_md"),
    "registry": ("Sampler", "register"),
    "rts": ("rts_trajectory", "sample_rts"),
    "search": ("SearchResult", "configurational_search", "dipeptides", "gdb11_like", "random_dimers",
               "read_smiles_file"),
    "settings": ("DNMSSettings", "DimerSettings", "FrameSettings", "RTSSettings"),
})
