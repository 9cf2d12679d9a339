"""Signals, journal, logs, blobs, sources, schedules and fires, retention: every backend."""

import pytest
from contract_helpers import add_run, backend, clock, entry, other, store  # noqa: F401 (fixtures)

from flowmetal.errors import StoreError


def test_signals_are_kept_in_order_and_consumed_once(store, other, clock):
    add_run(store, clock, "r1")
    store.insert_signal("r1", "go", '"first"', clock.now())
    store.insert_signal("r1", "go", '"second"', clock.now())
    assert store.has_signal("r1", "go") and not store.has_signal("r1", "stop")
    assert store.take_signal("r1", "go", 3)["payload"] == '"first"'
    assert other.take_signal("r1", "go", 4)["payload"] == '"second"'
    assert store.take_signal("r1", "go", 5) is None
    assert [s["consumed_seq"] for s in store.signals("r1")] == [3, 4]


def test_the_journal_is_ordered_per_run_and_updated_by_its_owner(store, clock):
    add_run(store, clock, "a")
    add_run(store, clock, "b")
    store.claim("me", 30, run_id="a")
    store.claim("me", 30, run_id="b")
    for seq in (1, 2, 3):
        assert store.insert_journal(entry("a", seq, status="started" if seq == 3 else "completed"), "me")
    assert store.insert_journal(entry("b", 1), "me")
    assert store.update_journal("a", 3, "me", status="completed", result="7", ended_at=2.0)
    rows = store.journal("a")
    assert [e["seq"] for e in rows] == [1, 2, 3] and rows[2]["status"] == "completed" and rows[2]["result"] == "7"
    assert len(store.journal("b")) == 1
    with store.transaction():  # a transaction commits all or nothing
        store.insert_journal(entry("b", 2), "me")
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_journal(entry("b", 3), "me")
        raise RuntimeError("roll back")
    assert [e["seq"] for e in store.journal("b")] == [1, 2]


def test_a_batch_of_entries_is_written_all_or_none_by_the_owner_only(store, other, clock):
    add_run(store, clock, "a")
    store.claim("me", 30, run_id="a")
    assert store.insert_journal_many([], "me")
    assert store.insert_journal_many([entry("a", seq, result=str(seq)) for seq in (1, 2, 3)], "me")
    assert [(e["seq"], e["result"]) for e in other.journal("a")] == [(1, "1"), (2, "2"), (3, "3")]
    # fencing: another owner writes nothing, and neither does the owner of a run that is not running
    assert not other.insert_journal_many([entry("a", 4), entry("a", 5)], "someone else")
    assert [e["seq"] for e in store.journal("a")] == [1, 2, 3]
    # inside a transaction it joins it: the next statements commit with it, a rollback takes it back
    with store.transaction():
        assert store.insert_journal_many([entry("a", 4), entry("a", 5)], "me")
        assert store.insert_journal(entry("a", 6, status="started"), "me")
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_journal_many([entry("a", 7), entry("a", 8)], "me")
        raise RuntimeError("roll back")
    assert [e["seq"] for e in other.journal("a")] == [1, 2, 3, 4, 5, 6]
    # a duplicate position is an error of the store, and none of the batch is written
    with pytest.raises(StoreError):
        store.insert_journal_many([entry("a", 7), entry("a", 6)], "me")
    assert [e["seq"] for e in other.journal("a")] == [1, 2, 3, 4, 5, 6]
    store.end_run("a", "completed", owner="me", result="null")
    assert not store.insert_journal_many([entry("a", 7)], "me")
    assert len(store.journal("a")) == 6


def test_a_fork_copies_a_journal_prefix_and_records_where_it_came_from(store, clock):
    add_run(store, clock, "old")
    store.claim("me", 30, run_id="old")
    for seq in (1, 2, 3):
        assert store.insert_journal(entry("old", seq, result=str(seq * 10)), "me")
    add_run(store, clock, "new")
    with store.transaction():
        store.fork_journal("old", "new", 2)
    assert [(e["seq"], e["result"]) for e in store.journal("new")] == [(1, "10"), (2, "20")]
    assert len(store.journal("old")) == 3  # the old run is left as it was
    row = store.get_run("new")
    assert (row["forked_from"], row["forked_at"]) == ("old", 2)


def test_logs_blobs_and_sources(store, clock):
    add_run(store, clock, "r1")
    add_run(store, clock, "r2", parent_id="r1", root_id="r1")
    store.add_logs("r1", [(1, 1, 1.0, "log", "hello"), (1, 1, 1.0, "log", "dup"), (1, 2, 1.0, "stdout", "x")])
    store.add_logs("r2", [(1, 1, 2.0, "log", "child")])
    assert [r["line"] for r in store.logs("r1")] == ["hello", "x"]  # a duplicate (seq, n) is ignored
    assert [r["line"] for r in store.tree_logs("r1")] == ["hello", "x", "child"]
    assert store.max_log_rowid() >= store.logs("r1")[-1]["rowid"]
    digest = store.put_blob("big" * 1000, clock.now())
    assert store.put_blob("big" * 1000, clock.now()) == digest and store.get_blob(digest) == "big" * 1000
    with pytest.raises(StoreError, match="missing"):
        store.get_blob("nope")
    store.pin_sources("r1", {"w.star": "def main(): pass\n"})
    store.copy_sources("r1", "r2")
    assert store.pinned_sources("r2") == {"w.star": "def main(): pass\n"}
    hashes = store.put_sources({"s.star": "x = 1\n"})
    assert store.get_sources(hashes) == {"s.star": "x = 1\n"}


def _schedule(name, **over):
    return {"name": name, "spec": "{}", "fingerprint": "f", "since": 0.0, "enabled": 1, "last_fire": None,
            "file": "s.star", "line": 1, "sources": None, "removed_at": None, "updated_at": 0.0, **over}


def test_schedules_and_fires(store, other, clock):
    assert store.insert_schedule(_schedule("job")) is True
    assert other.insert_schedule(_schedule("job")) is False  # the name exists
    assert store.update_schedule("job", last_fire=100.0) and store.get_schedule("job")["last_fire"] == 100.0
    fire = {"schedule": "job", "nominal": 100.0, "action": "started", "reason": None, "run_id": "r1",
            "recorded_at": 100.0}
    add_run(store, clock, "r1", schedule="job")
    assert store.insert_fire(fire) is True
    assert other.insert_fire(fire) is False  # one fire per (schedule, nominal), whoever tries
    assert store.insert_fire({**fire, "nominal": 200.0, "action": "buffered", "run_id": None})
    assert [f["nominal"] for f in store.fires("job")] == [200.0, 100.0]
    assert [f["nominal"] for f in store.buffered_fires("job")] == [200.0]
    assert store.schedules_with_buffered() == ["job"]
    assert store.fire_counts() == {"job": {"started": 1, "buffered": 1}}
    assert [r["id"] for r in store.active_schedule_runs("job")] == ["r1"]
    assert store.ended_fires() == []
    assert store.end_run("r1", "cancelled", error="cancelled")
    [ended] = store.ended_fires()
    assert (ended["schedule"], ended["nominal"], ended["state"]) == ("job", 100.0, "cancelled")
    assert store.update_fire("job", 100.0, only_open=True, run_state="cancelled") is True
    assert store.update_fire("job", 100.0, only_open=True, run_state="failed") is False  # recorded once
    assert [s["name"] for s in store.schedules()] == ["job"]


def test_prune_takes_old_ended_trees_and_nothing_in_flight(store, clock):
    for run_id, parent in (("old", None), ("oldchild", "old"), ("busy", None), ("busychild", "busy")):
        add_run(store, clock, run_id, parent_id=parent, root_id=parent or run_id)
    store.claim("me", 30, run_id="old")
    store.claim("me", 30, run_id="oldchild")
    store.claim("me", 30, run_id="busy")
    store.insert_journal(entry("old", 1), "me")
    store.add_logs("old", [(1, 1, 1.0, "log", "x")])
    store.insert_signal("old", "go", "1", clock.now())
    assert store.end_run("oldchild", "completed", owner="me", result="1")
    assert store.end_run("old", "completed", owner="me", result="1")
    assert store.end_run("busy", "completed", owner="me", result="1")  # but its child is pending
    clock.advance(100)
    counts = store.prune(clock.now() - 50, clock.now(), dry_run=True)
    assert counts["runs"] == 2 and store.get_run("old") is not None
    counts = store.prune(clock.now() - 50, clock.now())
    assert (counts["runs"], counts["journal"], counts["logs"], counts["signals"]) == (2, 1, 1, 1)
    assert store.get_run("old") is None and store.get_run("oldchild") is None
    assert store.get_run("busy") is not None and store.get_run("busychild") is not None
