"""Settings of the samplers (RTS, dimers, DNMS); free of torch and OpenMM so that the command
line and campaign configs can read their defaults cheaply. Re-exported by each sampler module."""

from __future__ import annotations

from dataclasses import dataclass

from ..units import FS_PER_PS


@dataclass
class RTSSettings:
    """Random trajectory sampling: a Langevin run heated linearly from t_start to t_end."""

    t_start: float = 300.0  # K, thermostat at the start
    t_end: float = 1000.0  # K, thermostat at the end of the ramp
    ramp_ps: float = 4.0  # ps, heating time = trajectory length
    timestep_fs: float = 0.5  # fs
    friction: float = 1.0  # 1/ps
    repeats: int = 4  # trajectories per molecule (the paper's K)
    backend: str = "torch"  # the ensemble force: 'torch' (TorchForce) or 'python' (PythonForce)

    @property
    def steps(self) -> int:
        return int(round(self.ramp_ps * FS_PER_PS / self.timestep_fs))


@dataclass
class DimerSettings:
    """Periodic boxes of molecules run with Langevin MD and cut into dimer pairs every interval."""

    molecules: int = 24  # per box
    density: float = 0.6  # g/cm^3 of the packed box
    min_distance: float = 2.0  # A, closest contact between molecules when packing
    time_ps: float = 5.0  # ps of MD per box
    timestep_fs: float = 0.5  # fs
    temperature: float = 300.0  # K
    friction: float = 1.0  # 1/ps
    interval: int = 50  # steps between box cuts
    cutoff: float = 4.0  # A, closest contact of a dimer pair
    backend: str = "torch"  # the ensemble force: 'torch' (TorchForce) or 'python' (PythonForce)


@dataclass
class DNMSSettings:
    """Diverse normal-mode sampling around an optimised geometry."""

    temperature: float = 300.0  # K of the normal-mode displacements
    pool: int = 256  # normal-mode draws per molecule
    keep: int = 32  # most diverse draws QBC-tested per molecule
    min_rmsd: float = 0.05  # A after superposition: closer draws are near-duplicates
    bias: float = 2.0  # near-equilibrium bias exponent (1 = none)
    fd_step: float = 5e-3  # A, finite-difference step of the ensemble Hessian
    min_force_constant: float = 1e-3  # Ha/A^2 floor of the force constants (bounds soft-mode displacements)
    optimize: bool = True  # optimise with the ensemble first (False: the input is a minimum)
    hessian: str = "ensemble"  # 'ensemble' (finite differences) or 'reference' (PySCF)


@dataclass(frozen=True)
class FrameSettings:
    """Frames of one Langevin trajectory per molecule (:func:`anif.sampling.frames.md_frames`)."""

    temperature: float = 400.0  # K
    n: int = 8  # frames per molecule
    equilibration_ps: float = 0.5  # ps before the first frame
    interval_ps: float = 0.1  # ps between frames
    timestep_fs: float = 0.5  # fs
    friction: float = 1.0  # 1/ps
