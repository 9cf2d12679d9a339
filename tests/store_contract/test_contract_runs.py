"""Runs, claims, leases and fencing: every backend keeps these promises (store/base.py)."""

import threading

from contract_helpers import add_run, backend, clock, entry, other, store  # noqa: F401 (fixtures)

from flowmetal.model import WaitingFor


def test_a_pending_run_is_claimed_once_with_a_lease_from_the_stores_clock(store, other, clock):
    add_run(store, clock, "r1")
    got = store.claim("me", 30, run_id="r1")
    assert got["owner"] == "me" and got["state"] == "running" and got["executions"] == 1
    assert got["lease_expires"] == clock.now() + 30 and got["started_at"] == clock.now()
    assert other.claim("other", 30) is None  # nothing else is runnable
    assert other.claim("other", 30, run_id="r1") is None


def test_a_live_lease_is_never_taken_over_and_an_expired_one_is(store, other, clock):
    add_run(store, clock, "r1")
    store.claim("me", 30, run_id="r1")
    clock.advance(29.9)
    assert other.claim("other", 30) is None
    clock.advance(0.2)  # the lease has expired
    got = other.claim("other", 30)
    assert got["id"] == "r1" and got["owner"] == "other" and got["executions"] == 2


def test_renewing_keeps_the_lease_live_and_reports_cancel_requests(store, other, clock):
    add_run(store, clock, "r1")
    store.claim("me", 30, run_id="r1")
    clock.advance(25)
    assert store.renew_leases("me", 30) == [("r1", None, None)]
    clock.advance(25)
    assert other.claim("other", 30) is None  # renewed 25 s ago, for 30
    assert other.request_cancel("r1", "cancelled") is True
    assert store.renew_leases("me", 30) == [("r1", "cancelled", None)]
    assert store.owned_runs("me") == [("r1", "cancelled", None)]


def test_a_former_owner_is_fenced_out_of_every_write(store, other, clock):
    add_run(store, clock, "r1")
    store.claim("me", 30, run_id="r1")
    assert store.insert_journal(entry("r1", 1), "me") is True
    clock.advance(31)
    other.claim("other", 30, run_id="r1")
    assert store.insert_journal(entry("r1", 2), "me") is False
    assert store.update_journal("r1", 1, "me", status="failed") is False
    assert store.suspend_run("r1", "me", WaitingFor("signal", name="go").to_json(), None) is False
    assert store.end_run("r1", "completed", owner="me", result="1") is False
    assert store.release("r1", "me") is False
    row = other.get_run("r1")
    assert row["owner"] == "other" and row["state"] == "running"
    assert [e["seq"] for e in other.journal("r1")] == [1]
    assert other.insert_journal(entry("r1", 2), "other") is True


def test_concurrent_claims_give_each_run_to_exactly_one_owner(backend, tmp_path, clock, store):
    for i in range(40):
        add_run(store, clock, f"r{i:02d}")
    got, stores = {}, [backend(tmp_path, clock) for _ in range(4)]

    def claim_all(k):
        while (run := stores[k].claim(f"o{k}", 30)) is not None:
            got.setdefault(run["id"], []).append(k)

    threads = [threading.Thread(target=claim_all, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for st in stores:
        st.close()
    assert sorted(got) == [f"r{i:02d}" for i in range(40)] and all(len(v) == 1 for v in got.values())


def test_suspend_wake_and_claim_again(store, clock):
    add_run(store, clock, "r1")
    store.claim("me", 30, run_id="r1")
    waiting = WaitingFor("timer", until=clock.now() + 60, builtin="sleep")
    assert store.suspend_run("r1", "me", waiting.to_json(), clock.now() + 60) is True
    row = store.get_run("r1")
    assert (row["state"], row["owner"], row["lease_expires"]) == ("waiting", None, None)
    assert WaitingFor.from_json(row["waiting_for"]) == waiting
    assert store.next_wake() == clock.now() + 60
    assert store.claim("me", 30) is None  # not due yet
    assert store.wake("r1") is True
    assert store.claim("me", 30)["id"] == "r1"
    assert store.wake("r1") is False  # running, not waiting


def test_end_run_by_its_owner_or_of_a_run_nobody_executes(store, clock):
    add_run(store, clock, "a")
    add_run(store, clock, "b")
    add_run(store, clock, "c")
    store.claim("me", 30, run_id="a")
    assert store.end_run("a", "completed", owner="me", result='{"x":1}') is True
    row = store.get_run("a")
    assert (row["state"], row["result"], row["owner"], row["ended_at"]) == ("completed", '{"x":1}', None, clock.now())
    assert store.end_run("a", "failed", owner="me") is False  # ended already
    assert store.end_run("b", "cancelled", error="cancelled") is True  # pending: nobody executes it
    assert store.get_run("b")["cancel_requested"] == "cancelled"
    store.claim("me", 30, run_id="c")
    assert store.end_run("c", "cancelled") is False  # running: only its owner ends it
    assert store.request_cancel("c") is True and store.request_cancel("a") is False


def test_release_leaves_the_run_running_and_claimable_at_once(store, other, clock):
    add_run(store, clock, "r1")
    store.claim("me", 30, run_id="r1")
    assert store.release("r1", "me") is True
    row = store.get_run("r1")
    assert row["state"] == "running" and row["owner"] is None
    assert other.claim("other", 30)["id"] == "r1"


def test_tree_queries(store, clock):
    add_run(store, clock, "p")
    add_run(store, clock, "c1", parent_id="p", root_id="p")
    add_run(store, clock, "c2", parent_id="c1", root_id="p")
    add_run(store, clock, "x")
    assert sorted(store.descendants("p")) == ["c1", "c2"]
    assert store.has_pending("p") and store.claim("me", 30, root_id="p")["root_id"] == "p"
    assert [r["id"] for r in store.list_runs(parent_id="p")] == ["c1"]
    assert store.find_run("c2")["parent_id"] == "c1"


def test_wait_for_change_sees_another_connections_commit(store, other, clock):
    assert store.wait_for_change(0.01) is False  # starts watching
    assert store.wait_for_change(0.01) is False
    add_run(other, clock, "r1")
    assert store.wait_for_change(1.0) is True
    event = threading.Event()
    event.set()
    assert store.wait_for_change(5.0, event) is True  # the event ends the wait too


def test_worker_identities_and_heartbeats(store, other, clock):
    store.worker_started("h1:10:aa", "h1", 10, clock.now())
    clock.advance(5)
    other.worker_started("h2:20:bb", "h2", 20, clock.now())
    add_run(store, clock, "r1")
    other.claim("h2:20:bb", 30, run_id="r1")
    clock.advance(5)
    assert store.worker_seen("h1:10:aa", clock.now()) is True
    assert other.worker_stopped("h2:20:bb", clock.now()) is True
    assert store.worker_seen("h2:20:bb", clock.now()) is False  # stopped: no more heartbeats
    rows = other.workers()
    assert [(r["id"], r["host"], r["pid"], r["runs"]) for r in rows] == [("h2:20:bb", "h2", 20, 1), ("h1:10:aa", "h1", 10, 0)]
    assert rows[1]["seen_at"] == clock.now() and rows[1]["stopped_at"] is None and rows[0]["stopped_at"] == clock.now()


def test_claims_come_in_due_order_across_states(store, other, clock):
    """Pending runs are due when created, waiting runs at their wake time, a dead owner's
    running run when its lease expires: claims take them earliest due first, whatever the
    state, and never one that is not due yet (issue 17: one index search, store/sqlite/runs.py)."""
    t0 = clock.now()
    add_run(store, clock, "dead")  # t0: claimed below by an owner whose lease then expires at t0 + 5
    store.claim("gone", 5, run_id="dead")
    add_run(store, clock, "sleeper")  # t0: suspended until t0 + 3
    store.claim("me", 30, run_id="sleeper")
    store.suspend_run("sleeper", "me", WaitingFor("timer", until=t0 + 3, builtin="sleep").to_json(), t0 + 3)
    add_run(store, clock, "forever")  # waits to be woken: never due by time
    store.claim("me", 30, run_id="forever")
    store.suspend_run("forever", "me", WaitingFor("signal", name="go").to_json(), None)
    clock.advance(1)
    add_run(store, clock, "p1")  # t0 + 1
    clock.advance(1)
    add_run(store, clock, "later")  # t0 + 2: suspended until t0 + 20
    store.claim("me", 30, run_id="later")
    store.suspend_run("later", "me", WaitingFor("timer", until=t0 + 20, builtin="sleep").to_json(), t0 + 20)
    clock.advance(2)
    add_run(store, clock, "p4")  # t0 + 4
    clock.advance(3)  # now t0 + 7: due are p1 (t0+1), sleeper (t0+3), p4 (t0+4), dead (t0+5)
    order = []
    while (run := other.claim("other", 30)) is not None:
        order.append(run["id"])
    assert order == ["p1", "sleeper", "p4", "dead"]
    clock.advance(13)  # t0 + 20: `later` is due (at its wake time exactly)
    assert other.claim("other", 30)["id"] == "later"
    assert other.claim("other", 30) is None  # `forever` waits for its signal
    assert store.wake("forever") is True
    assert other.claim("other", 30)["id"] == "forever"


def test_claims_within_one_tree_come_in_due_order_and_stay_in_it(store, clock):
    add_run(store, clock, "root")
    clock.advance(1)
    add_run(store, clock, "stranger")  # another tree, due before the children
    clock.advance(1)
    add_run(store, clock, "c2", parent_id="root", root_id="root")
    clock.advance(1)
    add_run(store, clock, "c3", parent_id="root", root_id="root")
    order = []
    while (run := store.claim("me", 30, root_id="root")) is not None:
        order.append(run["id"])
    assert order == ["root", "c2", "c3"]
    assert store.claim("me", 30)["id"] == "stranger"


def _held(store, tree):
    """A transaction of `tree` (None: without one) held open on a thread until released."""
    entered, release = threading.Event(), threading.Event()

    def hold():
        with store.transaction(tree=tree):
            entered.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert entered.wait(10)
    return release, t


def _waits(store, tree, release, t):
    """Does a transaction of `tree` on `store` wait until the held one ends?"""
    done = threading.Event()

    def enter():
        with store.transaction(tree=tree):
            done.set()

    u = threading.Thread(target=enter)
    u.start()
    waited = not done.wait(0.5)
    release.set()
    t.join(10)
    u.join(10)
    assert done.is_set()
    return waited


def test_a_trees_transaction_excludes_its_tree_and_every_transaction_without_one(store, other, clock):
    add_run(store, clock, "r1")
    assert _waits(other, "r1", *_held(store, "r1"))  # the same tree: one at a time
    assert _waits(other, None, *_held(store, "r1"))  # a transaction of no tree waits for a tree's
    assert _waits(other, "r1", *_held(store, None))  # and a tree's for one of no tree
