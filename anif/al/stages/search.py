"""Search (Fig. 2b, configurational search): draw molecules from the sources ([search]), staged by
size, embed them (RDKit + UFF) and score them with the last ensemble; the failing ones (rho >
rho_hat) join the molecules the next stages optimise and sample. In the bootstrap: the test-set
molecules and the small molecules to start from."""

from __future__ import annotations

import logging

import numpy as np

from ...seeds import seed_of
from ...structures import Structure, conformers_from_smiles, from_smiles
from ..config import Config
from ..ledger import Ledger, SearchEntry, WorkItem
from ..sources import canonical, covering, heavy_atoms, unsearched
from .context import StageContext, kill_point

log = logging.getLogger("anif.al")


def run(ctx: StageContext) -> None:
    if ctx.cycle.kind == "bootstrap":
        _bootstrap_molecules(ctx)
    else:
        _configurational_search(ctx)


def source_molecules(ledger: Ledger, config: Config, cycle: int):
    """Source molecules not searched before ``cycle`` (nor held out), and the unusable ones with reasons."""
    searched = ledger.searched_before(cycle)
    held_out = {canonical(smi) for t in config.test_sets for smi in t.smiles}
    held_out |= {canonical(m.smiles) for m in ledger.molecules(before=cycle, with_smiles=True)}
    return unsearched(config.search, searched, held_out)


def _bootstrap_molecules(ctx: StageContext) -> None:
    """Test-set molecules, and (without a bootstrap dataset) the small molecules to start from."""
    from ...sampling.search import gdb11_like

    cycle, seed, ledger = ctx.cycle.cycle, ctx.seed, ctx.ledger
    if ledger.count_molecules(cycle):
        return  # inserted before a kill
    with ledger.transaction():
        held_out = set()
        for t in ctx.config.test_sets:
            for k, smiles in enumerate(t.smiles):
                held_out.add(canonical(smiles))
                s = from_smiles(smiles, seed=seed_of(seed, "test", t.name, k), name=f"{t.name}:{smiles}")
                ledger.insert_molecule(cycle, f"test:{t.name}", s, smiles, f"test:{t.name}")
        if ctx.config.bootstrap.dataset:
            for m in _dataset_minima(ctx.config.bootstrap.dataset):
                ledger.insert_molecule(cycle, "train", m, "", "bootstrap")
            return
        b = ctx.config.bootstrap
        if b.smiles:
            chosen = [(s, s) for s in b.smiles]
        else:
            pool = [(s, n) for s, n in gdb11_like()
                    if heavy_atoms(s) <= b.max_heavy_atoms and canonical(s) not in held_out]
            order = np.random.default_rng(seed_of(seed, "bootstrap")).permutation(len(pool))
            chosen = covering([pool[i] for i in order], b.molecules)
        for k, (smiles, name) in enumerate(chosen):
            for s in conformers_from_smiles(smiles, b.starts, seed=seed_of(seed, "bootstrap", k), name=name):
                ledger.insert_molecule(cycle, "train", s, smiles, "bootstrap")


def _dataset_minima(dataset: str) -> list[Structure]:
    """The lowest-energy conformer of every molecule of the bootstrap dataset."""
    from ...datasets.comp6 import read_comp6_file

    out = []
    for m in read_comp6_file(dataset, subset="bootstrap"):
        c = int(np.argmin(m.energies))
        out.append(Structure(m.species, m.coordinates[c], name=m.name))
    return out


def _payloads(ctx: StageContext, chosen: list) -> list[tuple]:
    """The search's work items: (source, (smiles, name) chunk, ready structures), random dimers last."""
    from ...sampling.search import RANDOM_DIMERS, random_dimers

    cycle, search = ctx.cycle.cycle, ctx.config.search
    payloads = []
    for source in sorted({m[0] for m in chosen}):
        mols = [(m[2], m[1]) for m in chosen if m[0] == source]
        payloads += [(source, mols[i:i + search.chunk], []) for i in range(0, len(mols), search.chunk)]
    if search.random_dimers:
        monomers = [m.minimum() for m in ctx.ledger.molecules(before=cycle, role="train", status="ok")]
        if monomers:
            dimers = random_dimers(monomers, search.random_dimers, seed_of(ctx.seed, cycle, "dimers"))
            payloads.append((RANDOM_DIMERS, [], dimers))
    return payloads


def _configurational_search(ctx: StageContext) -> None:
    from ...sampling.parallel import sampler_items

    cycle, seed, ledger, rho_hat = ctx.cycle.cycle, ctx.seed, ctx.ledger, ctx.cycle.rho_hat
    stages = ctx.config.search.size_stages
    limit = stages[min(ledger.configurational_before(cycle), len(stages) - 1)]
    pool, skipped = source_molecules(ledger, ctx.config, cycle)
    with ledger.transaction():
        for source, name, smiles, reason in skipped:
            ledger.add_search(SearchEntry(cycle, source, name, smiles, "skipped", reason=reason))
    eligible = [m for m in pool if m[3] <= limit]
    rng = np.random.default_rng(seed_of(seed, cycle, "search"))
    n = min(ctx.config.search.molecules_per_cycle, len(eligible))
    chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), size=n, replace=False))] if n else []
    log.info("configurational search: %d molecules with <= %d heavy atoms (%d eligible)", n, limit, len(eligible))
    payloads = _payloads(ctx, chosen)
    done = ledger.done_items(cycle, "search")
    todo = [i for i in range(len(payloads)) if i not in done]
    results = sampler_items(ctx.pool.client(), "search", ctx.previous_model(), [payloads[i] for i in todo],
                            rho_hat, seed_of(seed, cycle, "search-embed"), indices=todo)
    for item, result in results:
        with ledger.transaction():
            if isinstance(result, BaseException):
                ledger.record_item(WorkItem(cycle, "search", item, "failed", 0, f"{type(result).__name__}: {result}"))
                continue
            for name, reason in result.skipped:
                source = payloads[item][0]
                smiles = dict((nm, sm) for sm, nm in payloads[item][1]).get(name, "")
                ledger.add_search(SearchEntry(cycle, source, name, smiles, "skipped", reason=reason))
            for c in result.scored:
                failing = c.rho_kcal_mol > rho_hat
                smiles = c.provenance.get("smiles", "")
                ledger.add_search(SearchEntry(cycle, c.provenance["source"], c.structure.name, smiles,
                                              "failing" if failing else "passing",
                                              int((c.structure.numbers > 1).sum()), c.rho_kcal_mol))
                if failing or ctx.config.qbc.strategy == "random":  # random: every searched molecule joins
                    ledger.insert_molecule(cycle, "train", c.structure, smiles, c.provenance["source"])
            ledger.record_item(WorkItem(cycle, "search", item, "done", len(result.candidates)))
        kill_point("search")
    _keep(ctx)


def _keep(ctx: StageContext) -> None:
    """``[search] keep``: of the searched molecules that joined (QBC: rho > rho_hat; random: all), keep a seeded
    uniform draw; the others are passed over. Random dimers are not counted. A function of the cycle's
    molecules alone, so a resumed cycle keeps the same ones."""
    from ...sampling.search import RANDOM_DIMERS

    cycle, ledger, keep = ctx.cycle.cycle, ctx.ledger, ctx.config.search.keep
    mols = sorted((m for m in ledger.molecules(cycle=cycle, role="train") if m.source != RANDOM_DIMERS),
                  key=lambda m: m.name)
    if not keep or len(mols) <= keep:
        return
    order = np.random.default_rng(seed_of(ctx.seed, cycle, "search-keep")).permutation(len(mols))
    with ledger.transaction():
        for i in order[keep:]:
            ledger.molecule_passed_over(mols[i].id, f"not among the {keep} molecules kept ([search] keep)")
