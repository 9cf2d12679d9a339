"""The scheduler's core, in process, with an injected clock (SPEC section 5).

`Scheduler.tick(now)` is driven through weeks of schedule time in seconds;
runs are created but not executed (the tests end them by hand, as a worker
would), so every overlap and catch-up decision is visible in the database.

Every test with a World runs on both stores (`[sqlite]`, `[postgres]`: a fresh database on the
session's cluster, conftest.py; marked `postgres`). A "new process" is a second store on the
same database (`w.open()`).
"""

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from flowmetal.engine import runs as run_ops
from flowmetal.lang.check import check
from flowmetal.lang.discovery import Workspace
from flowmetal.schedule.daemon import Daemon
from flowmetal.schedule.entry import iso_utc
from flowmetal.schedule.scheduler import Scheduler
from flowmetal.schedule.views import preview
from flowmetal.store.sqlite import SqliteStore

from conftest import STORES, fresh_database

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
HOUR = 3600.0

JOBS = """
def job(n = 0):
    return n

def notify(run_id, schedule, fire_time, state, error):
    return run_id
"""


def pytest_generate_tests(metafunc):
    if "tmp_path" in metafunc.fixturenames:  # (the tests that build a World)
        metafunc.parametrize("store_kind", STORES, indirect=True)


_OPEN = {}  # how this test's World opens its database, set by the store_kind fixture


@pytest.fixture(autouse=True)
def store_kind(request):
    kind = getattr(request, "param", "sqlite")
    opened = []
    if kind == "postgres":
        from flowmetal.store.postgres import PostgresStore

        url = fresh_database(request.getfixturevalue("pg_cluster"), request)

        def open_store(db):
            opened.append(PostgresStore(url, pool_size=2))
            return opened[-1]
    else:
        def open_store(db):
            opened.append(SqliteStore(db))
            return opened[-1]
    _OPEN["open"] = open_store
    yield kind
    _OPEN.clear()
    for st in opened:
        st.close()


class World:
    """A workspace with one .star file of schedules, its database, and schedulers on it."""

    def __init__(self, tmp_path, schedules):
        self.root = tmp_path / "ws"
        (self.root / ".flowmetal").mkdir(parents=True)
        self.db = self.root / ".flowmetal" / "flowmetal.db"
        self.write(schedules)
        self.store = self.open()
        self.events = []

    def open(self):
        """Another store on this World's database: what a second process would have."""
        if "open" not in _OPEN:  # a World of another test module (test_prune.py): SQLite
            from flowmetal.store.sqlite import SqliteStore

            return SqliteStore(self.db)
        return _OPEN["open"](self.db)

    def write(self, schedules):
        (self.root / "jobs.star").write_text(JOBS + "\n" + schedules + "\n")

    def specs(self):
        report = check(self.root, [self.root / "jobs.star"])
        assert report.errors == [], [d.render() for d in report.errors]
        return report.schedules

    def scheduler(self, store=None):
        return Scheduler(store or self.store, self.root, emit=lambda kind, **f: self.events.append((kind, f)))

    def runs(self, schedule=None):
        rows = self.store.list_runs(limit=1_000_000)
        rows = [r for r in rows if schedule is None or r["schedule"] == schedule]
        return sorted(rows, key=lambda r: (r["fire_time"] or 0, r["id"]))

    def fires(self, schedule):
        return sorted(self.store.fires(schedule, limit=1_000_000), key=lambda f: f["nominal"])

    def end(self, run_id, at, state="completed", error=None):
        self.store.update_run(run_id, state=state, ended_at=at, error=error, owner=None, lease_expires=None)

    def running(self, run_id):
        self.store.x("UPDATE runs SET state = 'running', owner = 'test:1:x', lease_expires = ? WHERE id = ?",
                     (T0 + 10**8, run_id))


def sched(name, cron, **kw):
    args = "".join(f", {k} = {json.dumps(v) if not isinstance(v, bool) else str(v)}" for k, v in kw.items())
    return f'schedule(name = "{name}", cron = "{cron}", run = job{args})'


def tally(fires):
    return Counter((f["action"], f["reason"]) for f in fires)


# --------------------------------------------------------------- catch-up


def _three_days_down(tmp_path, **kw):
    """An hourly job fires on time at T0, then nothing runs for 3 days and 30 minutes."""
    w = World(tmp_path, sched("hourly", "0 * * * *", **kw))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1800)
    assert len(s.tick(T0)) == 1
    for r in w.runs():
        w.end(r["id"], T0 + 60)
    s2 = w.scheduler(w.open())  # a new process: only the database remembers
    s2.reconcile(w.specs(), T0 + 72 * HOUR + 1800)
    created = s2.tick(T0 + 72 * HOUR + 1800)
    assert w.store.get_schedule("hourly")["last_fire"] == T0 + 72 * HOUR  # persisted: the next start plans from it
    return w, created


def test_downtime_catchup_none_starts_nothing_and_records_every_miss(tmp_path):
    w, created = _three_days_down(tmp_path, catchup="none")
    assert created == []
    fires = w.fires("hourly")
    assert tally(fires[1:]) == {("missed", "catchup=none"): 72}
    assert [f["nominal"] for f in fires[1:]] == [T0 + h * HOUR for h in range(1, 73)]


def test_downtime_catchup_latest_starts_one(tmp_path):
    w, created = _three_days_down(tmp_path, catchup="latest")
    assert len(created) == 1
    run = w.store.get_run(created[0])
    assert run["fire_time"] == T0 + 72 * HOUR and run["schedule"] == "hourly"
    assert tally(w.fires("hourly")[1:]) == {("started", "catch-up"): 1, ("missed", "superseded by a later fire"): 71}


def test_downtime_catchup_all_within_window_starts_24(tmp_path):
    w, created = _three_days_down(tmp_path, catchup="all", catchup_window="1d", overlap="allow")
    assert len(created) == 24
    times = [w.store.get_run(r)["fire_time"] for r in created]
    assert times == [T0 + h * HOUR for h in range(49, 73)]  # oldest first
    assert tally(w.fires("hourly")[1:]) == {("started", "catch-up"): 24, ("missed", "outside the catch-up window"): 48}


def test_downtime_max_catchup_caps_it(tmp_path):
    w, created = _three_days_down(tmp_path, catchup="all", max_catchup=10, overlap="allow")
    assert len(created) == 10
    assert tally(w.fires("hourly")[1:]) == {("started", "catch-up"): 10, ("missed", "max_catchup exceeded"): 62}


def test_catchup_all_with_buffer_all_runs_the_missed_fires_in_sequence(tmp_path):
    w, created = _three_days_down(tmp_path, catchup="all", catchup_window="5h", overlap="buffer_all")
    assert len(created) == 1  # one at a time
    s = w.scheduler()
    s.reconcile(w.specs(), T0 + 72 * HOUR + 1800)
    order = [w.store.get_run(created[0])["fire_time"]]
    now = T0 + 72 * HOUR + 1800
    for _ in range(10):
        active = [r for r in w.runs("hourly") if r["state"] == "pending"]
        if not active:
            break
        assert len(active) == 1
        now += 10
        w.end(active[0]["id"], now)
        for rid in s.tick(now, fire=False):
            order.append(w.store.get_run(rid)["fire_time"])
    assert order == [T0 + h * HOUR for h in range(68, 73)]


# ---------------------------------------------------------------- overlap

MINUTE = 60.0
M0 = T0 + MINUTE  # the first fire after the schedule is added (at T0 + 1)


def _overlap(tmp_path, policy):
    """A every-minute job whose first run is still running 3 fires later."""
    w = World(tmp_path, sched("long", "* * * * *", overlap=policy))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 + 1)
    first = s.tick(M0)
    assert len(first) == 1
    w.running(first[0])
    created = []
    for k in (1, 2, 3):
        created += s.tick(M0 + k * MINUTE)
    return w, s, first[0], created


def test_overlap_skip(tmp_path):
    w, s, first, created = _overlap(tmp_path, "skip")
    assert created == []
    fires = w.fires("long")
    assert [f["action"] for f in fires] == ["started", "skipped", "skipped", "skipped"]
    assert fires[1]["reason"].startswith("overlap=skip")
    w.end(first, M0 + 3 * MINUTE + 30)
    assert s.tick(M0 + 3 * MINUTE + 30) == []  # nothing buffered
    assert len(s.tick(M0 + 4 * MINUTE)) == 1  # the next fire runs


def test_overlap_buffer_one(tmp_path):
    w, s, first, created = _overlap(tmp_path, "buffer_one")
    assert created == []
    assert [f["action"] for f in w.fires("long")] == ["started", "buffered", "skipped", "skipped"]
    w.end(first, M0 + 3 * MINUTE + 30)
    started = s.tick(M0 + 3 * MINUTE + 30)
    assert [w.store.get_run(r)["fire_time"] for r in started] == [M0 + MINUTE]  # the buffered one, at once
    assert [f["action"] for f in w.fires("long")] == ["started"] * 2 + ["skipped"] * 2


def test_overlap_buffer_all_runs_every_fire_in_order_one_at_a_time(tmp_path):
    w, s, first, created = _overlap(tmp_path, "buffer_all")
    assert created == []
    assert [f["action"] for f in w.fires("long")] == ["started", "buffered", "buffered", "buffered"]
    order, now, current = [M0], M0 + 3 * MINUTE + 20, first
    for _ in range(3):
        w.end(current, now)
        started = s.tick(now, fire=False)
        assert len(started) == 1
        current = started[0]
        order.append(w.store.get_run(current)["fire_time"])
        assert len([r for r in w.runs("long") if r["state"] not in ("completed",)]) == 1  # never two at once
        now += 5
    assert order == [M0 + k * MINUTE for k in range(4)]
    w.end(current, now)
    assert s.tick(now, fire=False) == []


def test_overlap_allow_runs_concurrently(tmp_path):
    w, s, first, created = _overlap(tmp_path, "allow")
    assert len(created) == 3
    assert [r["fire_time"] for r in w.runs("long")] == [M0 + k * MINUTE for k in range(4)]
    assert {f["action"] for f in w.fires("long")} == {"started"}


def test_overlap_cancel_other_cancels_the_active_run_then_starts(tmp_path):
    w, s, first, created = _overlap(tmp_path, "cancel_other")
    # the running run is asked to stop; the new fire waits for it, later fires supersede it
    assert created == []
    assert w.store.get_run(first)["cancel_requested"] == "cancelled"
    fires = w.fires("long")
    assert [f["action"] for f in fires] == ["started", "skipped", "skipped", "buffered"]
    assert fires[1]["reason"] == "superseded by a later fire"
    w.end(first, M0 + 3 * MINUTE + 1, state="cancelled")  # its worker saw the request
    started = s.tick(M0 + 3 * MINUTE + 1)
    assert [w.store.get_run(r)["fire_time"] for r in started] == [M0 + 3 * MINUTE]
    # a pending run (not executing anywhere) is cancelled at once and replaced in the same tick
    started2 = s.tick(M0 + 4 * MINUTE)
    assert len(started2) == 1
    assert w.store.get_run(started[0])["state"] == "cancelled"
    assert [r["state"] for r in w.runs("long")] == ["cancelled", "cancelled", "pending"]


# -------------------------------------------------------------------- DST


def _local(y, m, d, hh=0, mm=0):
    return datetime(y, m, d, hh, mm, tzinfo=BERLIN).timestamp()


def _drive(s, start, end, step):
    """Tick at every due time and every `step` seconds in [start, end]."""
    now = start
    while now <= end:
        s.tick(now)
        due = s.next_due()
        now = min(now + step, due) if due is not None and due > now else now + step


def _per_local_day(runs):
    return Counter(datetime.fromtimestamp(r["fire_time"], BERLIN).date().isoformat() for r in runs)


@pytest.mark.parametrize("days", [("2026-03-28", "2026-03-29", "2026-03-30"), ("2026-10-24", "2026-10-25", "2026-10-26")])
def test_fixed_hour_job_runs_once_each_day_across_dst(tmp_path, days):
    w = World(tmp_path, sched("nightly", "30 2 * * *", timezone="Europe/Berlin", overlap="allow"))
    s = w.scheduler()
    first = datetime.fromisoformat(days[0])
    s.reconcile(w.specs(), _local(first.year, first.month, first.day) - 12 * HOUR)
    _drive(s, _local(first.year, first.month, first.day) - 12 * HOUR,
           _local(first.year, first.month, first.day) + 3 * 24 * HOUR, 600)
    runs = w.runs("nightly")
    assert _per_local_day(runs) == {d: 1 for d in days}
    local = [datetime.fromtimestamp(r["fire_time"], BERLIN).strftime("%H:%M%z") for r in runs]
    if days[1] == "2026-03-29":
        assert local == ["02:30+0100", "03:00+0200", "02:30+0200"]  # the skipped 02:30 runs at 03:00
    else:
        assert local == ["02:30+0200", "02:30+0200", "02:30+0100"]  # the repeated 02:30 runs once, first time
    assert {f["action"] for f in w.fires("nightly")} == {"started"}


@pytest.mark.parametrize("day,expected", [((2026, 3, 29), 23), ((2026, 10, 25), 25)])
def test_hourly_job_follows_real_hours_on_dst_days(tmp_path, day, expected):
    w = World(tmp_path, sched("hourly", "0 * * * *", timezone="Europe/Berlin", overlap="allow"))
    s = w.scheduler()
    start = _local(*day) - 1
    s.reconcile(w.specs(), start)
    _drive(s, start, _local(*day) + 24 * HOUR + (HOUR if expected == 25 else -HOUR) - 1, 60)
    runs = w.runs("hourly")
    assert len(runs) == expected
    assert _per_local_day(runs) == {datetime(*day).date().isoformat(): expected}
    gaps = {runs[i + 1]["fire_time"] - runs[i]["fire_time"] for i in range(len(runs) - 1)}
    assert gaps == {HOUR}  # real hours, none twice, none skipped


# ---------------------------------------------------- adding, editing, since


def test_adding_a_schedule_after_its_time_does_not_fire_it(tmp_path):
    ten = _local(2026, 6, 1, 10, 0)
    w = World(tmp_path, sched("ten", "0 10 * * *", timezone="Europe/Berlin"))
    s = w.scheduler()
    s.reconcile(w.specs(), ten + 30 * MINUTE)  # added at 10:30
    _drive(s, ten + 30 * MINUTE, ten + 24 * HOUR - MINUTE, 60)
    assert w.runs() == []
    assert w.fires("ten") == []  # 10:00 is not even a miss: it was before the schedule existed
    # a restart does not change that (since is persisted)
    s2 = w.scheduler(w.open())
    s2.reconcile(w.specs(), ten + 24 * HOUR - 30)
    _drive(s2, ten + 24 * HOUR - 30, ten + 24 * HOUR + 30, 10)
    assert [r["fire_time"] for r in w.runs()] == [ten + 24 * HOUR]


def test_editing_a_cron_starts_nothing_before_the_edit(tmp_path):
    ten = _local(2026, 6, 1, 10, 0)
    w = World(tmp_path, sched("job", "0 11 * * *", timezone="Europe/Berlin", catchup="all"))
    s = w.scheduler()
    s.reconcile(w.specs(), ten - 5 * HOUR)
    _drive(s, ten - 5 * HOUR, ten + 30 * MINUTE, 300)
    w.write(sched("job", "0 10 * * *", timezone="Europe/Berlin", catchup="all"))
    changes = s.reconcile(w.specs(), ten + 30 * MINUTE)  # edited at 10:30: 10:00 is before the edit
    assert changes["changed"] == ["job"]
    _drive(s, ten + 30 * MINUTE, ten + 23 * HOUR, 300)
    assert w.runs() == []
    assert s.next_due() == ten + 24 * HOUR


def test_jitter_delays_the_start_stably(tmp_path):
    from flowmetal.schedule.cron import stable_jitter

    w = World(tmp_path, sched("spread", "0 * * * *", jitter="10m"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    delay = stable_jitter("spread", datetime.fromtimestamp(T0, UTC), 600)
    assert 0 < delay < 600
    assert s.tick(T0) == []
    assert s.next_due() == T0 + delay
    assert s.tick(T0 + delay - 0.5) == []
    created = s.tick(T0 + delay)
    assert len(created) == 1
    run = w.store.get_run(created[0])
    assert run["fire_time"] == T0 and run["created_at"] == T0 + delay
    assert w.fires("spread")[0]["start_at"] == T0 + delay


def test_timeout_is_the_run_deadline(tmp_path):
    w = World(tmp_path, sched("bounded", "0 * * * *", timeout="90s"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    run = w.store.get_run(s.tick(T0 + 2)[0])
    assert run["deadline"] == T0 + 2 + 90


def test_disabled_schedule_records_misses_and_removed_schedule_keeps_history(tmp_path):
    w = World(tmp_path, sched("a", "0 * * * *") + "\n" + sched("b", "0 * * * *", enabled=False))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    s.tick(T0)
    assert [r["schedule"] for r in w.runs()] == ["a"]
    assert tally(w.fires("b")) == {("missed", "disabled"): 1}
    w.write(sched("b", "0 * * * *", enabled=False))
    changes = s.reconcile(w.specs(), T0 + 10)
    assert changes["removed"] == ["a"]
    row = w.store.get_schedule("a")
    assert row["enabled"] == 0 and row["removed_at"] == T0 + 10
    assert len(w.fires("a")) == 1  # history kept
    s.tick(T0 + HOUR)
    assert len(w.runs()) == 1  # a removed schedule does not fire


def test_enabling_starts_nothing_for_the_disabled_period(tmp_path):
    w = World(tmp_path, sched("b", "0 * * * *", enabled=False, catchup="all"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    w.write(sched("b", "0 * * * *", catchup="all"))
    s.reconcile(w.specs(), T0 + 5 * HOUR + 1)
    assert s.tick(T0 + 5 * HOUR + 1) == []
    assert len(s.tick(T0 + 6 * HOUR)) == 1


# ------------------------------------------------------------- exactly once


def test_two_schedulers_on_one_database_fire_each_time_once(tmp_path):
    w = World(tmp_path, sched("fast", "* * * * * *", overlap="allow"))
    a, b = w.scheduler(), w.scheduler(w.open())
    a.reconcile(w.specs(), T0)
    b.reconcile(w.specs(), T0 + 0.3)
    for k in range(1, 301):
        now = T0 + k * 0.5
        (a if k % 2 else b).tick(now)
        (b if k % 2 else a).tick(now + 0.01)
    times = [r["fire_time"] for r in w.runs("fast")]
    assert len(times) == len(set(times)) == 151
    assert sorted(times) == [T0 + k for k in range(0, 151)]  # a fire at the moment of adding counts


def test_a_crash_before_the_run_is_created_leaves_the_fire_unrecorded(tmp_path, monkeypatch):
    """The fire row and its run commit together: a failure between them loses neither."""
    w = World(tmp_path, sched("job", "0 * * * *"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    real = run_ops.create_run

    def crash(*args, **kwargs):
        raise RuntimeError("crash between 'fired' and 'started'")

    monkeypatch.setattr(run_ops, "create_run", crash)
    assert s.tick(T0 + 1) == []
    assert w.fires("job") == [] and w.store.get_schedule("job")["last_fire"] is None
    assert any(kind == "error" for kind, _ in w.events)
    monkeypatch.setattr(run_ops, "create_run", real)
    s2 = w.scheduler(w.open())  # e.g. after a restart
    s2.reconcile(w.specs(), T0 + 2)
    created = s2.tick(T0 + 2)
    assert len(created) == 1 and w.store.get_run(created[0])["fire_time"] == T0
    assert s.tick(T0 + 3) == []  # the first scheduler sees it done


# --------------------------------------------------------------- on_failure


@pytest.mark.parametrize("state,error", [("failed", "Traceback ...\nerror: fail: boom"), ("timed_out", "timed out")])
def test_on_failure_gets_the_documented_arguments_once(tmp_path, state, error):
    w = World(tmp_path, sched("job", "0 * * * *", overlap="allow").replace("run = job", "run = job, on_failure = notify"))
    s, other = w.scheduler(), w.scheduler(w.open())
    s.reconcile(w.specs(), T0 - 1)
    other.reconcile(w.specs(), T0 - 1)
    [run_id] = s.tick(T0)
    w.end(run_id, T0 + 5, state=state, error=error)
    follow = s.tick(T0 + 6, fire=False) + other.tick(T0 + 6, fire=False)
    assert len(follow) == 1
    handler = w.store.get_run(follow[0])
    assert (handler["file"], handler["function"]) == ("jobs.star", "notify")
    assert json.loads(handler["args"]) == {"run_id": run_id, "schedule": "job", "fire_time": "2026-05-01T00:00:00Z",
                                           "state": state, "error": error}
    fire = w.fires("job")[0]
    assert fire["run_state"] == state and fire["followup_run"] == follow[0]
    assert s.tick(T0 + 7, fire=False) == []


def test_no_on_failure_for_completed_or_cancelled_runs(tmp_path):
    w = World(tmp_path, sched("job", "0 * * * *", overlap="allow").replace("run = job", "run = job, on_failure = notify"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    a = s.tick(T0)[0]
    b = s.tick(T0 + HOUR)[0]
    w.end(a, T0 + 10)
    w.end(b, T0 + HOUR + 10, state="cancelled")
    assert s.tick(T0 + HOUR + 20, fire=False) == []
    assert [f["run_state"] for f in w.fires("job")] == ["completed", "cancelled"]


def test_iso_utc():
    assert iso_utc(T0) == "2026-05-01T00:00:00Z"
    assert iso_utc(T0 + 0.25) == "2026-05-01T00:00:00.250000Z"


# ----------------------------------------------------- loading and reloading


def test_a_broken_file_keeps_its_last_good_schedules(tmp_path):
    w = World(tmp_path, sched("job", "0 * * * *"))
    events = []
    d = Daemon(w.store, w.root, [w.root], emit=lambda kind, **f: events.append((kind, f)))
    d.reload(T0 - 1)
    assert set(d.scheduler.entries) == {"job"}
    (w.root / "jobs.star").write_text(JOBS + "\nschedule(name = 'job', cron = '0 * * * *', run = job)\nundefined_name()\n")
    d.reload(T0)
    assert set(d.scheduler.entries) == {"job"}
    assert w.store.get_schedule("job")["removed_at"] is None
    errors = [f for kind, f in events if kind == "load_error"]
    assert len(errors) == 1 and "jobs.star:9:" in errors[0]["message"] and errors[0]["kept"] == ["job"]
    d.reload(T0 + 1)  # unchanged: not reported again
    assert len([1 for kind, _ in events if kind == "load_error"]) == 1
    [run_id] = d.scheduler.tick(T0 + HOUR)  # still firing, with the last good code
    assert "undefined_name" not in w.store.pinned_sources(run_id)["jobs.star"]
    w.end(run_id, T0 + HOUR + 1)
    # a restart while the file is broken: the stored version is the last good one
    d2 = Daemon(w.open(), w.root, [w.root])
    d2.reload(T0 + HOUR + 1)
    assert set(d2.scheduler.entries) == {"job"}
    assert len(d2.scheduler.tick(T0 + 2 * HOUR)) == 1


def test_schedules_outside_the_paths_are_left_alone(tmp_path):
    w = World(tmp_path, sched("job", "0 * * * *"))
    (w.root / "other").mkdir()
    (w.root / "other" / "more.star").write_text(JOBS + "\n" + sched("other", "0 * * * *") + "\n")
    Daemon(w.store, w.root, [w.root]).reload(T0)
    Daemon(w.store, w.root, [w.root / "jobs.star"]).reload(T0 + 1)
    assert w.store.get_schedule("other")["removed_at"] is None
    assert Workspace(w.root, [w.root / "other"]).in_scope("other/more.star")


def test_preview_lists_fire_times_in_the_window():
    from flowmetal.schedule.spec import validate_schedule

    spec, _ = validate_schedule({"name": "n", "cron": "30 2 * * *", "run": "x.star:f", "timezone": "Europe/Berlin"},
                                file="x.star", line=1)
    rows = preview([spec], _local(2026, 3, 28), _local(2026, 3, 31))
    assert [r["local_time"] for r in rows] == ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00",
                                               "2026-03-30T02:30:00+02:00"]
    assert rows[1]["fire_time"] == "2026-03-29T01:00:00Z"


@pytest.mark.parametrize("bad,where", [
    ('load("//missing.star", "x")\n', "bad.star:1:"),  # a load of a file that does not exist
    ("def f(:\n", "bad.star:1:7"),  # a parse error
    ('load("//missing.star", "x")\n' + sched("bad", "0 * * * *") + "\n", "bad.star:1:"),
])
def test_a_file_that_fails_to_load_is_reported_and_skipped(tmp_path, bad, where):
    w = World(tmp_path, sched("job", "0 * * * *"))
    (w.root / "bad.star").write_text(bad)
    loaded = Workspace(w.root, [w.root]).load()
    assert [s.name for s in loaded.specs] == ["job"]
    assert list(loaded.broken) == ["bad.star"]
    rendered = "\n".join(d.render() for d in loaded.broken["bad.star"])
    assert where in rendered, rendered
    d = Daemon(w.store, w.root, [w.root])
    d.reload(T0 - 1)
    assert set(d.scheduler.entries) == {"job"}
    assert len(d.scheduler.tick(T0 + HOUR)) == 1


def test_a_broken_load_keeps_the_files_last_good_schedules_across_a_restart(tmp_path):
    w = World(tmp_path, sched("job", "0 * * * *"))
    (w.root / "other.star").write_text(JOBS + "\n" + sched("other", "30 * * * *") + "\n")
    Daemon(w.store, w.root, [w.root]).reload(T0 - 1)
    (w.root / "other.star").write_text('load("//gone.star", "x")\n' + JOBS + "\n" + sched("other", "30 * * * *") + "\n")
    events = []
    d = Daemon(w.open(), w.root, [w.root], emit=lambda kind, **f: events.append((kind, f)))
    d.reload(T0)
    assert set(d.scheduler.entries) == {"job", "other"}
    [(kind, err)] = [e for e in events if e[0] == "load_error"]
    assert err["file"] == "other.star" and err["kept"] == ["other"] and "other.star:1:" in err["message"]
    assert "gone.star" in err["message"]
    assert [w.store.get_run(r)["schedule"] for r in d.scheduler.tick(T0)] == ["job"]
    created = d.scheduler.tick(T0 + 1800)  # the broken file's schedule fires with its last good code
    assert [w.store.get_run(r)["schedule"] for r in created] == ["other"]
    assert "gone.star" not in w.store.pinned_sources(created[0])["other.star"]


def test_a_file_read_as_empty_mid_write_keeps_its_schedules(tmp_path):
    """`printf ... > jobs.star` truncates first: a load in between reads an empty file."""
    w = World(tmp_path, sched("job", "0 * * * *"))
    events = []
    d = Daemon(w.store, w.root, [w.root], emit=lambda kind, **f: events.append((kind, f)))
    d.reload(T0 - 1)
    (w.root / "jobs.star").write_text("")
    changes = d.reload(T0)
    assert changes["removed"] == [] and set(d.scheduler.entries) == {"job"}
    row = w.store.get_schedule("job")
    assert row["removed_at"] is None and row["since"] == T0 - 1  # not reset: no fire is lost
    assert [f["file"] for k, f in events if k == "load_error"] == ["jobs.star"]
    assert len(d.scheduler.tick(T0 + HOUR)) == 1
    # after a restart, still kept (from the database), until the file declares something again
    d2 = Daemon(w.open(), w.root, [w.root])
    d2.reload(T0 + HOUR + 1)
    assert set(d2.scheduler.entries) == {"job"}
    w.write(sched("job", "0 * * * *"))
    d2.reload(T0 + HOUR + 2)
    assert w.store.get_schedule("job")["since"] == T0 - 1
    # deleting the file is how its schedules are removed
    (w.root / "jobs.star").unlink()
    (w.root / "keep.star").write_text("X = 1\n")
    assert d2.reload(T0 + HOUR + 3)["removed"] == ["job"]


# ------------------------------------------- pause, resume, trigger, backfill


def test_pause_records_fires_as_paused_survives_an_edit_and_resume_catches_nothing_up(tmp_path):
    from flowmetal.schedule.commands import pause_schedule, resume_schedule

    w = World(tmp_path, sched("hourly", "0 * * * *", catchup="all"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    assert pause_schedule(w.store, "hourly", T0 - 1)["changed"] is True
    assert pause_schedule(w.store, "hourly", T0 - 1)["changed"] is False
    assert s.tick(T0) == [] and s.tick(T0 + HOUR) == []
    assert tally(w.fires("hourly")) == {("missed", "paused"): 2}
    w.write(sched("hourly", "30 * * * *", catchup="all"))  # an edit (new cron) does not resume it
    s.reconcile(w.specs(), T0 + HOUR + 1)
    assert s.tick(T0 + HOUR + 1800) == []
    assert tally(w.fires("hourly"))[("missed", "paused")] == 3
    # down for three hours while paused, then resumed: nothing is caught up, the next fire starts
    r = resume_schedule(w.store, "hourly", T0 + 5 * HOUR)
    assert r["changed"] is True and r["status"] == "active"
    s2 = w.scheduler(w.open())
    s2.reconcile(w.specs(), T0 + 5 * HOUR)
    assert s2.tick(T0 + 5 * HOUR + 1) == []
    assert len(s2.tick(T0 + 5 * HOUR + 1800)) == 1
    assert tally(w.fires("hourly"))[("started", None)] == 1


def test_pause_drops_buffered_fires_and_refuses_a_schedule_disabled_in_its_file(tmp_path):
    from flowmetal.errors import UserError
    from flowmetal.schedule.commands import pause_schedule

    w = World(tmp_path, sched("b", "0 * * * *", overlap="buffer_one") + "\n" + sched("off", "0 * * * *", enabled=False))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    [first] = s.tick(T0)
    w.running(first)
    s.tick(T0 + HOUR)
    assert [f["action"] for f in w.fires("b")] == ["started", "buffered"]
    pause_schedule(w.store, "b", T0 + HOUR + 1)
    assert [(f["action"], f["reason"]) for f in w.fires("b")][1] == ("skipped", "schedule paused")
    with pytest.raises(UserError, match="disabled in jobs.star:.*nothing to pause"):
        pause_schedule(w.store, "off", T0)
    with pytest.raises(UserError, match="no schedule named 'nope'"):
        pause_schedule(w.store, "nope", T0)


def test_trigger_starts_a_manual_fire_even_when_paused_and_its_outcome_is_followed(tmp_path):
    from flowmetal.schedule.commands import pause_schedule, trigger_schedule

    w = World(tmp_path, sched("n", "0 0 1 1 *", on_failure="notify") .replace('on_failure = "notify"', "on_failure = notify"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0)
    pause_schedule(w.store, "n", T0)
    r = trigger_schedule(w.store, w.root, "n", T0 + 10)
    run = w.store.get_run(r["run_id"])
    assert run["schedule"] == "n" and run["fire_time"] == T0 + 10 and run["state"] == "pending"
    assert r["fire_time"] == "2026-05-01T00:00:10Z"
    [fire] = w.fires("n")
    assert (fire["action"], fire["reason"], fire["run_id"]) == ("started", "manual", r["run_id"])
    assert "def job" in w.store.pinned_sources(r["run_id"])["jobs.star"]
    w.end(r["run_id"], T0 + 11, state="failed", error="boom")
    created = s.tick(T0 + 12, fire=False)  # its failure starts on_failure like a scheduled fire's
    assert len(created) == 1 and json.loads(w.store.get_run(created[0])["args"])["run_id"] == r["run_id"]


def test_backfill_starts_each_fire_time_in_the_range_once(tmp_path):
    from flowmetal.errors import UserError
    from flowmetal.schedule.commands import backfill_schedule

    w = World(tmp_path, sched("h", "0 * * * *", catchup="none"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    [on_time] = s.tick(T0)
    s.tick(T0 + 3 * HOUR + 1800)  # 1h, 2h, 3h missed (catchup none)
    assert tally(w.fires("h")) == {("started", None): 1, ("missed", "catchup=none"): 3}
    now = T0 + 4 * HOUR
    dry = backfill_schedule(w.store, w.root, "h", T0 - 2 * HOUR, T0 + 3 * HOUR, now, dry_run=True)
    assert [r["action"] for r in dry] == ["would start", "would start", "left", "would start", "would start"]
    assert len(w.runs()) == 1  # a dry run writes nothing
    rows = backfill_schedule(w.store, w.root, "h", T0 - 2 * HOUR, T0 + 3 * HOUR, now)
    assert [r["action"] for r in rows] == ["started", "started", "left", "started", "started"]
    assert rows[2]["run_id"] == on_time
    assert rows[3]["reason"] is None and "was missed: catchup=none" in w.fires("h")[3]["reason"]
    assert sorted(r["fire_time"] for r in w.runs()) == [T0 + k * HOUR for k in (-2, -1, 0, 1, 2)]
    again = backfill_schedule(w.store, w.root, "h", T0 - 2 * HOUR, T0 + 3 * HOUR, now)
    assert {r["action"] for r in again} == {"left"} and len(w.runs()) == 5  # never twice
    with pytest.raises(UserError, match="in the future"):
        backfill_schedule(w.store, w.root, "h", T0, now + HOUR, now)
    with pytest.raises(UserError, match="later than --from"):
        backfill_schedule(w.store, w.root, "h", T0, T0, now)


def test_backfill_inside_a_summary_of_missed_fires_keeps_the_rest_recorded(tmp_path):
    from flowmetal.schedule.commands import backfill_schedule

    w = World(tmp_path, sched("m", "* * * * *", catchup="none"))
    s = w.scheduler()
    s.reconcile(w.specs(), T0 - 1)
    s.tick(T0 + 2000 * 60 + 30)  # 2001 fire times missed: more than are listed one by one
    before = tally(w.fires("m"))
    summary = [f for f in w.fires("m") if f["through"] is not None]
    assert len(summary) == 1
    first = summary[0]["nominal"]
    rows = backfill_schedule(w.store, w.root, "m", first, first + 180, T0 + 2001 * 60)
    assert [r["action"] for r in rows] == ["started"] * 3
    fires = {f["nominal"]: f for f in w.fires("m")}
    assert fires[first + 180]["action"] == "missed" and fires[first + 180]["through"] == summary[0]["through"]
    assert sum(before.values()) + 3 == len(fires)
