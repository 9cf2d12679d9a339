"""The CLI on PostgreSQL (issue 15): real workflows through `python -m flowmetal` against a
throwaway cluster (tests/pgcluster.py), one fresh database per test. Marked `postgres`:
`-m 'not postgres'` skips them locally; they run by default and in CI."""

import json
import os
import re
import signal
import time

import pytest

from conftest import read_run_id, run_id_of, wait_for

pytestmark = pytest.mark.postgres


def test_run_hello_and_read_it_back(pg):
    r = pg("run", os.path.join(os.path.dirname(__file__), "..", "examples", "hello.star"), "-a", "name=x")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["message"] == "Hello, x!"
    run_id = run_id_of(r.stderr)
    runs = pg("runs")
    assert runs.returncode == 0 and run_id in runs.stdout and "completed" in runs.stdout
    shown = pg("show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "completed"
    assert not list((pg.root).glob("**/*.db"))  # nothing went to a SQLite file


SH_SLEEP = """
def main(n):
    out = sh("echo step-%s" % n)
    sleep("1s")
    return {"out": out.stdout.strip(), "n": n}
"""


def test_start_and_a_worker_until_idle_run_sh_and_sleep(pg):
    pg.write("job.star", SH_SLEEP)
    ids = []
    for n in range(3):
        r = pg("start", "job.star", "-a", f"n={n}")
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip())
    w = pg("worker", "--until-idle", "--concurrency", "3", timeout=60)
    assert w.returncode == 0, w.stderr
    for n, run_id in enumerate(ids):
        row = pg.run_row(run_id)
        assert row["state"] == "completed", row
        assert json.loads(row["result"]) == {"out": f"step-{n}", "n": str(n)}
        assert [e["builtin"] for e in pg.journal(run_id)] == ["sh", "sleep"]
        assert row["ended_at"] - row["started_at"] >= 1.0


CHILDREN = """
def child(i):
    return sh("echo c%d" % i).stdout.strip()

def main(n):
    return [r.value for r in wait([spawn(child, i) for i in range(int(n))])]
"""


def test_children_on_postgres(pg):
    pg.write("tree.star", CHILDREN)
    r = pg("run", "tree.star", "-a", "n=4", timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["c0", "c1", "c2", "c3"]
    run_id = run_id_of(r.stderr)
    kids = pg.store().list_runs(parent_id=run_id)
    assert len(kids) == 4 and {k["state"] for k in kids} == {"completed"}


WAITER = 'def main():\n    v = wait_signal("go")\n    return {"got": v}\n'


def test_a_signal_wakes_a_run_on_another_worker_within_a_second_by_notify(pg):
    """Worker A starts the run and is SIGKILLed while it waits; worker B, whose poll fallback
    is 30 s (FLOWMETAL_POLL), completes it within one second of `flowmetal signal`: only
    NOTIFY can have woken it that fast."""
    pg.write("w.star", WAITER)
    run_id = pg("start", "w.star").stdout.strip()
    a = pg.spawn("worker", env={"FLOWMETAL_POLL": "30"})
    pg.wait_state(run_id, "waiting")
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    b = pg.spawn("worker", env={"FLOWMETAL_POLL": "30"})
    time.sleep(1.5)  # B is up and idle, listening (its first scan found nothing runnable)
    assert b.poll() is None, b.err()
    assert pg.run_row(run_id)["state"] == "waiting"
    r = pg("signal", run_id, "go", '"now"')
    sent = time.time()
    assert r.returncode == 0, r.stderr
    row = wait_for(lambda: (x := pg.run_row(run_id))["state"] == "completed" and x, timeout=10,
                   what="the run to complete")
    latency = time.time() - sent
    print(f"wake-up latency after signal: {latency:.3f}s")
    assert latency < 1.0, f"woken after {latency:.2f}s"
    assert json.loads(row["result"]) == {"got": "now"} and row["executions"] == 2
    b.send_signal(signal.SIGTERM)
    assert b.wait(20) == 0, b.err()


def test_a_worker_that_lost_its_lease_is_fenced_on_postgres(pg):
    """The server's clock judges leases: a lease taken over is refused to the old owner."""
    pg.write("w.star", WAITER)
    run_id = pg("start", "w.star").stdout.strip()
    st = pg.store()
    try:
        got = st.claim("old", 0.2, run_id=run_id)
        assert got["owner"] == "old"
        assert st.claim("new", 30, run_id=run_id) is None  # live lease (server time)
        time.sleep(0.3)
        assert st.claim("new", 30, run_id=run_id)["owner"] == "new"
        entry = {"run_id": run_id, "seq": 1, "builtin": "now", "args": "{}", "digest": "d", "status": "completed",
                 "result": "1", "error": None, "data": None, "started_at": 1.0, "ended_at": 1.0}
        assert st.insert_journal(entry, "old") is False
        assert st.insert_journal(entry, "new") is True
        assert st.end_run(run_id, "completed", owner="old") is False
    finally:
        st.close()


def test_a_bad_url_is_one_clear_line(pg):
    r = pg("runs", env={"FLOWMETAL_DB": "postgresql://nobody:secret@127.0.0.1:1/none"})
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "cannot open database" in r.stderr
    assert "secret" not in r.stderr  # the password never reaches a message


TICK = """
def tick():
    return sh("echo tick").stdout.strip()

schedule(name = "tick", cron = "* * * * * *", run = tick, overlap = "allow")
"""


@pytest.mark.slow
def test_two_schedulers_on_one_postgres_database_fire_each_second_once(pg):
    pg.write("tick.star", TICK)
    procs = []
    for _ in range(2):
        p = pg.spawn("schedule", ".")
        wait_for(lambda p=p: "scheduler started" in p.err() or p.poll() is not None, what="scheduler start")
        assert p.poll() is None, p.err()
        procs.append(p)
    time.sleep(6)
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    assert [p.wait(20) for p in procs] == [0, 0], procs[0].err() + procs[1].err()
    st = pg.store()
    try:
        runs = [dict(r) for r in st.x("SELECT * FROM runs WHERE schedule = ? ORDER BY fire_time", ("tick",))]
        fires = st.fires("tick", limit=1000, action="started")
    finally:
        st.close()
    times = [r["fire_time"] for r in runs]
    assert len(times) >= 4 and len(times) == len(set(times))  # 0 double fires
    assert times == [times[0] + k for k in range(len(times))]  # none missing
    assert sorted(f["nominal"] for f in fires) == times
    # A run fired in the last moment may be left "running" by the stopping scheduler (resumable:
    # the next worker takes it over); none may have failed.
    assert all(r["state"] in ("completed", "pending", "running") for r in runs), [(r["state"], r.get("error")) for r in runs]
    assert sum(r["state"] == "completed" for r in runs) >= len(runs) - 3, [r["state"] for r in runs]
    assert json.loads([r for r in runs if r["state"] == "completed"][0]["result"]) == "tick"
    listed = pg("schedule", "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "tick" in listed.stdout


def test_wait_for_change_survives_a_lost_listening_connection(pg):
    """The server ends the listener's connection (a restart, a failover): the next wait says
    "look again" instead of raising, and the one after listens on a new connection."""
    from conftest import wait_for as _wait

    from flowmetal.store.postgres import PostgresStore

    st, other = PostgresStore(pg.url, pool_size=1), PostgresStore(pg.url, pool_size=1)
    try:
        assert st.wait_for_change(0.05) is False
        pid = st._local.listener.info.backend_pid
        other.q("SELECT pg_terminate_backend(%s)", (pid,))
        assert st.wait_for_change(2.0) is True
        assert st.wait_for_change(0.05) is False  # listening again, nothing new
        other.insert_run({"id": "r1", "file": "w.star", "function": "main", "args": "{}", "state": "pending",
                          "created_at": time.time(), "root_id": "r1"})
        assert _wait(lambda: st.wait_for_change(1.0), timeout=5, what="the NOTIFY of a new run")
    finally:
        st.close()
        other.close()


def test_flowmetal_workers_shows_each_worker_process(pg):
    a = pg.spawn("worker")
    b = pg.spawn("worker")
    listed = wait_for(lambda: len(json.loads(pg("workers", "--json").stdout or "[]")) == 2
                      and json.loads(pg("workers", "--json").stdout), what="two workers registered")
    assert {r["pid"] for r in listed} == {a.pid, b.pid} and {r["status"] for r in listed} == {"live"}
    assert all(r["id"].startswith(f"{r['host']}:{r['pid']}:") for r in listed)
    os.killpg(a.pid, signal.SIGTERM)
    assert a.wait(20) == 0, a.err()
    rows = {r["pid"]: r for r in json.loads(pg("workers", "--json").stdout)}
    assert rows[a.pid]["status"] == "stopped" and rows[b.pid]["status"] == "live"
    table = pg("workers")
    assert table.returncode == 0 and str(b.pid) in table.stdout and "stopped" in table.stdout


ONCE = """
def tick():
    return sh("echo tick").stdout.strip()

schedule(name = "tick", cron = "* * * * * *", run = tick, overlap = "allow")
"""


def test_db_copy_from_sqlite_to_postgres_and_the_waiting_runs_complete_there(pg, tmp_path):
    lite = {"FLOWMETAL_DB": str(tmp_path / "lite.db")}
    pg.write("w.star", WAITER)
    pg.write("sched/tick.star", ONCE)
    waiting = []
    for _ in range(3):
        run_id = pg("start", "w.star", env=lite).stdout.strip()
        waiting.append(run_id)
    assert pg("worker", "--until-idle", env=lite).returncode == 0
    sched = pg.spawn("schedule", "sched", env=lite)
    wait_for(lambda: len(re.findall(r" end +tick ", sched.err())) >= 2, timeout=15, what="two fires")
    os.killpg(sched.pid, signal.SIGTERM)
    assert sched.wait(20) == 0, sched.err()

    def history(env=None):
        doc = json.loads(pg("schedule", "--list", "--json", "sched", env=env).stdout)
        return [{k: v for k, v in d.items() if k != "next"} for d in doc]

    before = history(lite)
    assert before[0]["counts"]["started"] >= 2 and before[0]["last_fire"]
    r = pg("db", "copy", lite["FLOWMETAL_DB"], pg.url)
    assert r.returncode == 0, r.stderr
    assert "row counts of every table match" in r.stdout and "schedules: 1 rows" in r.stderr
    assert history() == before  # the same schedule history
    for run_id in waiting:
        assert pg("signal", run_id, "go", '"moved"').returncode == 0
    assert pg("worker", "--until-idle").returncode == 0
    for run_id in waiting:
        row = pg.run_row(run_id)
        assert row["state"] == "completed" and json.loads(row["result"]) == {"got": "moved"}
        assert [e["builtin"] for e in pg.journal(run_id)] == ["wait_signal"]
    new_id = pg("start", "w.star").stdout.strip()  # a new run is numbered after the copied ones
    st = pg.store()
    try:
        assert st.get_run(new_id)["num"] > max(st.get_run(w)["num"] for w in waiting)
    finally:
        st.close()
    # the destination is not empty any more: a second copy is refused, with one clear line
    again = pg("db", "copy", lite["FLOWMETAL_DB"], pg.url)
    assert again.returncode != 0 and "not empty" in again.stderr and "Traceback" not in again.stderr
    # and back again into a fresh SQLite file
    back = tmp_path / "back.db"
    r = pg("db", "copy", pg.url, str(back))
    assert r.returncode == 0, r.stderr
    shown = pg("show", waiting[0], "--json", env={"FLOWMETAL_DB": str(back)})
    assert json.loads(shown.stdout)["state"] == "completed"


def _holder(url):
    """Another session, as a second machine's long transaction or an operator's psql would be."""
    import psycopg

    return psycopg.connect(url, autocommit=True)


def test_a_lock_another_session_holds_is_one_clear_line_and_exit_2(pg):
    """lock_timeout (FLOWMETAL_PG_LOCK_TIMEOUT) bounds every wait for a lock: a command that
    cannot have one says so in one line and exits 2, it neither hangs nor shows a traceback."""
    from flowmetal.store.postgres import WRITE_LOCK

    pg.write("w.star", WAITER)
    run_id = pg("start", "w.star").stdout.strip()
    env = {"FLOWMETAL_PG_LOCK_TIMEOUT": "1"}
    with _holder(pg.url) as other:
        # a row lock on the run: `cancel` must update that row
        other.execute("BEGIN")
        other.execute("SELECT * FROM runs WHERE id = %s FOR UPDATE", (run_id,))
        t0 = time.time()
        r = pg("cancel", run_id, env=env, timeout=30)
        took = time.time() - t0
        other.execute("ROLLBACK")
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "not granted within 1 s" in r.stderr and "FLOWMETAL_PG_LOCK_TIMEOUT" in r.stderr, r.stderr
        assert took < 8, took
        # the write lock of transaction() (an advisory lock), held by another session
        other.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        r = pg("start", "w.star", env=env, timeout=30)
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "not granted within 1 s" in r.stderr, r.stderr
        # statement_timeout, with lock_timeout off: the same wait ends as a statement timeout
        r = pg("start", "w.star", env={"FLOWMETAL_PG_LOCK_TIMEOUT": "0", "FLOWMETAL_PG_STATEMENT_TIMEOUT": "1"},
               timeout=30)
        assert r.returncode == 2 and "took longer than 1 s" in r.stderr, r.stderr
        assert "FLOWMETAL_PG_STATEMENT_TIMEOUT" in r.stderr and "Traceback" not in r.stderr
        other.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK,))
    # nothing was half done: the run was not cancelled and no run was added
    assert pg.run_row(run_id)["state"] == "pending" and pg.run_row(run_id)["cancel_requested"] is None
    assert len(pg.store().list_runs()) == 1
    assert pg("cancel", run_id, env=env).returncode == 0  # and once the lock is free, it works
    bad = pg("runs", env={"FLOWMETAL_PG_LOCK_TIMEOUT": "soon"})
    assert bad.returncode == 2 and "FLOWMETAL_PG_LOCK_TIMEOUT='soon'" in bad.stderr and "Traceback" not in bad.stderr


def test_transactions_of_different_run_trees_commit_at_once(pg):
    """A run's end or suspension locks its own tree (store/base.py transaction(tree=)): the ends
    of runs in different trees no longer wait for one database-wide lock."""
    import threading

    from flowmetal.store.postgres import PostgresStore

    pg("runs")  # creates the schema
    st, other = PostgresStore(pg.url, pool_size=1), PostgresStore(pg.url, pool_size=1)
    try:
        entered, release, done = threading.Event(), threading.Event(), threading.Event()

        def hold():
            with st.transaction(tree="tree-a"):
                entered.set()
                release.wait(10)

        t = threading.Thread(target=hold)
        t.start()
        assert entered.wait(10)
        with other.transaction(tree="tree-b"):  # another tree: in at once, while tree-a is held
            done.set()
        assert done.is_set() and t.is_alive()
        release.set()
        t.join(10)
    finally:
        st.close()
        other.close()


CALLBACK = """
def main():
    cb = callback(name = "go", timeout = "1s")
    return [cb.url.startswith("http"), wait_callback(cb)]
"""


def test_callbacks_on_postgres_need_the_shared_secret_file(pg, tmp_path):
    pg.write("cb.star", CALLBACK)
    r = pg("run", "cb.star")
    assert r.returncode == 1 and '.py", line' not in r.stderr, r.stderr  # the run's Starlark trace, no Python's
    assert "callback URLs on PostgreSQL need FLOWMETAL_SECRET_FILE" in r.stderr and "cb.star:3:10" in r.stderr
    secret = tmp_path / "secret"
    r = pg("run", "cb.star", env={"FLOWMETAL_SECRET_FILE": str(secret)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [True, None]  # the URL derived, the wait timed out
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text().strip()) == 64
