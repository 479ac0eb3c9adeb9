"""Settings of the samplers (RTS, dimers, DNMS); free of torch and OpenMM so that the command
line and campaign configs can read their defaults cheaply. Re-exported by each sampler module."""

from __future__ import annotations

from dataclasses import dataclass

from ..units import FS_PER_PS


@dataclass
class RTSSettings:
    """RTS parameters: temperatures in K, times in ps / fs, friction in 1/ps."""

    t_start: float = 300.0
    t_end: float = 1000.0
    ramp_ps: float = 4.0
    timestep_fs: float = 0.5
    friction: float = 1.0
    repeats: int = 4
    backend: str = "torch"

    @property
    def steps(self) -> int:
        return int(round(self.ramp_ps * FS_PER_PS / self.timestep_fs))


@dataclass
class DimerSettings:
    """Box and MD parameters: density g/cm^3, lengths A, times ps / fs, temperature K."""

    molecules: int = 24
    density: float = 0.6
    min_distance: float = 2.0
    time_ps: float = 5.0
    timestep_fs: float = 0.5
    temperature: float = 300.0
    friction: float = 1.0
    interval: int = 50
    cutoff: float = 4.0
    backend: str = "torch"


@dataclass
class DNMSSettings:
    """DNMS parameters. Temperature in K, distances in A, force constants in Ha/A^2."""

    temperature: float = 300.0
    pool: int = 256
    keep: int = 32
    min_rmsd: float = 0.05
    bias: float = 2.0
    fd_step: float = 5e-3
    min_force_constant: float = 1e-3
    optimize: bool = True
    hessian: str = "ensemble"
