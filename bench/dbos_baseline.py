"""DBOS Transact steps per second: the baseline the durability bench compares Flowmetal with.

    pip install -r bench/requirements.txt     # DBOS, pinned; not a Flowmetal dependency
    python3 bench/dbos_baseline.py [--sync normal|full|both] [--steps 400] [--sh-steps 50] [--blocks 5]
                                   [--journal wal|delete] [--url URL]

Two DBOS workflows, the analogues of Flowmetal's journaled effects:

- `now_loop(n)`: n steps, each returning time.time() (Flowmetal's `now()`);
- `sh_loop(n)`: n steps, each running subprocess.run(["true"]) (Flowmetal's `sh("true")`).

DBOS keeps one global instance per process (DBOS(config), DBOS.launch()), bound
to one system database. So each measured configuration lives in a process of its
own, started with `--serve`: it launches DBOS once, then answers lines on stdin
("now 400", "sh 50") with the seconds one workflow of that many steps took. A
parent (bench_durability.py, or this script's own main) keeps one such process
per `synchronous` setting open and asks for blocks between its other work, so
DBOS's figures are interleaved with Flowmetal's.

On SQLite, DBOS 3.4 leaves SQLite's defaults (rollback journal, synchronous
FULL: about 4 fsyncs per step). To compare at one fsync per step, the database
is switched to WAL before DBOS opens it (journal_mode persists in the file), and
every connection DBOS's engine opens gets `PRAGMA synchronous = NORMAL|FULL`
from a SQLAlchemy pool "connect" listener. The server reports the journal mode
read back from the file and the synchronous value read back on every connection,
and the parent refuses figures measured at another setting. `--journal delete`
keeps DBOS's default journal, for reference.

`--url postgresql://...` runs the same workflows against a PostgreSQL system
database (issue 15); there `--sync normal` sets synchronous_commit = off and
`full` sets it on.

Steps per second are marginal: n / (time of an n-step workflow - time of a 0-step
workflow, the median of the blocks), the same way bench_durability.py counts
Flowmetal's effects, so the fixed cost of starting and ending a workflow is not
counted on either side.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

PROTOCOL = "@@"  # the server's answers start with this; DBOS's own output is ignored
KINDS = ("now", "sh", "empty")
INSTALL_HINT = "DBOS Transact is not installed: pip install -r bench/requirements.txt"


class DbosUnavailable(Exception):
    pass


# --- the server: one DBOS instance in this process --------------------------------

def _serve(url, sync, journal):
    try:
        import sqlalchemy
        from dbos import DBOS
        from sqlalchemy.pool import Pool
    except ImportError:
        print(f"{PROTOCOL} error {INSTALL_HINT}", flush=True)
        return 3
    sqlite = url.startswith("sqlite")
    seen = set()

    @sqlalchemy.event.listens_for(Pool, "connect")
    def _pragmas(dbapi_conn, record):
        cur = dbapi_conn.cursor()
        if sqlite:
            cur.execute(f"PRAGMA synchronous = {sync.upper()}")
            cur.execute("PRAGMA synchronous")
        else:
            cur.execute(f"SET synchronous_commit = {'on' if sync == 'full' else 'off'}")
            cur.execute("SHOW synchronous_commit")
        seen.add(str(cur.fetchone()[0]))
        cur.close()
        dbapi_conn.commit()  # on PostgreSQL the SET ran in a transaction that must not be rolled back

    if sqlite:
        path = url.split("///", 1)[1]
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA journal_mode = {journal.upper()}")
        conn.close()

    @DBOS.step()
    def now_step():
        return time.time()

    @DBOS.step()
    def sh_step():
        return subprocess.run(["true"], check=True).returncode

    @DBOS.workflow()
    def now_loop(n):
        for _ in range(n):
            now_step()
        return n

    @DBOS.workflow()
    def sh_loop(n):
        for _ in range(n):
            sh_step()
        return n

    loops = {"now": now_loop, "sh": sh_loop, "empty": lambda n: now_loop(0)}
    DBOS(config={"name": "flowmetal-bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    now_loop(1)  # warm: the first workflow opens connections and compiles statements
    sh_loop(1)
    mode = None
    if sqlite:
        conn = sqlite3.connect(path)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]  # read from the file: WAL persists there
        conn.close()
    import dbos as dbos_module
    print(f"{PROTOCOL} ready " + json.dumps({"journal_mode": mode, "synchronous": sorted(seen),
                                             "version": getattr(dbos_module, "__version__", None)
                                             or _dist_version()}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            break
        kind, n = parts[0], int(parts[1]) if len(parts) > 1 else 0
        t0 = time.perf_counter()
        done = loops[kind](n)
        secs = time.perf_counter() - t0
        assert done == n, (kind, done, n)
        print(f"{PROTOCOL} {secs!r} " + json.dumps(sorted(seen)), flush=True)
    DBOS.destroy()
    return 0


def _dist_version():
    from importlib.metadata import version
    return version("dbos")


# --- the client: a server process per configuration -------------------------------

class DbosProcess:
    """One DBOS server process on a database of its own (SQLite in a temporary directory
    unless `url` is given). `seconds(kind, n)` times one workflow of n steps there."""

    def __init__(self, sync="normal", url=None, journal="wal"):
        self.sync, self.journal = sync, journal
        self.tmp = None
        if url is None:
            self.tmp = tempfile.mkdtemp(prefix="flowmetal-bench-dbos-")
            url = f"sqlite:///{os.path.join(self.tmp, 'dbos.sqlite')}"
        self.url = url
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", "--url", url, "--sync", sync,
             "--journal", journal],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
            cwd=self.tmp or None)
        self.info = json.loads(self._answer("ready"))
        self._check(self.info["synchronous"])
        if url.startswith("sqlite") and self.info["journal_mode"] != journal:
            self.close()
            raise SystemExit(f"DBOS database is in journal mode {self.info['journal_mode']}, wanted {journal}")

    def _answer(self, expect=None):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read()
                raise DbosUnavailable(f"DBOS server ended: {err.strip().splitlines()[-1] if err.strip() else '?'}")
            if not line.startswith(PROTOCOL + " "):
                continue
            word, _, rest = line[len(PROTOCOL) + 1:].strip().partition(" ")
            if word == "error":
                raise DbosUnavailable(rest)
            if expect is not None and word != expect:
                raise DbosUnavailable(f"DBOS server said {line.strip()!r}")
            return rest if expect is not None else line[len(PROTOCOL) + 1:].strip()

    def _check(self, seen):
        want = {"normal": {"1", "off"}, "full": {"2", "on"}}[self.sync]
        if not seen or not set(seen) <= want:
            self.close()
            raise SystemExit(f"DBOS connections run at synchronous {seen}, wanted {self.sync}")

    def describe(self):
        where = "PostgreSQL" if not self.url.startswith("sqlite") else f"SQLite journal_mode={self.info['journal_mode']}"
        return f"DBOS {self.info['version']}, {where}, synchronous={'/'.join(self.info['synchronous'])}"

    def seconds(self, kind, n):
        assert kind in KINDS
        self.proc.stdin.write(f"{kind} {n}\n")
        self.proc.stdin.flush()
        secs, _, seen = self._answer().partition(" ")
        self._check(json.loads(seen))
        return float(secs)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def marginal_rates(timed_pairs):
    """[(seconds of n steps, seconds of 0 steps, n), ...] -> steps/s per block, with the
    empty workflow's cost taken as the median over the blocks."""
    fixed = statistics.median(empty for _, empty, _ in timed_pairs)
    return [n / max(secs - fixed, 1e-9) for secs, _, n in timed_pairs]


def steps_per_second(kind, sync="normal", n=400, blocks=5, url=None, journal="wal"):
    """Median DBOS steps/s of `kind` ("now" or "sh") over `blocks` workflows of n steps."""
    with DbosProcess(sync, url=url, journal=journal) as dbos:
        pairs = [(dbos.seconds(kind, n), dbos.seconds("empty", 0), n) for _ in range(blocks)]
    return statistics.median(marginal_rates(pairs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sync", choices=("normal", "full", "both"), default="both")
    ap.add_argument("--steps", type=int, default=400, help="steps per now() block (default 400)")
    ap.add_argument("--sh-steps", type=int, default=50, help="steps per sh block (default 50)")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--journal", choices=("wal", "delete"), default="wal",
                    help="SQLite journal mode of DBOS's database (default wal; delete is DBOS's own default)")
    ap.add_argument("--url", help="system database URL (default: a SQLite file in a temporary directory)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.serve:
        return _serve(opts.url, opts.sync, opts.journal)
    syncs = ("normal", "full") if opts.sync == "both" else (opts.sync,)
    try:
        for sync in syncs:
            with DbosProcess(sync, url=opts.url, journal=opts.journal) as dbos:
                now_pairs, sh_pairs = [], []
                for _ in range(opts.blocks):
                    now_pairs.append((dbos.seconds("now", opts.steps), dbos.seconds("empty", 0), opts.steps))
                    sh_pairs.append((dbos.seconds("sh", opts.sh_steps), dbos.seconds("empty", 0), opts.sh_steps))
                print(dbos.describe())
            now_rates, sh_rates = marginal_rates(now_pairs), marginal_rates(sh_pairs)
            print(f"  synchronous={sync.upper()}: time.time() steps {statistics.median(now_rates):9,.0f}/s, "
                  f"subprocess.run(['true']) steps {statistics.median(sh_rates):7,.0f}/s "
                  f"(medians of {opts.blocks} blocks of {opts.steps} and {opts.sh_steps})")
    except DbosUnavailable as e:
        print(f"dbos_baseline: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
