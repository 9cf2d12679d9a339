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


def _task(store, clock, run_id, queue="q", detail='{"queue":"q"}'):
    _waiting(store, clock, run_id)
    store.insert_deferred({"run_id": run_id, "seq": 1, "builtin": "task", "queue": queue, "detail": detail,
                           "deadline": None, "created_at": clock.now()})
    clock.advance(1)


def test_a_claim_takes_the_oldest_task_of_any_of_its_queues_and_names_the_worker(store, clock):
    _task(store, clock, "r1", queue="mail")
    _task(store, clock, "r2", queue="images")
    _task(store, clock, "r3", queue="video")
    row = store.claim_task(["images", "video"], "h1", 30, clock.now(), worker="w1")
    assert (row["run_id"], row["worker"], row["attempts"], row["lost"]) == ("r2", "w1", 1, 0)
    assert row["lease_seconds"] == 30 and row["lease_expires"] == clock.now() + 30
    assert store.claim_task(["images", "video"], "h2", 30, clock.now())["run_id"] == "r3"
    assert store.claim_task(["images", "video"], "h3", 30, clock.now()) is None
    assert store.claim_task("mail", "h4", 30, clock.now())["run_id"] == "r1"  # (a single name works too)


def test_a_tasks_heartbeat_interval_caps_every_lease_and_a_lost_lease_is_counted(store, clock):
    _task(store, clock, "r1", detail='{"queue":"q","heartbeat":5.0}')
    row = store.claim_task("q", "h1", 60, clock.now(), worker="w1")
    assert row["lease_expires"] == clock.now() + 5 and row["lease_seconds"] == 5
    clock.advance(4)
    assert store.renew_task("r1", 1, "h1", 60, clock.now()) is True
    assert store.get_deferred("r1", 1)["lease_expires"] == clock.now() + 5  # renewed, by at most the interval
    assert store.renew_task("r1", 1, "wrong", 60, clock.now()) is False
    assert store.claim_task("q", "h2", 60, clock.now()) is None  # still leased
    clock.advance(6)  # no heartbeat within the interval: the lease is lost
    assert store.renew_task("r1", 1, "h1", 60, clock.now()) is False
    row = store.claim_task("q", "h2", 60, clock.now(), worker="w2")
    assert (row["attempts"], row["lost"], row["worker"]) == (2, 1, "w2")


def test_a_retried_task_gives_up_its_lease_and_is_offered_again_after_its_delay(store, clock):
    _task(store, clock, "r1")
    store.claim_task("q", "h1", 60, clock.now())
    assert store.retry_task("r1", 1, "wrong", clock.now() + 10, clock.now()) is False
    assert store.retry_task("r1", 1, "h1", clock.now() + 10, clock.now()) is True
    assert store.retry_task("r1", 1, "h1", clock.now() + 10, clock.now()) is False  # (the lease is gone)
    row = store.get_deferred("r1", 1)
    assert (row["lease_hash"], row["worker"], row["state"]) == (None, None, "waiting")
    assert store.task_queues(clock.now())[0]["leased"] == 0  # waiting out a delay is not a lease
    assert store.claim_task("q", "h2", 60, clock.now()) is None  # not before the delay is over
    clock.advance(11)
    row = store.claim_task("q", "h2", 60, clock.now())
    assert (row["attempts"], row["lost"]) == (2, 0)  # a retry, not a lost lease
