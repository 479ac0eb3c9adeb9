"""The campaign ledger's typed interface (anif.al.ledger): named methods that take and return records."""

import sqlite3

import numpy as np

from anif.al.ledger import CandidateRecord, Cycle, LabelRecord, Ledger, Molecule, SearchEntry, WorkItem, pack
from anif.al.report import stage_times, status
from anif.labeling.record import COLUMNS, Label
from anif.structures import Structure


def test_records_round_trip_and_filters(tmp_path):
    ledger = Ledger(tmp_path)
    with ledger.transaction():
        ledger.insert_cycle(Cycle(0, "bootstrap", "search", 0.23))
        water = Structure(np.array([8, 1, 1]), np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], float), name="w")
        ledger.insert_molecule(0, "train", water, "O", "bootstrap")
        ledger.insert_molecule(0, "test:t", water, "O", "test:t")
    assert ledger.last_cycle() == Cycle(0, "bootstrap", "search", 0.23)
    m = ledger.molecules(role="train")
    assert len(m) == 1 and isinstance(m[0], Molecule) and m[0].status == "pending"
    np.testing.assert_array_equal(m[0].embedded().coordinates, water.coordinates)
    with ledger.transaction():
        ledger.molecule_optimised(m[0].id, water.coordinates, -76.0, None, "", 1.0)
        ledger.advance(0, "sample", 2.5)
    assert [x.name for x in ledger.molecules(cycle=0, status="ok")] == ["w"]
    assert ledger.molecules(before=0) == [] and len(ledger.molecules(with_smiles=True)) == 2
    assert ledger.cycle(0).stage == "sample" and ledger.cycle(0).wall_s == 2.5
    with ledger.transaction():
        ledger.record_item(WorkItem(0, "nms", 0, "done", 1))
        ledger.insert_candidate(CandidateRecord(0, "nms", 0, 0, "train", "bootstrap", "w", pack(water.numbers),
                                                pack(water.coordinates), None, None, "k1", "{}"))
        c = ledger.candidates(0)[0]
        ledger.mark_selected(c.id)
        ledger.insert_label(LabelRecord("k1", 0, c.id, "train", "pending", "oracle", "dnms", "bootstrap", "w", None,
                                        c.numbers, c.coordinates, ledger.next_seq()))
        ledger.add_search(SearchEntry(0, "gdb11", "x", "C", "skipped", reason="why"))
    assert ledger.done_items(0, "nms") == {0} and ledger.searched_before(1) == {("gdb11", "x", "C")}
    [label] = ledger.pending_labels(0)
    assert label.structure().name == "w" and ledger.labels_total() == 0
    with ledger.transaction():
        ledger.settle_label("k1", Label("k1", True, -76.1, np.zeros((3, 3)), method="m", scf_iterations=7,
                                        program="p", wall_time_s=1.0, host="h"))
    [row] = ledger.labels(["k1"])
    assert ledger.labels_total() == 1 and row.energy == -76.1 and (row.wall_s, row.host) == (1.0, "h")
    assert row.label().columns() == {**COLUMNS, "method": "m", "scf_iterations": 7, "program": "p", "wall_time_s": 1.0,
                                     "host": "h", "name": "w"}
    assert status(tmp_path, ledger)["cycles"][0]["n_labelled"] == 1
    ledger.close()


def test_a_ledger_from_before_stage_times_reports_none(tmp_path):
    Ledger(tmp_path).close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        db.execute("DROP TABLE stage_times")
    ledger = Ledger(tmp_path, create=False)
    assert stage_times(ledger) == {}
    ledger.close()


def test_a_ledger_from_before_the_label_provenance_gains_it_and_keeps_its_labels(tmp_path):
    """A campaign's ledger from before the provenance columns reads (unknown values) and, opened to run,
    gains them; its labels keep their energies and the label stage can settle the pending ones."""
    from anif.al.ledger import LABEL_PROVENANCE

    ledger = Ledger(tmp_path)
    water = Structure(np.array([8, 1, 1]), np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], float), name="w")
    with ledger.transaction():
        for key, status_ in (("old", "ok"), ("todo", "pending")):
            ledger.insert_label(LabelRecord(key, 0, None, "train", status_, "dataset", "", "s", "w", None,
                                            pack(water.numbers), pack(water.coordinates), ledger.next_seq(),
                                            energy=-76.2 if status_ == "ok" else None, method="m"))
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        for name in LABEL_PROVENANCE:
            db.execute(f"ALTER TABLE labels DROP COLUMN {name}")
    old = Ledger(tmp_path, create=False)
    [row] = old.labels(["old"])
    assert row.energy == -76.2 and row.label().columns() == {**COLUMNS, "method": "m", "name": "w"}
    old.close()
    ledger = Ledger(tmp_path)
    with ledger.transaction():
        ledger.settle_label("todo", Label("todo", True, -76.3, np.ones((3, 3)), method="m", scf_strategy="diis"))
    new, old_row = ledger.labels(["todo"])[0], ledger.labels(["old"])[0]
    assert (new.energy, new.scf_strategy, old_row.energy, old_row.scf_strategy) == (-76.3, "diis", -76.2, "")
    np.testing.assert_array_equal(new.label().forces, np.ones((3, 3)))
    ledger.close()


def test_a_ledger_from_before_the_force_disagreement_reads_and_gains_its_columns(tmp_path):
    """Metrics and test errors stored before the force disagreement read back without it (None) from a
    ledger opened to read; opened to run, it gains the columns and stores the force disagreement."""
    from anif.al.ledger import Metrics, TestError

    ledger = Ledger(tmp_path)
    with ledger.transaction():
        ledger.put_metrics("metrics", "cycle", 0, Metrics("t", 1.0, 0.8, 1.2, 1.0, 3.0, 2.0, 4, 0.3, None, 0))
        ledger.put_test_errors(0, [TestError("t", 0, 5, 0.2, -1.5)])
    ledger.close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        for table, column in (("metrics", "force_spearman"), ("baselines", "force_spearman"),
                              ("test_errors", "force_spread")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    old = Ledger(tmp_path, create=False)
    [m] = old.metrics_by_test_set(0)
    assert (m.e_rmse, m.rho_spearman, m.force_spearman) == (1.0, 0.3, None)
    assert old.test_errors(0) == [TestError("t", 0, 5, 0.2, -1.5, None)]
    old.close()
    ledger = Ledger(tmp_path)
    with ledger.transaction():
        ledger.put_metrics("baselines", "model", "ani1x", Metrics("t", 0.5, 0.4, 0.6, 0.5, 2.0, 1.5, 4, 0.2, None, 0, 0.45))
        ledger.put_test_errors(1, [TestError("t", 0, 5, 0.1, 0.5, 2.5)])
    assert ledger.baselines()[0][1].force_spearman == 0.45 and ledger.test_errors(1)[0].force_spread == 2.5
    assert ledger.metrics_by_test_set(0)[0].force_spearman is None
    ledger.close()


def test_the_report_pools_the_test_sets_for_figure_1(tmp_path):
    """With several test sets, report.json's cycles carry rho's and the force disagreement's Spearman
    correlation over all their structures at once (scipy's, on |error| / sqrt(N))."""
    from scipy.stats import spearmanr

    from anif.al.ledger import TestError
    from anif.al.report import report_data

    rng = np.random.default_rng(1)
    rho, error, forces, atoms = rng.lognormal(size=12), rng.normal(size=12) * 3, rng.lognormal(size=12), [3] * 6 + [9] * 6
    ledger = Ledger(tmp_path)
    with ledger.transaction():
        for c in (0, 1):
            ledger.insert_cycle(Cycle(c, "bootstrap" if c == 0 else "conformational", "done", 0.23))
        ledger.put_test_errors(0, [TestError("near" if k < 6 else "far", k % 6, atoms[k], rho[k], error[k], forces[k])
                                   for k in range(12)])
        ledger.put_test_errors(1, [TestError("near", k, 3, rho[k], error[k], None) for k in range(6)])
    data = report_data(ledger)
    ledger.close()
    first, second = data["cycles"]
    per_sqrt_atom = np.abs(error) / np.sqrt(atoms)
    assert first["rho_spearman_pooled"] == spearmanr(rho, per_sqrt_atom).statistic
    assert first["force_spearman_pooled"] == spearmanr(forces, per_sqrt_atom).statistic
    assert "rho_spearman_pooled" not in second  # one test set: nothing to pool
