from setuptools import find_packages, setup

setup(
    name="anif",
    version="0.1.0",
    description="ANI-1x active learning on OpenMM: ensembles as OpenMM forces, samplers, labels, training",
    packages=find_packages(include=["anif", "anif.*"]),
    package_data={"anif": ["csrc/*.cpp", "data/*.smi"]},
    python_requires=">=3.10",
    install_requires=[
        "torch==2.9.1",  # openmmtorch 1.5 loads with this CPU-capable build; 2.13 needs CUDA libraries
        "openmm==8.5.2",  # 8.6.1 + openmmtorch 1.5 wheels: deepcopy/XML deserialize of a TorchForce segfaults (ABI)
        "openmmtorch==1.5",
        "torchani==2.9.0",
        "openmmml==1.7",  # 1.8 needs openmm>=8.6.1; 1.7 is the newest for 8.5.2
        "rdkit==2026.9.1",
        "mdtraj==1.11.1.post2",
        "h5py==3.16.0",
        "numpy==2.4.6",
        "scipy==1.17.1",
        "pyscf==2.14.0",
        "geometric==1.1.1",
        "dask[distributed]==2026.8.0",
        "matplotlib==3.11.2",
        "typer==0.29.2",
        "rich==15.0.0",
        "ninja==1.13.2",  # builds the compiled CPU kernels (anif.kernels) on first use
    ],
    extras_require={"test": ["pytest==9.2.0", "parmed==4.3.1"]},  # parmed writes Amber test inputs
    entry_points={
        "console_scripts": ["anif=anif.cli:main"],
        "openmmml.potentials": [
            "ani1x=anif.simulation.potential:AnifPotentialImplFactory",
            "anif=anif.simulation.potential:AnifPotentialImplFactory",
        ],
    },
)
