"""A throwaway PostgreSQL cluster for the tests: initdb and pg_ctl from Debian's
`postgresql` package, listening on 127.0.0.1 and a free port, in a temporary
directory, stopped at the end. As root, the cluster runs as the `postgres` user
(initdb refuses root). `tools/install-system-deps.sh` installs the package."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self):
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries not found: run tools/install-system-deps.sh")
        self.dir = Path(tempfile.mkdtemp(prefix="flowmetal-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = "flowmetal"
        self._as = []
        if os.geteuid() == 0:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args):
        subprocess.run([*self._as, *map(str, args)], check=True, capture_output=True, text=True)

    def start(self):
        self._run(self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", self.user, "--no-sync")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c max_connections=200")
        self._run(self.bin / "pg_ctl", "-D", self.data, "-o", opts, "-l", self.dir / "log", "-w", "start")
        return self

    def url(self, dbname="postgres"):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name):
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self):
        try:
            self._run(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


if __name__ == "__main__":
    t0 = time.time()
    c = Cluster().start()
    print("started", c.url(), round(time.time() - t0, 2), "s")
    print(c.create_database("x"))
    c.stop()
