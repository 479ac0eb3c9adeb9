"""The paper's samplers: configurational search, DNMS, RTS and dimer sampling.

Every sampler returns :class:`Candidate` objects (structure, rho in kcal/mol, ensemble energy,
provenance); :func:`write_candidates` stores them through :class:`anif.datasets.DatasetStore`.
RTS and dimer sampling drive OpenMM simulations with the ensemble force through the reporters
in :mod:`anif.openmm_plugin.sampling_reporters`. :mod:`anif.sampling.parallel` runs any of them
over many molecules on the Dask pool.
"""

from .candidates import Candidate, molecule_seed, score, write_candidates
from .dimers import DimerSettings, run_dimer_box, sample_dimers
from .dnms import DNMSSettings, diversity_select, kabsch_rmsd, sample_dnms
from .rts import RTSSettings, rts_trajectory, sample_rts
from .search import SearchResult, configurational_search, dipeptides, gdb11_like, random_dimers, read_smiles_file

__all__ = [
    "Candidate",
    "DNMSSettings",
    "DimerSettings",
    "RTSSettings",
    "SearchResult",
    "configurational_search",
    "dipeptides",
    "diversity_select",
    "gdb11_like",
    "kabsch_rmsd",
    "molecule_seed",
    "random_dimers",
    "read_smiles_file",
    "rts_trajectory",
    "run_dimer_box",
    "sample_dimers",
    "sample_dnms",
    "sample_rts",
    "score",
    "write_candidates",
]
