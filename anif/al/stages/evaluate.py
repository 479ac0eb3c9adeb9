"""Evaluate (Fig. 2, "test"): the cycle's ensemble on every test set: E, dE and F errors, how rho
and the members' force disagreement rank the errors, each test structure's rho, force disagreement
and error; optionally rho_hat recalibrated on the first test set ([qbc] recalibrate). After the
bootstrap: the starting ensemble and ANI-1x too, the report's reference lines."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...errors import InputError
from ..ledger import Metrics, TestError
from .context import TEST_DIR, StageContext, model_dir

log = logging.getLogger("anif.al")


def run(ctx: StageContext) -> None:
    from ...accuracy import predict
    from ...models import load_model
    from ...accuracy.calibration import calibrate

    cycle, rho_hat, ledger = ctx.cycle.cycle, ctx.cycle.rho_hat, ctx.ledger
    model = load_model(str(model_dir(ctx.folder, cycle))).double()
    tests = {t.name: _test_molecules(ctx, t.name) for t in ctx.config.test_sets}
    first = None
    with ledger.transaction():
        for name, molecules in tests.items():
            predictions = predict(model, molecules, progress=ctx.progress, member_forces=True)
            _record_metrics(ctx, "metrics", ("cycle", cycle), name, predictions, rho_hat)
            first = first or predictions
            rows = [(p.molecule.species.shape[0], float(r), float(e), float(f)) for p in predictions
                    for r, e, f in zip(p.rho_kcal_mol, p.energy_error_kcal, p.force_spread_kcal_mol_a)]
            ledger.put_test_errors(cycle, [TestError(name, k, *r) for k, r in enumerate(rows)])
        q = ctx.config.qbc
        if q.recalibrate:
            try:
                cal = calibrate(np.concatenate([p.rho_kcal_mol for p in first]),
                                np.concatenate([p.worst_member_error_per_sqrt_atom for p in first]),
                                np.concatenate([p.energy_error_kcal for p in first]), q.error_bound, q.capture)
                ledger.set(f"rho_hat_after_{cycle}", cal.rho_hat)
                log.info("rho_hat recalibrated on %s: %.4f kcal/mol", ctx.config.test_sets[0].name, cal.rho_hat)
            except InputError as exc:
                ledger.set(f"rho_hat_after_{cycle}", None)
                log.info("rho_hat not recalibrated (%s)", exc)
    if cycle == 0:
        _evaluate_baselines(ctx, tests, rho_hat)


def _test_molecules(ctx: StageContext, name: str) -> list:
    from ...datasets.comp6 import read_comp6_file

    t = next(t for t in ctx.config.test_sets if t.name == name)
    path = Path(t.file) if t.file else ctx.folder / TEST_DIR / f"{name}.h5"
    return read_comp6_file(path, subset=name)


def _record_metrics(ctx: StageContext, table: str, key: tuple[str, object], test_set: str, predictions,
                    rho_hat: float) -> None:
    """Store the E/dE/F errors and rho ranking of ``predictions`` on a test set in ``table`` under
    ``key`` (column, value)."""
    from ...accuracy import compute_metrics, qbc_ranking

    m = compute_metrics(predictions)["overall"]
    ranking = qbc_ranking(predictions, rho_hat)
    ctx.ledger.put_metrics(table, key[0], key[1], Metrics(
        test_set, m["E_rmse"], m["E_mae"], m["dE_rmse"], m["dE_mae"], m["F_rmse"], m["F_mae"], m["n_conformers"],
        ranking.spearman, ranking.captured, ranking.n_bad, ranking.force_spearman))
    spearman = "n/a" if ranking.spearman is None else f"{ranking.spearman:.2f}"
    if ranking.spearman_ci95 is not None:
        spearman += " (95%% interval %.2f to %.2f; a calibrated committee's: %.2f)" % (
            *ranking.spearman_ci95, ranking.spearman_calibrated)
    forces = "n/a" if ranking.force_spearman is None else f"{ranking.force_spearman:.2f}"
    log.info("%s %s on %s: E RMSE %.3f kcal/mol (%d conformers), rho-vs-error Spearman %s, force disagreement's %s",
             key[0], key[1], test_set, m["E_rmse"], m["n_conformers"], spearman, forces)


def _evaluate_baselines(ctx: StageContext, tests: dict, rho_hat: float) -> None:
    """The starting ensemble's ([campaign] init) and ANI-1x's errors on the test sets, for the
    report's reference lines; ANI-1x is skipped when it is the oracle or cannot be loaded."""
    from ...accuracy import predict
    from ...models import load_model

    names: dict[str, list[str]] = {}  # model spec -> baseline names (init = "ani1x" is both: evaluated once)
    if ctx.config.campaign.init:
        names.setdefault(ctx.config.campaign.init, []).append("start")
    if ctx.config.campaign.oracle != "model:ani1x":
        names.setdefault("ani1x", []).append("ani1x")
    for spec, labels in names.items():
        try:
            model = load_model(spec).double()
        except Exception as exc:  # ANI-1x not available offline: the report shows no ANI-1x line
            log.info("baseline %s not evaluated (%s)", spec, exc)
            continue
        with ctx.ledger.transaction():
            for test_set, molecules in tests.items():
                predictions = predict(model, molecules, progress=ctx.progress, member_forces=True)
                for label in labels:
                    _record_metrics(ctx, "baselines", ("model", label), test_set, predictions, rho_hat)
