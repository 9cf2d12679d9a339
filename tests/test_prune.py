"""`flowmetal prune`: retention. Old ended run trees go with everything that is theirs;
runs in flight, their children, shared sources and blobs, and unsettled fires stay."""

import json
import sqlite3
import time

from test_scheduler import HOUR, T0, World, sched

from flowmetal.store.sqlite import SqliteStore

DAY = 86400

WORKFLOWS = """
def child(n):
    return n * 2

def parent():
    return wait(spawn(child, 21))

def big(fill):
    # more than 64 KiB of stdout: stored once as a blob, referred to by the journal
    return len(sh("head -c 100000 /dev/zero | tr '\\\\0' %s" % fill).stdout)

def waits():
    return wait_signal("go")

def main():
    log("hello")
    return now()
"""


def _counts(db, table, where="1", params=()):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0]
    finally:
        conn.close()


def _age(db, run_ids, days):
    conn = sqlite3.connect(db)
    marks = ",".join("?" * len(run_ids))
    conn.execute(f"UPDATE runs SET created_at = created_at - ?, ended_at = ended_at - ? WHERE id IN ({marks})",
                 (days * DAY, days * DAY, *run_ids))
    conn.execute("UPDATE blobs SET touched_at = touched_at - ?", (days * DAY,))
    conn.commit()
    conn.close()


def test_prune_deletes_old_ended_run_trees_and_keeps_everything_else(fm):
    fm.write("w.star", WORKFLOWS)
    fm.write("old.star", "def main():\n    return 'only this old run loaded me'\n")

    def run(target, *args):
        r = fm("run", target, *args)
        assert r.returncode == 0, r.stderr
        return r.stderr.split()[1]  # "run ID" is the first line

    old_main = run("w.star:main")
    old_file = run("old.star")
    old_parent = run("w.star:parent")
    [old_child] = [r["id"] for r in json.loads(fm("runs", "--json").stdout) if r["parent_id"] == old_parent]
    old_big = run("w.star:big", "-a", "fill=x")
    kept_big = run("w.star:big", "-a", "fill=y")
    waiting = fm("start", "w.star:waits").stdout.strip()
    assert fm("worker", "--until-idle").returncode == 0
    assert fm.run_row(waiting)["state"] == "waiting"
    recent = run("w.star:main")
    old = [old_main, old_file, old_parent, old_child, old_big]
    _age(fm.db, old + [waiting, kept_big], 40)  # the waiting run is old too, but in flight
    conn = sqlite3.connect(fm.db)  # kept_big's run ended recently; only its blob's write time is old
    conn.execute("UPDATE runs SET ended_at = ? WHERE id = ?", (time.time(), kept_big))
    conn.commit()
    conn.close()
    st = fm.store()
    fresh_orphan = st.put_blob("written a moment ago; its journal entry is not committed yet", time.time())
    journal_old = sum(len(st.journal(r)) for r in old)
    st.close()
    logs_old = sum(_counts(fm.db, "logs", "run_id = ?", (r,)) for r in old)
    assert logs_old >= 2  # log("hello") and the big run's output
    blobs_before = _counts(fm.db, "blobs")

    r = fm("prune", "--older-than", "30d", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    counted = json.loads(r.stdout)
    assert counted["dry_run"] is True
    assert {k: counted[k] for k in ("runs", "journal", "logs")} == {"runs": 5, "journal": journal_old, "logs": logs_old}
    assert _counts(fm.db, "runs") == 8 and _counts(fm.db, "blobs") == blobs_before  # nothing deleted

    r = fm("prune", "--older-than", "30d")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"deleted 5 runs with {journal_old} journal entries, {logs_old} log lines")
    assert "1 source texts, 1 large results" in r.stdout  # old.star's text; the blob of fill=x

    for run_id in old:
        assert fm("show", run_id).returncode == 2
        assert _counts(fm.db, "logs", "run_id = ?", (run_id,)) == 0
        assert _counts(fm.db, "run_sources", "run_id = ?", (run_id,)) == 0
    assert _counts(fm.db, "journal") == sum(len(fm.journal(r)) for r in (waiting, kept_big, recent))
    assert _counts(fm.db, "blobs", "hash = ?", (fresh_orphan,)) == 1  # too fresh to be an orphan
    shown = json.loads(fm("show", kept_big, "--json").stdout)
    assert shown["result"] == 100000 and shown["journal"][0]["result"]["stdout"] == "y" * 100000
    assert json.loads(fm("show", recent, "--json").stdout)["state"] == "completed"

    # the run in flight is untouched: it still resumes and completes
    assert fm("signal", waiting, "go", '{"ok": true}').returncode == 0
    assert fm("worker", "--until-idle").returncode == 0
    assert json.loads(fm.run_row(waiting)["result"]) == {"ok": True}

    r = fm("prune", "--older-than", "30d")  # nothing left to do
    assert r.stdout.startswith("deleted 0 runs with 0 journal entries"), r.stdout


def test_prune_keeps_a_tree_while_any_run_in_it_is_in_flight(fm):
    fm.write("w.star", WORKFLOWS + "\ndef stuck():\n    return wait(spawn(waits))\n")
    top = fm("start", "w.star:stuck").stdout.strip()
    assert fm("worker", "--until-idle").returncode == 0
    ids = [r["id"] for r in json.loads(fm("runs", "--json").stdout)]
    assert len(ids) == 2 and all(fm.run_row(i)["state"] == "waiting" for i in ids)
    _age(fm.db, ids, 40)
    r = fm("prune", "--older-than", "1d", "--json")
    assert json.loads(r.stdout)["runs"] == 0
    assert _counts(fm.db, "runs") == 2


def test_prune_rejects_a_bad_duration_and_deletes_nothing(fm):
    r = fm("prune", "--older-than", "a month")
    assert r.returncode == 2 and "--older-than" in r.stderr and "Traceback" not in r.stderr
    r = fm("prune")
    assert r.returncode == 2 and "--older-than" in r.stderr


def test_prune_drops_settled_fires_and_no_pruned_fire_time_fires_again(tmp_path):
    w = World(tmp_path, sched("hourly", "0 * * * *", catchup="none"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1800)
    [first] = s.tick(T0)
    w.end(first, T0 + 60)
    s.reconcile(w.specs(), T0 + 72 * HOUR + 1800)
    assert s.tick(T0 + 72 * HOUR + 1800) == []  # 72 misses recorded, nothing started
    w.store.insert_fire({"schedule": "hourly", "nominal": T0 - HOUR, "action": "buffered", "reason": "test",
                         "recorded_at": T0})
    assert len(w.fires("hourly")) == 74

    counts = w.store.prune(T0 + 48 * HOUR, T0 + 100 * HOUR)
    assert counts["runs"] == 1 and counts["fires"] == 48  # the started fire at T0 and 47 misses
    left = w.fires("hourly")
    assert [f["nominal"] for f in left] == [T0 - HOUR] + [T0 + h * HOUR for h in range(48, 73)]
    assert left[0]["action"] == "buffered"  # never dropped: it is still to start

    s2 = w.scheduler(SqliteStore(w.db))  # a new process
    s2.reconcile(w.specs(), T0 + 72 * HOUR + 1900)
    created = s2.tick(T0 + 72 * HOUR + 1900)
    assert [w.store.get_run(r)["fire_time"] for r in created] == [T0 - HOUR]  # only the buffered fire starts
    assert [f["nominal"] for f in w.fires("hourly")] == [T0 - HOUR] + [T0 + h * HOUR for h in range(48, 73)]


def test_old_incarnations_of_a_continue_as_new_loop_go_while_the_current_one_waits(fm):
    fm.write("loop.star", """
def loop(n = 0):
    if n < 2:
        continue_as_new(n = n + 1)
    return wait_signal("stop")
""")
    fm("start", "loop.star:loop")
    assert fm("worker", "--until-idle").returncode == 0
    runs = json.loads(fm("runs", "--json").stdout)
    assert sorted(r["state"] for r in runs) == ["completed", "completed", "waiting"]
    _age(fm.db, [r["id"] for r in runs], 40)
    r = fm("prune", "--older-than", "30d", "--json")
    assert json.loads(r.stdout)["runs"] == 2
    [current] = json.loads(fm("runs", "--json").stdout)
    assert current["state"] == "waiting" and fm("show", current["id"]).returncode == 0
    assert fm("signal", current["id"], "stop", "3").returncode == 0
    assert fm("worker", "--until-idle").returncode == 0
    assert fm.run_row(current["id"])["result"] == "3"
