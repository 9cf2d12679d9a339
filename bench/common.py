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

    def execute(self, run_id):
        """Claim the run and execute it once, here; returns (state, seconds)."""
        now = SYSTEM.now()
        self.store.update_run(run_id, wake_at=now)
        run = self.store.claim_run(self.owner, now, now + 60, run_id=run_id)
        assert run is not None, "run not claimable"
        t0 = time.perf_counter()
        state = Execution(self.store, run, self.owner, SYSTEM).execute()
        return state, time.perf_counter() - t0


def raw_commits_per_second(seconds=1.0):
    """Baseline: one-row INSERT commits/s with the store's pragmas (WAL, synchronous NORMAL)."""
    path = os.path.join(tempfile.mkdtemp(prefix="flowmetal-raw-"), "raw.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    n, end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (a, b) VALUES (?, ?)", ("now", "1795914454.59"))
        conn.execute("COMMIT")
        n += 1
    return n / (time.perf_counter() - t0)
