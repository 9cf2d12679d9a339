"""Shared bench helpers: a scratch workspace, in-process runs, and the raw SQLite baseline."""

import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "python"))

from flowmetal.clock import SYSTEM  # noqa: E402
from flowmetal.engine.runner import Execution  # noqa: E402
from flowmetal.engine.runs import create_run, load_target  # noqa: E402
from flowmetal.engine.worker import make_owner  # noqa: E402
from flowmetal.store.sqlite import SqliteStore  # noqa: E402


class Bench:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="flowmetal-bench-"))
        (self.dir / ".flowmetal").mkdir()
        self.store = SqliteStore(self.dir / ".flowmetal" / "bench.db")
        self.owner = make_owner()

    def workflow(self, name, text):
        path = self.dir / name
        path.write_text(text)
        return path

    def start(self, path, function="main", args=None):
        name, texts = load_target(self.dir, path, function)
        return create_run(self.store, SYSTEM, file=name, function=function, args=args or {}, texts=texts,
                          root_dir=str(self.dir))

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


class RawCommits:
    """The baseline: one-row INSERT commits with the store's pragmas (WAL, synchronous NORMAL),
    on a database of its own that stays open, so it can be timed in blocks between other work."""

    def __init__(self, row=("now", "1795914454.59")):
        path = os.path.join(tempfile.mkdtemp(prefix="flowmetal-raw-"), "raw.db")
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
        self.row = row

    def seconds_per_commit(self, n):
        conn, row = self.conn, self.row
        t0 = time.perf_counter()
        for _ in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (a, b) VALUES (?, ?)", row)
            conn.execute("COMMIT")
        return (time.perf_counter() - t0) / n


def raw_commits_per_second(seconds=1.0, row=("now", "1795914454.59")):
    """Raw commits per second over about `seconds`."""
    raw, n, spent = RawCommits(row), 0, 0.0
    while spent < seconds:
        spent += raw.seconds_per_commit(200) * 200
        n += 200
    return n / spent
