"""Shared bench helpers: a scratch workspace, in-process runs, and the raw SQLite baseline.

Every import of Flowmetal's internals made by the bench scripts is here (the ones a
script needs rarely are behind a function, imported when called), so a change of the
engine's API is fixed in this one file.
"""

import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "python"))

from flowmetal.clock import SYSTEM  # noqa: E402
from flowmetal.engine.runner import Execution  # noqa: E402
from flowmetal.engine.runs import create_run, load_target, send_signal  # noqa: E402
from flowmetal.engine.worker import Worker, make_owner  # noqa: E402
from flowmetal.store.sqlite import SqliteStore  # noqa: E402

SYNCS = ("normal", "full")  # SQLite's `synchronous` settings the store offers (FLOWMETAL_SYNC=full)
SYNC_CODES = {"normal": 1, "full": 2}  # what `PRAGMA synchronous` answers


def check_sync(sync):
    if sync not in SYNCS:
        raise SystemExit(f"synchronous must be one of {', '.join(SYNCS)}, got {sync!r}")
    return sync


def pragmas(conn):
    """(journal_mode, synchronous) of an open sqlite3 connection, e.g. ("wal", 2)."""
    return conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0]


class Bench:
    """A scratch workspace with its own store; `sync` is the store's synchronous setting, as
    FLOWMETAL_SYNC sets it for the CLI (the store keeps WAL either way)."""

    def __init__(self, sync="normal"):
        self.sync = check_sync(sync)
        self.dir = Path(tempfile.mkdtemp(prefix="flowmetal-bench-"))
        (self.dir / ".flowmetal").mkdir()
        self.store = SqliteStore(self.dir / ".flowmetal" / "bench.db", synchronous_full=sync == "full")
        self.owner = make_owner()
        self._worker = None

    def close(self):
        """Close the store and delete the workspace."""
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self):
        """The environment a `flowmetal` CLI subprocess needs to use this bench's store."""
        env = {**os.environ, "FLOWMETAL_DB": str(self.store.path)}
        if self.sync == "full":
            env["FLOWMETAL_SYNC"] = "full"
        else:
            env.pop("FLOWMETAL_SYNC", None)
        return env

    def pragmas(self):
        """(journal_mode, synchronous) of the store's own connection in this thread."""
        return pragmas(self.store.conn)

    def workflow(self, name, text):
        path = self.dir / name
        path.write_text(text)
        return path

    def start(self, path, function="main", args=None):
        name, texts = load_target(self.dir, path, function)
        return create_run(self.store, SYSTEM, file=name, function=function, args=args or {}, texts=texts,
                          root_dir=str(self.dir))

    def start_many(self, path, args_list, function="main"):
        """Queue one pending run per args dict, in one transaction (not timed by the benches)."""
        name, texts = load_target(self.dir, path, function)
        with self.store.transaction():
            return [create_run(self.store, SYSTEM, file=name, function=function, args=args, texts=texts,
                               root_dir=str(self.dir)) for args in args_list]

    def claim(self, run_id):
        self.store.wake(run_id)
        run = self.store.claim(self.owner, 60, run_id=run_id)
        assert run is not None, "run not claimable"
        return run

    def execute(self, run_id):
        """Claim the run and execute it once, here; returns (state, seconds)."""
        run = self.claim(run_id)
        t0 = time.perf_counter()
        state = Execution(self.store, run, self.owner, SYSTEM).execute()
        return state, time.perf_counter() - t0

    # --- runs as a worker sees them -----------------------------------------

    def get_run(self, run_id):
        return self.store.get_run(run_id)

    def children(self, run_id, state=None):
        """Ids of the run's child runs (in `state` if given)."""
        return [r["id"] for r in self.store.list_runs(status=state, parent_id=run_id, limit=1_000_000)]

    def states(self):
        """How many runs are in each state: {"completed": 1000, ...}."""
        return dict(self.store.x("SELECT state, count(*) FROM runs GROUP BY state").fetchall())

    def last_ended(self):
        """The latest ended_at of any run (seconds since the epoch), or None."""
        return self.store.x("SELECT max(ended_at) FROM runs").fetchone()[0]

    def signal_pending(self, run_id, name):
        """Whether a signal sent to the run is still unconsumed."""
        return self.store.has_signal(run_id, name)

    def signal(self, run_id, name, payload="null"):
        """What `flowmetal signal` does, in-process; wakes this bench's worker if one runs."""
        send_signal(self.store, SYSTEM, run_id, name, payload)
        if self._worker is not None:
            self._worker.wakeup.set()

    def worker(self, concurrency=4, warm=None):
        """A Worker on this bench's store, looping in a thread until the returned stop() is called.
        `warm`: how many waiting runs it keeps parked (engine/warm.py; None: FLOWMETAL_WARM or the
        default, 0: off)."""
        worker = Worker(self.store, SYSTEM, concurrency=concurrency, warm=warm)
        self.last_worker = worker
        done = threading.Event()
        thread = threading.Thread(target=worker.run_forever, kwargs={"until": done.is_set}, daemon=True)
        self._worker = worker
        thread.start()

        def stop():
            done.set()
            worker.wakeup.set()
            thread.join(timeout=30)
            worker.shutdown(grace=5.0)
            self._worker = None
        return stop

    def wait_for_states(self, want, timeout, poll=0.02):
        """Poll until every state in `want` ({"completed": n}) has at least that many runs;
        returns the counts; raises SystemExit with the counts seen after `timeout` seconds."""
        end = time.monotonic() + timeout
        while True:
            seen = self.states()
            if all(seen.get(s, 0) >= n for s, n in want.items()):
                return seen
            if time.monotonic() > end:
                raise SystemExit(f"bench: after {timeout:.0f}s the runs are {seen}, waiting for {want}")
            time.sleep(poll)


class RawCommits:
    """The baseline: one-row INSERT commits with the store's pragmas (WAL, synchronous NORMAL
    or FULL), on a database of its own that stays open, so it can be timed in blocks between
    other work."""

    def __init__(self, row=("now", "1795914454.59"), sync="normal"):
        self.sync = check_sync(sync)
        path = os.path.join(tempfile.mkdtemp(prefix="flowmetal-raw-"), "raw.db")
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {sync.upper()}")
        self.conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
        self.row = row

    def pragmas(self):
        return pragmas(self.conn)

    def seconds_per_commit(self, n):
        conn, row = self.conn, self.row
        t0 = time.perf_counter()
        for _ in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (a, b) VALUES (?, ?)", row)
            conn.execute("COMMIT")
        return (time.perf_counter() - t0) / n


def raw_commits_per_second(seconds=1.0, row=("now", "1795914454.59"), sync="normal"):
    """Raw commits per second over about `seconds`."""
    raw, n, spent = RawCommits(row, sync=sync), 0, 0.0
    while spent < seconds:
        spent += raw.seconds_per_commit(200) * 200
        n += 200
    return n / spent


def journaled_now_seconds(entry):
    """The time a journaled now() returned, in seconds, from its journal entry (the journal
    holds integer nanoseconds; the prelude's now() divides them)."""
    return json.loads(entry["result"]) / 1e9


def median_range(values):
    """"median (min-max)" of a list of numbers, for the tables."""
    return statistics.median(values), min(values), max(values)


# --- internals only some scripts need, imported when asked for ------------------

def effect_modules():
    """(EffectContext, {"sh": module, "http": module}): the effects without the gate (bench_effects)."""
    from flowmetal.engine.effects import EffectContext, http, sh
    return EffectContext, {"sh": sh, "http": http}


def daemon_class():
    """The scheduler daemon class (bench_scheduler)."""
    from flowmetal.schedule.daemon import Daemon
    return Daemon


def new_run_in(store, file, function, args, texts):
    """A pending run on any store, from texts in memory (bench_effects)."""
    return create_run(store, SYSTEM, file=file, function=function, args=args, texts=texts)


def execute_claimed(store, run_id, owner=None):
    """Claim a pending run on `store` and execute it once; returns (state, seconds)."""
    owner = owner or make_owner()
    run = store.claim(owner, 3600, run_id=run_id)
    assert run is not None, "run not claimable"
    t0 = time.perf_counter()
    state = Execution(store, run, owner, SYSTEM).execute()
    return state, time.perf_counter() - t0
