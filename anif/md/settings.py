"""Defaults of an MD run (:func:`anif.md.run_md`, ``anif md``); free of torch and OpenMM so that
the command line shows them cheaply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MDSettings:
    """Langevin MD: thermostat temperature, time step, friction, and how often frames are written."""

    temperature: float = 300.0  # K
    timestep_fs: float = 0.5  # fs
    friction: float = 1.0  # 1/ps
    report_every: int = 10  # steps between DCD frames and qbc.csv rows


MD_DEFAULTS = MDSettings()
