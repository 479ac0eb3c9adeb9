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
