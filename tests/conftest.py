"""Shared fixtures: a fresh workspace, its database, and the CLI as a user runs it.

`fm` runs on SQLite; a test marked `@both_stores` runs twice, on SQLite and on PostgreSQL
(`fm[postgres]`: FLOWMETAL_DB is a fresh database on one throwaway cluster per session,
tests/pgcluster.py; marked `postgres`, so `-m "not postgres"` skips it).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def _is_url(db):
    return str(db).startswith(("postgresql://", "postgres://"))


class Flowmetal:
    """Runs `python -m flowmetal` in a workspace against one database: a SQLite file, or a
    PostgreSQL URL (then `self.url` is set and `self.db` is that URL)."""

    def __init__(self, root, db):
        self.root = Path(root)
        self.url = str(db) if _is_url(db) else None
        self.db = self.url or Path(db)
        self.env = {**os.environ, "FLOWMETAL_DB": str(db), "PYTHONUNBUFFERED": "1"}
        self.procs = []
        self._pg_store = None

    def __call__(self, *args, timeout=60, input=None, env=None, cwd=None):
        return subprocess.run(
            [sys.executable, "-m", "flowmetal", *map(str, args)],
            cwd=cwd or self.root, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=timeout, input=input,
        )

    def spawn(self, *args, env=None, cwd=None):
        """Start the CLI in the background (its own process group); returns the Popen.

        Its stdout and stderr go to files (a pipe nobody reads would block it):
        `proc.out()` and `proc.err()` read them.
        """
        n = len(self.procs)
        out_path = self.root.parent / f"proc{n}.out"
        err_path = self.root.parent / f"proc{n}.err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "flowmetal", *map(str, args)],
                cwd=cwd or self.root, env={**self.env, **(env or {})}, stdout=out,
                stderr=err, text=True, start_new_session=True,
            )
        proc.out = out_path.read_text
        proc.err = err_path.read_text
        self.procs.append(proc)
        return proc

    def write(self, name, text):
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    @property
    def kind(self):
        return "postgres" if self.url else "sqlite"

    def store(self):
        """The test's own view of the database. On PostgreSQL one store is kept for the whole test
        (opening one per poll would cost a connection each time): its close() does nothing until
        `close_stores()` at the end of the test."""
        if self.url is None:
            from flowmetal.store.sqlite import SqliteStore

            return SqliteStore(self.db)
        if self._pg_store is None:
            from flowmetal.store.postgres import PostgresStore

            st = PostgresStore(self.url, pool_size=2)
            st.real_close, st.close = st.close, lambda: None
            self._pg_store = st
        return self._pg_store

    def close_stores(self):
        if self._pg_store is not None:
            self._pg_store.real_close()
            self._pg_store = None

    def run_row(self, run_id):
        st = self.store()
        try:
            return st.find_run(run_id)
        finally:
            st.close()

    def journal(self, run_id):
        st = self.store()
        try:
            return st.journal(st.find_run(run_id)["id"])
        finally:
            st.close()

    def wait_state(self, run_id, states, timeout=20):
        states = (states,) if isinstance(states, str) else states
        end = time.time() + timeout
        while time.time() < end:
            row = self.run_row(run_id)
            if row["state"] in states:
                return row
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} still {self.run_row(run_id)['state']}, wanted {states}")

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


def pytest_configure(config):
    # (also in pyproject.toml; registered here too for runners that do not read it)
    config.addinivalue_line("markers", "postgres: runs against a throwaway PostgreSQL cluster (tests/pgcluster.py)")


STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# A test that makes sense on both stores: `@both_stores` before `def test_x(fm): ...`.
both_stores = pytest.mark.parametrize("fm", STORES, indirect=True)


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the whole session; tests take a fresh database on it."""
    from pgcluster import Cluster

    c = Cluster().start()
    yield c
    c.stop()


@pytest.fixture
def pg(pg_cluster, tmp_path, request):
    """The CLI (a Flowmetal) with FLOWMETAL_DB a fresh database on the session's cluster."""
    root = tmp_path / "ws"
    root.mkdir()
    f = Flowmetal(root, fresh_database(pg_cluster, request))
    yield f
    f.kill_all()
    f.close_stores()


def fresh_database(cluster, request):
    """A new, empty database on `cluster`, named after the test (and unique in the session)."""
    fresh_database.n += 1
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    return cluster.create_database(f"t{fresh_database.n}_{name}")


fresh_database.n = 0


@pytest.fixture
def fm(tmp_path, request):
    root = tmp_path / "ws"
    root.mkdir()
    (root / ".flowmetal").mkdir()
    if getattr(request, "param", "sqlite") == "postgres":
        db = fresh_database(request.getfixturevalue("pg_cluster"), request)
    else:
        db = root / ".flowmetal" / "flowmetal.db"
    f = Flowmetal(root, db)
    yield f
    f.kill_all()
    f.close_stores()


def run_id_of(proc_stderr):
    for line in proc_stderr.splitlines():
        if line.startswith("run "):
            return line.split()[1]
    raise AssertionError(f"no run id in: {proc_stderr!r}")


def wait_for(condition, timeout=20, what="condition"):
    """Poll `condition` until it returns something true, and return that."""
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def read_run_id(proc, timeout=20):
    """Read the 'run ID' line from a spawned `flowmetal run`'s stderr."""
    end = time.time() + timeout
    while time.time() < end:
        for line in proc.err().splitlines():
            if line.startswith("run "):
                return line.split()[1]
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"no run id printed: {proc.err()!r}")
