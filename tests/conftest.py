"""Shared fixtures: a fresh workspace, its database, and the CLI as a user runs it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


class Flowmetal:
    """Runs `python -m flowmetal` in a workspace against one database."""

    def __init__(self, root, db):
        self.root, self.db = Path(root), Path(db)
        self.env = {**os.environ, "FLOWMETAL_DB": str(db), "PYTHONUNBUFFERED": "1"}
        self.procs = []

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

    def store(self):
        from flowmetal.store.sqlite import SqliteStore

        return SqliteStore(self.db)

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


@pytest.fixture
def fm(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / ".flowmetal").mkdir()
    f = Flowmetal(root, root / ".flowmetal" / "flowmetal.db")
    yield f
    f.kill_all()


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
