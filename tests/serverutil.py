"""A real `flowmetal serve` subprocess on 127.0.0.1 (a free port) for the server tests."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx


class Served:
    def __init__(self, root, db, *args, env=None):
        self.root, self.db = Path(root), Path(db)
        self.env = {**os.environ, "FLOWMETAL_DB": str(db), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.err_path = self.root.parent / f"serve-{time.monotonic_ns()}.err"
        self.args = args
        self.proc = None
        self.url = None

    def cli(self, *args, timeout=60, input=None):
        return subprocess.run([sys.executable, "-m", "flowmetal", *map(str, args)], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout, input=input)

    def token(self, name, scope):
        r = self.cli("token", "create", name, "--scope", scope)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def start(self, timeout=20):
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flowmetal", "serve", "--listen", "127.0.0.1:0", *map(str, self.args)],
                cwd=self.root, env=self.env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        end = time.time() + timeout
        while time.time() < end:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.err())
            if m:
                self.url = m.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"flowmetal serve did not start: {self.err()}")

    def err(self):
        return self.err_path.read_text()

    def client(self, token=None, **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def rows(self, sql, params=()):
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def workspace(tmp_path, files):
    root = tmp_path / "ws"
    root.mkdir()
    (root / ".flowmetal").mkdir()
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root, root / ".flowmetal" / "flowmetal.db"
