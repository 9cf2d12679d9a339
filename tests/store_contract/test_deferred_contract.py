"""Deferred effects: a waiting row is completed exactly once, never after its deadline or
its run's end, and a run about to wait for a completed row is due at once (store/base.py)."""

import threading

from contract_helpers import add_run, backend, clock, other, store  # noqa: F401 (fixtures)

from flowmetal.engine.deferred import complete_effect


def _deferred(store, clock, run_id="r1", seq=1, deadline=None, queue="q"):
    store.insert_deferred({"run_id": run_id, "seq": seq, "builtin": "task", "queue": queue,
                           "detail": '{"queue":"q"}', "deadline": deadline, "created_at": clock.now()})


def _waiting(store, clock, run_id="r1"):
    add_run(store, clock, run_id)
    store.claim("me", 30, run_id=run_id)
    assert store.suspend_run(run_id, "me", '{"kind":"effect","seq":1}', None)


def test_a_waiting_row_is_completed_once_and_the_first_completion_wins(store, other, clock):
    _waiting(store, clock)
    _deferred(store, clock)
    assert store.get_deferred("r1", 1)["state"] == "waiting"
    assert [r["seq"] for r in store.waiting_deferred(queue="q")] == [1]
    assert store.waiting_deferred(queue="other") == []
    assert other.complete_deferred("r1", 1, '{"a":1}', None, "h1", clock.now()) is True
    assert store.complete_deferred("r1", 1, '{"a":2}', None, "h2", clock.now()) is False
    row = store.get_deferred("r1", 1)
    assert (row["state"], row["result"], row["payload_hash"]) == ("completed", '{"a":1}', "h1")
    assert store.waiting_deferred() == []
    assert store.expire_deferred("r1", 1, clock.now()) is False  # completed first: stays completed


def test_complete_effect_wakes_the_run_and_tells_a_repeat_from_a_conflict(store, other, clock):
    _waiting(store, clock)
    _deferred(store, clock)
    assert store.get_run("r1")["wake_at"] is None
    first = complete_effect(other, "r1", 1, result={"a": 1})
    assert first.outcome == "completed" and first.ok
    assert store.get_run("r1")["wake_at"] == clock.now()  # due, in the same transaction
    again = complete_effect(store, "r1", 1, result={"a": 1})
    assert again.outcome == "duplicate" and "already completed" in again.message
    different = complete_effect(store, "r1", 1, result={"a": 2})
    assert different.outcome == "conflict" and not different.ok and "different payload" in different.message
    assert store.get_deferred("r1", 1)["result"] == '{"a":1}'
    assert complete_effect(store, "r1", 9, result=1).outcome == "unknown"


def test_no_completion_after_the_deadline_or_the_runs_end(store, other, clock):
    _waiting(store, clock)
    _deferred(store, clock, seq=1, deadline=clock.now() + 10)
    _deferred(store, clock, seq=2)
    clock.advance(10)
    done = complete_effect(other, "r1", 1, result=1)
    assert done.outcome == "expired" and store.get_deferred("r1", 1)["state"] == "waiting"
    assert store.expire_deferred("r1", 1, clock.now()) is True
    assert store.get_deferred("r1", 1)["state"] == "expired"
    assert store.end_run("r1", "cancelled", error="cancelled")
    void = complete_effect(other, "r1", 2, error="late")
    assert void.outcome == "void" and "cancelled" in void.message
    assert store.get_deferred("r1", 2)["state"] == "waiting"


def test_concurrent_completions_complete_once(backend, tmp_path, clock, store):
    _waiting(store, clock)
    _deferred(store, clock)
    outcomes, barrier = [], threading.Barrier(8)

    def complete(i):
        st = backend(tmp_path, clock)
        try:
            barrier.wait()
            outcomes.append(complete_effect(st, "r1", 1, result={"by": i}).outcome)
        finally:
            st.close()

    threads = [threading.Thread(target=complete, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["completed"] + ["conflict"] * 7


def test_a_run_suspending_on_an_effect_completed_meanwhile_is_due_at_once(store, other, clock):
    from flowmetal.engine import lifecycle
    from flowmetal.model import WaitingFor

    add_run(store, clock, "r1")
    run = store.claim("me", 30, run_id="r1")
    _deferred(store, clock)
    assert complete_effect(other, "r1", 1, result=1).outcome == "completed"  # (the run is still running)
    assert lifecycle.suspend(store, clock, run, "me", WaitingFor("effect", seq=1), None) == "waiting"
    assert store.get_run("r1")["wake_at"] == clock.now()  # no wake-up lost


def test_prune_deletes_the_deferred_rows_of_the_runs_it_deletes(store, clock):
    _waiting(store, clock)
    _deferred(store, clock)
    _waiting(store, clock, run_id="r2")
    _deferred(store, clock, run_id="r2")
    assert store.end_run("r1", "cancelled", error="cancelled")
    clock.advance(100)
    assert store.prune(clock.now() - 50, clock.now())["runs"] == 1
    assert store.get_deferred("r1", 1) is None
    assert store.get_deferred("r2", 1)["state"] == "waiting"  # its run lives on


def test_task_queues_count_waiting_and_leased_tasks_of_live_runs(store, clock):
    for i, queue in enumerate(["images", "images", "mail"]):
        _waiting(store, clock, f"r{i}")
        _deferred(store, clock, f"r{i}", queue=queue)
        clock.advance(1)
    assert store.claim_task("images", "h", 30, clock.now())["run_id"] == "r0"
    assert store.task_queues(clock.now()) == [
        {"queue": "images", "depth": 2, "leased": 1, "oldest": store.get_deferred("r0", 1)["created_at"]},
        {"queue": "mail", "depth": 1, "leased": 0, "oldest": store.get_deferred("r2", 1)["created_at"]}]
    clock.advance(31)  # the lease expired: still waiting, no longer leased
    assert [(q["queue"], q["leased"]) for q in store.task_queues(clock.now())] == [("images", 0), ("mail", 0)]
    store.request_cancel("r2")  # a cancelled run's task is no one's work any more
    store.end_run("r2", "cancelled")
    assert [q["queue"] for q in store.task_queues(clock.now())] == ["images"]
