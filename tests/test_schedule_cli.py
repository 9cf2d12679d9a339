"""`flowmetal schedule` and `flowmetal import-crontab` as a user runs them: real processes,
real time, assertions on database rows (SPEC sections 5 and 6)."""

import json
import os
import re
import signal
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from conftest import EXAMPLES, wait_for

UTC = timezone.utc


def start_scheduler(fm, *args, env=None):
    proc = fm.spawn("schedule", *args, env=env)
    wait_for(lambda: "scheduler started" in proc.err() or proc.poll() is not None, what="scheduler start")
    assert proc.poll() is None, proc.err()
    return proc


def stop(proc, timeout=20):
    os.killpg(proc.pid, signal.SIGTERM)
    return proc.wait(timeout)


def scheduled_runs(fm, name=None):
    st = fm.store()
    try:
        rows = st.x("SELECT * FROM runs WHERE schedule IS NOT NULL ORDER BY fire_time, id").fetchall()
        return [dict(r) for r in rows if name is None or r["schedule"] == name]
    finally:
        st.close()


TICK = """
def tick():
    return 1

schedule(name = "tick", cron = "* * * * * *", run = tick, overlap = "allow")
"""


@pytest.mark.slow
def test_every_second_for_ten_seconds_starts_each_run_on_time(fm):
    fm.write("tick.star", TICK)
    proc = start_scheduler(fm, ".")
    time.sleep(10)
    assert stop(proc) == 0, proc.err()
    runs = scheduled_runs(fm, "tick")
    assert 9 <= len(runs) <= 11, len(runs)
    # SIGTERM stops starting runs: a fire made in the instant before it stays queued
    # (pending, never started, resumable). Only the newest fire can be that one.
    if runs[-1]["state"] == "pending":
        assert runs[-1]["started_at"] is None and runs[-1]["executions"] == 0, runs[-1]
        started = runs[:-1]
    else:
        started = runs
    for r in started:
        assert r["state"] == "completed", r
        assert r["fire_time"] == int(r["fire_time"])
        assert 0 <= r["started_at"] - r["fire_time"] < 1.0, (r["fire_time"], r["started_at"])
    assert len(re.findall(r" fire +tick ", proc.err())) == len(runs)
    assert len(re.findall(r" end +tick .* completed in ", proc.err())) == len(started)


@pytest.mark.slow
def test_two_schedulers_on_one_database_never_start_a_fire_twice(fm):
    fm.write("tick.star", TICK)
    a = start_scheduler(fm, ".")
    b = start_scheduler(fm, ".")
    time.sleep(10)
    assert stop(a) == 0 and stop(b) == 0, a.err() + b.err()
    times = [r["fire_time"] for r in scheduled_runs(fm, "tick")]
    assert len(times) >= 9
    assert len(times) == len(set(times)), sorted(times)
    assert sorted(times) == [times[0] + k for k in range(len(times))]  # and none missing
    fired_by = [len(re.findall(r" fire +tick ", p.err())) for p in (a, b)]
    assert sum(fired_by) == len(times)


EDITABLE = """
def job():
    return 1

schedule(name = "job", cron = "{cron}", run = job, overlap = "allow")
"""


@pytest.mark.slow
def test_editing_and_breaking_the_file_while_the_daemon_runs(fm):
    path = fm.write("jobs.star", EDITABLE.format(cron="0 0 1 1 *"))
    proc = start_scheduler(fm, ".")
    time.sleep(1.2)
    assert scheduled_runs(fm) == []
    edited = time.time()
    path.write_text(EDITABLE.format(cron="* * * * * *"))
    first = wait_for(lambda: scheduled_runs(fm), timeout=5, what="a run after the edit")
    assert first[0]["fire_time"] - edited < 3.5
    assert "changed schedule job: * * * * * *" in proc.err()

    path.write_text(EDITABLE.format(cron="* * * * * *") + "\nundefined_name()\n")  # line 7
    broken = time.time()
    time.sleep(3.5)
    err = proc.err()
    assert "jobs.star:7:1: error: Variable `undefined_name` not found" in err  # file:line:col
    assert err.count("jobs.star has errors; keeping its last good schedules: job") == 1, err  # not every second
    after = [r for r in scheduled_runs(fm) if r["fire_time"] > broken + 0.5]
    assert len(after) >= 2  # the last good schedule keeps firing

    path.write_text(EDITABLE.format(cron="0 0 1 1 *"))
    wait_for(lambda: "jobs.star loads again" in proc.err(), timeout=5, what="the fix to be seen")
    time.sleep(1.5)
    fixed = time.time()
    time.sleep(1.5)
    assert [r for r in scheduled_runs(fm) if r["fire_time"] > fixed] == []
    assert stop(proc) == 0


SLOW_JOB = """
def job(out):
    sh('touch "$OUT/$FLOWMETAL_RUN_ID.started"; sleep {sleep}; echo one >> "$OUT/$FLOWMETAL_RUN_ID"', env = {{"OUT": out}})
    sh('echo two >> "$OUT/$FLOWMETAL_RUN_ID"', env = {{"OUT": out}})
    return "done"

schedule(name = "slow", cron = "* * * * * *", run = job, args = {{"out": "{out}"}}, overlap = "skip")
"""


def _first_started(out):
    found = sorted(out.glob("*.started"), key=lambda p: p.stat().st_mtime)
    return found[0].name[: -len(".started")] if found else None


@pytest.mark.slow
def test_sigterm_lets_the_running_effect_finish_and_the_next_start_resumes(fm):
    out = fm.root / "out"
    out.mkdir()
    fm.write("slow.star", SLOW_JOB.format(sleep=2, out=out))
    proc = start_scheduler(fm, ".", "--grace", "10s")
    run_id = wait_for(lambda: _first_started(out), what="the job to start")
    t = time.time()
    code = stop(proc)
    took = time.time() - t
    assert code == 0, proc.err()
    assert 1.0 < took < 10, took  # waited for the effect, not for the grace period
    row = fm.run_row(run_id)
    assert row["state"] == "running" and row["lease_expires"] == 0  # resumable
    assert (out / run_id).read_text() == "one\n"  # the effect in progress finished...
    journal = fm.journal(run_id)
    assert [(e["seq"], e["status"]) for e in journal] == [(1, "completed")]  # ...and was recorded
    assert f"left resumable: {run_id}" in proc.err()

    again = start_scheduler(fm, ".")
    fm.wait_state(run_id, "completed", timeout=20)
    assert stop(again) == 0
    assert (out / run_id).read_text() == "one\ntwo\n"  # the first effect was not performed again
    assert [e["reexecuted"] for e in fm.journal(run_id)] == [0, 0]


@pytest.mark.slow
def test_sigterm_with_a_short_grace_interrupts_the_effect_and_it_is_performed_again(fm):
    out = fm.root / "out"
    out.mkdir()
    fm.write("slow.star", SLOW_JOB.format(sleep=30, out=out))
    proc = start_scheduler(fm, ".", "--grace", "1s")
    run_id = wait_for(lambda: _first_started(out), what="the job to start")
    t = time.time()
    assert stop(proc) == 0, proc.err()
    assert time.time() - t < 3.5
    assert fm.run_row(run_id)["state"] == "running"
    assert [e["status"] for e in fm.journal(run_id)] == ["started"]  # open: performed again on resume


FAILING = """
def boom():
    fail("boom")

def notify(run_id, schedule, fire_time, state, error):
    sh('printf "%s" "$DOC" > "$OUT"', env = {{"DOC": json.encode({{"run_id": run_id, "schedule": schedule,
        "fire_time": fire_time, "state": state, "error": error}}), "OUT": "{out}"}})

schedule(name = "fragile", cron = "* * * * * *", run = boom, on_failure = notify)
"""


@pytest.mark.slow
def test_on_failure_runs_with_the_failed_runs_details(fm):
    report = fm.root / "report.json"
    fm.write("fragile.star", FAILING.format(out=report))
    proc = start_scheduler(fm, ".")
    wait_for(report.exists, timeout=10, what="the on_failure report")
    assert stop(proc) == 0
    doc = json.loads(report.read_text())
    assert set(doc) == {"run_id", "schedule", "fire_time", "state", "error"}
    failed = fm.run_row(doc["run_id"])
    assert failed["state"] == "failed" and doc["state"] == "failed" and doc["schedule"] == "fragile"
    assert doc["fire_time"] == datetime.fromtimestamp(failed["fire_time"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "boom" in doc["error"] and doc["error"] == failed["error"]
    assert re.search(r"on_failure fragile .* failed -> on_failure run \w+", proc.err())


@pytest.mark.slow
def test_once_fires_what_is_due_and_exits_when_it_ends(fm):
    fm.write("tick.star", TICK.replace('overlap = "allow"', 'catchup = "latest"'))
    r = fm("schedule", "--once")
    assert r.returncode == 0, r.stderr  # just added: nothing is due yet
    assert scheduled_runs(fm) == []
    time.sleep(1.5)
    r = fm("schedule", "--once")
    assert r.returncode == 0, r.stderr
    runs = scheduled_runs(fm)
    assert len(runs) == 1 and runs[0]["state"] == "completed"
    listed = json.loads(fm("schedule", "--list", "--json").stdout)
    assert [(s["name"], s["status"], s["counts"]["started"]) for s in listed] == [("tick", "active", 1)]
    assert listed[0]["last_fire"]["state"] == "completed" and len(listed[0]["next"]) == 3


# ------------------------------------------------------- quick, no real time


def test_list_shows_schedules_and_their_history(fm):
    fm.write("tick.star", TICK)
    r = fm("schedule", "--list")
    assert r.returncode == 0, r.stderr
    assert re.search(r"tick +new +\* \* \* \* \* \* +UTC", r.stdout), r.stdout
    doc = json.loads(fm("schedule", "--list", "--json").stdout)
    assert doc[0]["name"] == "tick" and doc[0]["status"] == "new" and doc[0]["last_fire"] is None


@pytest.mark.parametrize("args,message", [
    (["--json"], "--json goes with --list or --dry-run"),
    (["--from", "2026-01-01"], "--from and --to go with --dry-run"),
    (["--list", "--once"], "cannot be combined"),
    (["nowhere"], "nowhere: no such file or directory"),
    (["--dry-run", "--from", "yesterday"], "expected an ISO date"),
    (["--grace", "soon"], "--grace must be"),
])
def test_usage_errors_exit_2(fm, args, message):
    fm.write("tick.star", TICK)
    r = fm("schedule", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_dry_run_lists_fire_times_in_the_schedule_zone_and_starts_nothing(fm):
    fm.write("nightly.star", 'def job():\n    return 1\n\nschedule(name = "nightly", cron = "30 2 * * *", '
             'run = job, timezone = "Europe/Berlin")\n')
    r = fm("schedule", "--dry-run", "--from", "2026-03-28T00:00:00+01:00", "--to", "2026-03-31T00:00:00+02:00")
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert not fm.db.exists()  # a dry run does not even create the database


def _crontab_fires(text, start, end, local_zone):
    """What cron would run: per job (numbered as import-crontab numbers them), its fire times."""
    zone, fires, n = local_zone, {}, 0
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assign = re.match(r"^([A-Za-z_]\w*)\s*=\s*(.*)$", line)
        if assign:
            if assign.group(1) in ("CRON_TZ", "TZ"):
                zone = assign.group(2)
            continue
        if line.startswith("@reboot"):
            continue
        expr = line.split()[0] if line.startswith("@") else " ".join(line.split()[:5])
        n += 1
        it = croniter(expr, datetime.fromtimestamp(start, ZoneInfo(zone)) - _SECOND)
        times = []
        while True:
            t = it.get_next(datetime).timestamp()
            if t >= end:
                break
            times.append(t)
        fires[f"job-{n}"] = times
    return fires


_SECOND = __import__("datetime").timedelta(seconds=1)


def test_import_crontab_round_trip(fm):
    crontab = EXAMPLES / "crontab" / "crontab"
    r = fm("import-crontab", crontab, "-o", "cron.star")
    assert r.returncode == 0, r.stderr
    star = (fm.root / "cron.star").read_text()
    assert fm("import-crontab", crontab).stdout == star
    # the checked-in example is exactly what the command writes
    example = fm("import-crontab", "examples/crontab/crontab", "--prefix", "crontab-example", cwd=EXAMPLES.parent)
    assert example.stdout == (EXAMPLES / "crontab" / "crontab.star").read_text()
    check = fm("check", "cron.star")
    assert check.returncode == 0, check.stdout + check.stderr

    env = {"TZ": "America/New_York"}  # "local" jobs: no DST change in this week
    start = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    end = datetime(2026, 6, 8, tzinfo=UTC).timestamp()
    r = fm("schedule", "cron.star", "--dry-run", "--json", "--from", "2026-06-01T00:00:00Z",
           "--to", "2026-06-08T00:00:00Z", env=env)
    assert r.returncode == 0, r.stderr
    got = {}
    for row in json.loads(r.stdout):
        t = datetime.fromisoformat(row["fire_time"].replace("Z", "+00:00")).timestamp()
        got.setdefault(row["schedule"], []).append(t)
    expected = _crontab_fires(crontab.read_text(), start, end, "America/New_York")
    assert len(expected) == 9
    assert {k: v for k, v in expected.items() if v} == got
    assert sum(map(len, got.values())) > 300  # the */10 business-hours job alone fires 270 times


# ------------------------------------------- files that fail to load (issue 12 item 3)

BROKEN = {
    "missing-load": ('load("//missing.star", "x")\n', "bad.star:1:"),
    "parse-error": ("def f(:\n", "bad.star:1:7: error: Parse error"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_list_dry_run_and_once_report_a_broken_file_and_go_on(fm, kind):
    text, where = BROKEN[kind]
    fm.write("tick.star", TICK)
    fm.write("bad.star", text)
    r = fm("schedule", "--list")
    assert r.returncode == 2, r.stderr  # a file failed to load: reported, listing complete
    assert where in r.stderr and "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert re.search(r"tick +new ", r.stdout), r.stdout
    r = fm("schedule", "--dry-run", "--to", "3s")
    assert r.returncode == 2 and where in r.stderr and "internal error" not in r.stderr, r.stderr
    assert len([line for line in r.stdout.splitlines() if " tick " in line]) in (2, 3, 4), r.stdout
    r = fm("schedule", "--once", ".")
    assert r.returncode == 0, r.stderr
    assert where in r.stderr and "scheduler started: 1 schedule(s)" in r.stderr, r.stderr


def test_dry_run_takes_durations_like_prune(fm):
    fm.write("nightly.star", 'def job():\n    return 1\n\nschedule(name = "nightly", cron = "30 2 * * *", run = job)\n')
    r = fm("schedule", "--dry-run", "--to", "7d")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 7 and "7 fire(s) of 1 schedule(s)" in r.stderr
    r = fm("schedule", "--dry-run", "--from", "2026-03-01", "--to", "2d", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 2  # a duration after --from


def test_list_of_a_path_shows_only_the_schedules_under_it(fm):
    fm.write("a/one.star", 'def job():\n    return 1\n\nschedule(name = "one", cron = "0 0 1 1 *", run = job)\n')
    fm.write("b/two.star", 'def job():\n    return 1\n\nschedule(name = "two", cron = "0 0 1 1 *", run = job)\n')
    assert fm("schedule", "--once", ".").returncode == 0  # both are stored now
    names = lambda *paths: [s["name"] for s in json.loads(fm("schedule", "--list", "--json", *paths).stdout)]
    assert names() == ["one", "two"]
    assert names("a") == ["one"]
    assert names("b/two.star") == ["two"]
    assert names("a", "--json") == ["one"]  # options may follow the paths


@pytest.mark.slow
def test_the_daemon_starts_with_a_broken_file_and_keeps_its_last_good_schedules_across_a_restart(fm):
    fm.write("tick.star", TICK)
    other = fm.write("other.star", TICK.replace('"tick"', '"other"'))
    proc = start_scheduler(fm, ".")
    wait_for(lambda: scheduled_runs(fm, "other"), timeout=5, what="a run of other")
    other.write_text('load("//missing.star", "x")\n' + TICK.replace('"tick"', '"other"'))  # breaks it
    wait_for(lambda: "other.star has errors" in proc.err(), timeout=5, what="the load error")
    time.sleep(0.5)
    assert stop(proc) == 0, proc.err()
    err = proc.err()
    assert "other.star:1:" in err and "missing.star" in err and "TypeError" not in err, err
    assert "keeping its last good schedules: other" in err
    # a restart while the file is still broken: every schedule fires, the broken file's with its last good code
    restarted = time.time()
    proc = start_scheduler(fm, ".")
    assert "scheduler started: 2 schedule(s)" in proc.err()
    wait_for(lambda: [r for r in scheduled_runs(fm, "other") if r["fire_time"] > restarted + 0.5], timeout=5,
             what="other firing after the restart")
    wait_for(lambda: [r for r in scheduled_runs(fm, "tick") if r["fire_time"] > restarted + 0.5], timeout=5,
             what="tick firing after the restart")
    assert stop(proc) == 0, proc.err()
    assert "other.star:1:" in proc.err() and "internal error" not in proc.err()


@pytest.mark.slow
def test_a_file_rewritten_in_place_slowly_keeps_its_schedules(fm):
    """`printf ... > jobs.star` truncates, then writes: a load may see it empty or half written."""
    path = fm.write("jobs.star", EDITABLE.format(cron="* * * * * *"))
    proc = start_scheduler(fm, ".")
    text = EDITABLE.format(cron="* * * * * *")
    for cut in (0, len(text) // 2, 0):  # empty, then half of it, then empty again, each for 1.5 s
        with open(path, "w") as f:
            f.write(text[:cut])
            f.flush()
            time.sleep(1.5)
            f.write(text[cut:])
        time.sleep(1.2)
    assert stop(proc) == 0, proc.err()
    err = proc.err()
    assert "removed schedule" not in err and "changed schedule" not in err, err
    st = fm.store()
    try:
        row = st.get_schedule("job")
        assert row["removed_at"] is None and row["enabled"] == 1
    finally:
        st.close()
    assert "jobs.star:1:1: warning: the file is empty" in err, err


# ------------------------------------------- what the daemon prints (issue 12 item 15)

SLEEPY = """
def nap():
    sleep("1200ms")
    return 1

def quick():
    return 2

schedule(name = "nap", cron = "* * * * * *", run = nap, overlap = "allow")
schedule(name = "quick", cron = "* * * * * *", run = quick, overlap = "allow")
"""


@pytest.mark.slow
def test_each_run_prints_fire_then_one_start_then_one_end(fm):
    fm.write("sleepy.star", SLEEPY)
    proc = start_scheduler(fm, ".")
    time.sleep(5)
    assert stop(proc) == 0, proc.err()
    lines = proc.err().splitlines()
    by_run = {}
    for i, line in enumerate(lines):
        m = re.search(r" (fire|start|end) +(nap|quick) .* run (\w+)", line)
        if m:
            by_run.setdefault(m.group(3), []).append(m.group(1))
    assert len(by_run) >= 6, lines
    ended = 0
    for run_id, kinds in by_run.items():
        assert kinds[0] == "fire" and kinds.count("fire") == 1, (run_id, kinds)
        assert kinds.count("start") <= 1 and kinds.count("end") <= 1, (run_id, kinds)
        assert kinds == ["fire", "start", "end"][:len(kinds)], (run_id, kinds)
        ended += kinds == ["fire", "start", "end"]
    assert ended >= 4
    assert not re.search(r" end .* waiting in ", proc.err())


# ------------------------------------------- commands on one schedule (issue 12 item 21)

MINUTELY = """
def job():
    return 1

schedule(name = "m", cron = "* * * * *", run = job)
"""


def test_pause_resume_trigger_and_backfill_from_the_command_line(fm):
    fm.write("m.star", MINUTELY)
    r = fm("schedule", "pause", "m")
    assert r.returncode == 2 and "no schedule named 'm'" in r.stderr, r.stderr  # not loaded yet
    assert fm("schedule", "--once").returncode == 0  # loads it (the bare form still works)
    r = fm("schedule", "pause", "m")
    assert r.returncode == 0 and "paused schedule m (m.star:5)" in r.stdout, r.stderr
    listed = lambda: json.loads(fm("schedule", ".", "--list", "--json").stdout)[0]
    assert listed()["status"] == "paused" and listed()["next"] == []
    assert "m  " in fm("schedule", "--list").stdout and "paused" in fm("schedule", "--list").stdout
    r = fm("schedule", "trigger", "m", "--json")
    assert r.returncode == 0, r.stderr
    trig = json.loads(r.stdout)
    row = fm.run_row(trig["run_id"])
    assert row["schedule"] == "m" and row["state"] == "pending"
    assert listed()["last_fire"]["reason"] == "manual" and listed()["counts"]["started"] == 1
    r = fm("schedule", "resume", "m")
    assert r.returncode == 0 and "resumed schedule m" in r.stdout and listed()["status"] == "active"
    assert "is not paused (active)" in fm("schedule", "resume", "m").stdout
    start = datetime.fromtimestamp((time.time() // 60 - 5) * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = fm("schedule", "backfill", "m", "--from", start, "--to", "3m", "--dry-run")
    assert r.returncode == 0 and r.stdout.count("would start") == 3, r.stdout + r.stderr
    r = fm("schedule", "backfill", "m", "--from", start, "--to", "3m")
    assert r.returncode == 0 and r.stdout.count(" started run ") == 3, r.stdout + r.stderr
    assert "started 3 of 3 fire time(s) of m" in r.stderr
    r = fm("schedule", "backfill", "m", "--from", start, "--to", "3m")
    assert r.stdout.count(" left ") == 3 and "started 0 of 3" in r.stderr
    st = fm.store()
    try:
        reasons = sorted(f["reason"] for f in st.fires("m"))
    finally:
        st.close()
    assert reasons == ["backfill", "backfill", "backfill", "manual"]
    assert listed()["counts"]["started"] == 4
    r = fm("schedule", "backfill", "m", "--from", start, "--to", "1d")
    assert r.returncode == 2 and "is in the future" in r.stderr


@pytest.mark.slow
def test_a_running_scheduler_executes_a_triggered_run_at_once_and_sees_a_pause(fm):
    fm.write("m.star", MINUTELY.replace('"* * * * *"', '"0 0 1 1 *"').replace("run = job)", "run = job)\n"
             + 'schedule(name = "s", cron = "* * * * * *", run = job, overlap = "allow")\n'))
    proc = start_scheduler(fm, ".")
    asked = time.time()
    r = fm("schedule", "trigger", "m", "--json")
    assert r.returncode == 0, r.stderr
    run_id = json.loads(r.stdout)["run_id"]
    done = fm.wait_state(run_id, "completed", timeout=10)
    assert done["started_at"] - asked < 3.0
    assert fm("schedule", "pause", "s").returncode == 0
    paused = time.time()
    time.sleep(2.5)
    assert stop(proc) == 0, proc.err()
    assert re.search(r" start +m .* run " + run_id, proc.err()), proc.err()
    assert not [r for r in scheduled_runs(fm, "s") if r["fire_time"] > paused + 0.5]
    st = fm.store()
    try:
        assert [f["reason"] for f in st.fires("s", limit=2)] == ["paused", "paused"]
    finally:
        st.close()


@pytest.mark.parametrize("args,message", [
    (["pause"], "Missing argument 'NAME'"),
    (["backfill", "m", "--to", "1d"], "Missing option '--from'"),
    (["trigger", "m", "--list"], "No such option '--list'"),
    (["backfill", "m", "--from", "soon", "--to", "1d"], "expected an ISO date"),
])
def test_schedule_command_usage_errors_exit_2(fm, args, message):
    fm.write("m.star", MINUTELY)
    r = fm("schedule", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
