"""Optimise (Fig. 2b, "optimise at the reference level"): the oracle's minimum (tight criteria)
and, where DNMS needs it, its Hessian for every new molecule; the optimised molecules join the
conformer sampling set (``sampling_set.h5``). MD test sets start from their embedded geometry."""

from __future__ import annotations

import time

import numpy as np

from ...distributed import as_completed_with_progress
from ...errors import AnifError
from ...labeling.oracles import Oracle
from ...structures import Structure
from .context import StageContext, kill_point


def prepare_task(structure: Structure, oracle: Oracle, with_hessian: bool) -> dict:
    """Optimise a molecule (and its Hessian at the minimum) for the conformer sampling set. A minimum
    whose bonds differ from the molecule's (e.g. H2O2 relaxed into two OH at 2.2 A) is a failure: it is
    another molecule, and MD from it flies apart."""
    from ...openmm_plugin.guard import bond_changes, bond_graph

    start = time.perf_counter()
    try:
        minimum, energy, converged = oracle.optimize(structure)
        change = bond_changes(structure.numbers, bond_graph(structure.numbers, structure.coordinates),
                              minimum.coordinates)
        if change:
            raise AnifError(f"the optimisation changed the molecule ({change})")
        h = oracle.hessian(minimum) if with_hessian else None
    except (AnifError, np.linalg.LinAlgError, ValueError, RuntimeError) as exc:
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}", "wall_time_s": time.perf_counter() - start}
    return {"ok": True, "coordinates": minimum.coordinates, "energy": energy, "converged": converged,
            "hessian": h, "wall_time_s": time.perf_counter() - start}


def run(ctx: StageContext) -> None:
    cycle, ledger = ctx.cycle.cycle, ctx.ledger
    md_tests = {f"test:{t.name}" for t in ctx.config.test_sets if t.sampler == "md"}
    with ledger.transaction():  # MD test sets start from the embedded geometry: the MD equilibrates it
        for m in ledger.molecules(cycle=cycle, status="pending"):
            if m.role in md_tests:
                ledger.molecule_at_start(m.id)
    pending = ledger.molecules(cycle=cycle, status="pending")
    if pending:
        structures = [m.embedded() for m in pending]
        need = [ctx.cycle.kind == "bootstrap" or m.role != "train" or ctx.config.oracle.hessian for m in pending]
        for flag in (True, False):  # Hessians where needed; one pass each keeps the task arguments plain
            index = [i for i in range(len(pending)) if need[i] == flag]
            if not index:
                continue
            results = as_completed_with_progress(ctx.pool.client(), prepare_task, [structures[i] for i in index],
                                                 "optimize (oracle)", oracle=ctx.oracle, with_hessian=flag)
            for j, result in results:
                m = pending[index[j]]
                with ledger.transaction():
                    if isinstance(result, BaseException) or not result["ok"]:
                        reason = result["reason"] if isinstance(result, dict) else f"{type(result).__name__}: {result}"
                        ledger.molecule_failed(m.id, reason)
                    else:
                        ledger.molecule_optimised(m.id, result["coordinates"], result["energy"], result["hessian"],
                                                  "" if result["converged"] else "optimisation not converged",
                                                  result["wall_time_s"])
                kill_point("optimize")
    molecules = ledger.molecules(cycle=cycle)
    for role in sorted({m.role for m in molecules}):
        ok = [m for m in molecules if m.role == role and m.status == "ok"]
        if not ok and (role != "train" or ctx.cycle.kind == "bootstrap"):
            failed = [m for m in molecules if m.role == role]
            raise AnifError(f"the oracle could not optimise any {role} molecule of cycle {cycle} "
                            f"({len(failed)} failed, e.g. {failed[0].name}: {failed[0].reason})")
    ctx.sync_stores()
