"""One sampler contract, registered once (anif.sampling.registry): the campaign config, the Dask
work items and the campaign's sample stage read every sampler from the registry."""

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from anif.accuracy.settings import RHO_HAT
from anif.al import config
from anif.cli import sample
from anif.errors import InputError
from anif.sampling import parallel, registry
from anif.sampling.settings import DimerSettings, DNMSSettings, FrameSettings, RTSSettings


def _toy(model, payload, rho_hat, seed, settings=None):
    return [(model, payload, rho_hat, seed, settings)]


def test_the_shipped_samplers_and_what_they_declare():
    s = registry.samplers()
    assert list(s) == ["dnms", "rts", "md", "dimers", "search"]
    assert registry.conformational() == ("dnms", "rts", "md", "dimers")
    assert [(x.settings, x.section) for x in s.values()] == [
        (DNMSSettings, "dnms"), (RTSSettings, "rts"), (FrameSettings, "md"), (DimerSettings, "dimers"), (None, "")]
    assert [x.needs for x in s.values()] == ["minimum", "molecule", "molecule", "box", "chunk"]
    for x in s.values():
        assert callable(x.function())
    # what the sample stage derives from them
    assert s["rts"].threshold(0.23, -math.inf) == 0.23 and s["dnms"].threshold(0.23, -math.inf) == -math.inf
    assert s["md"].threshold(0.23, 0.23) == 0.23 and s["md"].threshold(0.23, -math.inf) == -math.inf
    assert s["dnms"].provenance(("structure", None)) == {"hessian": "ensemble"}
    assert s["dnms"].provenance(("structure", "H")) == {"hessian": "oracle"}


def test_config_sections_and_ranges_come_from_the_registry():
    for name, sampler in registry.samplers().items():
        if sampler.section:
            assert config._sections()[sampler.section] == (sampler.settings, sampler.fixed)
            assert all(config._bounds(sampler.section, k) == v for k, v in sampler.ranges.items())


@dataclass(frozen=True)
class ToySettings:
    temperature: float = 300.0  # K
    n: int = 2


def test_a_new_sampler_is_one_registration(monkeypatch):
    toy = registry.Sampler("toy", f"{__name__}:_toy", "molecule", ToySettings, "toy", fixed=("n",),
                           ranges={"temperature": (0, 20000, True)}, description="Toy sampling.",
                           flags=(registry.Flag("temperature", "--temperature", "K"),
                                  registry.Flag("n", "--draws", "draws")))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register(toy)
    assert registry.get("toy") is toy and "toy" in registry.conformational()
    monkeypatch.setattr(parallel, "cached_model", lambda spec: f"model {spec}")
    out = dict(parallel.sampler_items(None, "toy", "m", ["a", "b"], 0.5, 7, settings="s", indices=[3, 4]))
    assert sorted(out) == [3, 4]
    assert [r[0][:3] for r in (out[3], out[4])] == [("model m", "a", 0.5), ("model m", "b", 0.5)]
    assert out[3][0][4] == "s" and out[3][0][3] != out[4][0][3]  # per-item seeds
    # the campaign config: its section, its fixed keys and ranges, a name [conformational] samplers accepts
    raw = {"campaign": {}, "conformational": {"samplers": ["toy", "dnms"]}, "toy": {"temperature": 500},
           "test_sets": {"t": {"smiles": ["CCO"]}}}
    cfg = config.parse_config(raw, Path("."))
    assert cfg.samplers["toy"] == ToySettings(temperature=500.0) and cfg.samplers["dnms"] == DNMSSettings()
    assert cfg.as_dict()["toy"] == {"temperature": 500.0, "n": 2} and cfg.conformational.samplers == ("toy", "dnms")
    with pytest.raises(InputError, match=r"\[toy\] temperature must be > 0 and <= 20000, got -1"):
        config.parse_config({**raw, "toy": {"temperature": -1}}, Path("."))
    with pytest.raises(InputError, match=r"\[toy\]: unknown key\(s\) n \(allowed: temperature\)"):
        config.parse_config({**raw, "toy": {"n": 3}}, Path("."))
    # its command: the shared options, its flags with the settings' defaults and the bounds of its ranges
    monkeypatch.setattr(sample, "sample_app", typer.Typer())
    sample._add_command(toy)
    sample.sample_app.command("other")(lambda: None)  # a group, as `anif sample` is
    command = typer.main.get_command(sample.sample_app).commands["toy"]
    assert command.help == "Toy sampling." and [p.opts[0] for p in command.params] == [
        "--smiles", "--input", "--model", "--rho-hat", "--seed", "--out", "--temperature", "--draws", "--workers",
        "--scheduler"]
    params = command.make_context("toy", ["--smiles", "C", "--out", "c.h5", "--draws", "5"]).params
    assert (params["temperature"], params["n"], params["rho_hat"]) == (300.0, 5, RHO_HAT)
    with pytest.raises(typer.BadParameter, match="must be > 0 and at most 20000"):
        command.make_context("toy", ["--smiles", "C", "--out", "c.h5", "--temperature", "-3"])


def test_the_sample_commands_are_the_registered_samplers():
    """One command per registered sampler, named as it, with its registered help; flags and defaults as before."""
    from anif.cli import app

    group = typer.main.get_command(app).commands["sample"]
    assert list(group.commands) == list(registry.samplers())
    for name, s in registry.samplers().items():
        assert group.commands[name].help == s.description
    rts = group.commands["rts"].make_context("rts", ["--smiles", "C", "--out", "c.h5", "--time-ps", "2.5"]).params
    assert (rts["ramp_ps"], rts["t_start"], rts["timestep_fs"], rts["repeats"]) == (2.5, 300.0, 0.5, 4)
    dimers = group.commands["dimers"].make_context("dimers", ["C", "--out", "c.h5", "--boxes", "2"]).params
    assert (dimers["inputs"], dimers["boxes"], dimers["molecules"]) == (["C"], 2, DimerSettings().molecules)
