"""Flowmetal on PostgreSQL, beside Flowmetal on SQLite and DBOS Transact on the same
PostgreSQL server (issue 15). Prints figures and ratios; asserts nothing.

    pip install -r bench/requirements.txt    # DBOS Transact, for its columns
    python3 bench/bench_postgres.py [--quick] [--sync normal|full|both] [--blocks 5]
                                    [--steps 500] [--sh-steps 40] [--runs 400] [--procs 1,2,4]
                                    [--run-blocks 3] [--no-dbos] [--waits]

One throwaway PostgreSQL cluster (initdb and pg_ctl, as tests/pgcluster.py starts it for
the tests, but with fsync on: this is about durable commits) on 127.0.0.1, in TMPDIR.
For each durability setting, one database for Flowmetal and one for DBOS on it:

- **normal**: PostgreSQL `synchronous_commit = off`, SQLite `synchronous = NORMAL` (WAL):
  a killed process loses nothing committed, a power cut may lose the last commits;
- **full**: `synchronous_commit = on`, SQLite `synchronous = FULL`: every commit is on
  disk before it returns (FLOWMETAL_SYNC=full for the SQLite CLI).

Figures, in interleaved blocks so every side sees the same machine:

- journaled `now()` and `sh("true")` per second: a run of that many effects executed in
  this process (marginal: n / (time of an n-effect run - time of an empty run)), on
  PostgreSQL and on SQLite; DBOS: a workflow of steps returning time.time() and of steps
  running subprocess.run(["true"]) (bench/dbos_baseline.py), on PostgreSQL;
- one-effect runs per second with 1, 2 and 4 worker processes: the processes start on an
  empty queue and are seen to be up; then N runs of `now()` are queued in one transaction
  and timed from that commit to the last run's `ended_at`. Flowmetal: `flowmetal worker`
  processes (concurrency 4 each). DBOS: processes with a DBOS queue (worker_concurrency 4,
  polled every 0.01 s), N one-step workflows enqueued to a queue no process serves, then
  moved to the served queue in one UPDATE (the same all-at-once start), timed from that
  commit to the last workflow's completed_at;
- what one run costs on PostgreSQL: statements, explicit transactions and write
  transactions (xids, each one WAL flush when synchronous_commit is on) per execution of
  a one-effect run, counted in this process and by the server.

Each ratio is computed per block; the tables show medians and ranges.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # tests/pgcluster.py: the throwaway cluster's logic

from bench_journal import NOW_LOOP, SH_LOOP  # noqa: E402
from common import execute_claimed, median_range, new_run_in  # noqa: E402  (puts src/python on sys.path)
from dbos_baseline import PROTOCOL, DbosProcess, DbosUnavailable, marginal_rates  # noqa: E402
from pgcluster import Cluster  # noqa: E402

from flowmetal.store import open_store  # noqa: E402  (the one store-opening call a bench needs on both stores)

ONE_EFFECT = "def main(i):\n    now()\n    return i\n"
SRC = str(HERE.parent / "src" / "python")
SETTINGS = {"normal": ("off", "NORMAL"), "full": ("on", "FULL")}  # sync: (synchronous_commit, SQLite synchronous)
DBOS_APP = "flowmetal-bench-queue"
POLL = 0.01  # DBOS queue polling (its default is 1 s; at 4 runs per poll per process 0.1 s would cap it at 40/s)


class DurableCluster(Cluster):
    """tests/pgcluster.py's cluster, started with fsync on (the tests turn it off)."""

    def start(self):
        self._run(self.bin / "initdb", "-D", self.data, "-A", "trust", "-U", self.user)
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run(self.bin / "pg_ctl", "-D", self.data, "-o", opts, "-l", self.dir / "log", "-w", "start")
        return self


def pg_execute(url, sql, params=None):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else cur.rowcount


# --- Flowmetal: effects in this process ---------------------------------------------------

class Flowmetal:
    """One Flowmetal store (a PostgreSQL URL or a SQLite path) and runs executed here."""

    def __init__(self, label, db, sync):
        self.label, self.db, self.sync = label, db, sync
        self.postgres = "://" in db
        self.store = open_store(db, synchronous_full=sync == "full")
        if self.postgres:
            got = self.store.x("SHOW synchronous_commit").fetchone()[0]
            want = SETTINGS[sync][0]
        else:
            got = self.store.x("PRAGMA synchronous").fetchone()[0]
            want = {"normal": 1, "full": 2}[sync]
        if got != want:
            raise SystemExit(f"{label}: the store runs at synchronous {got!r}, wanted {want!r}")
        self.run(0, NOW_LOOP)  # warm: connections, statements, the engine's caches
        self.run(1, SH_LOOP)

    def run(self, n, text):
        run_id = new_run_in(self.store, "loop.star", "main", {"n": n}, {"loop.star": text})
        state, secs = execute_claimed(self.store, run_id)
        if state != "completed":
            raise SystemExit(f"{self.label}: bench run ended {state}")
        return secs

    def env(self):
        env = {**os.environ, "FLOWMETAL_DB": self.db, "PYTHONPATH": SRC}
        env.pop("FLOWMETAL_SYNC", None)
        if self.sync == "full" and not self.postgres:
            env["FLOWMETAL_SYNC"] = "full"
        return env

    def runs_per_second(self, n, procs, waits=None):
        """n one-effect runs queued at once, drained by `procs` worker processes already up.
        `waits` (a Counter, PostgreSQL only): what the server's active sessions wait for."""
        workers = [subprocess.Popen([sys.executable, "-m", "flowmetal", "worker", "--concurrency", "4"],
                                    env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                   for _ in range(procs)]
        try:
            for w in workers:
                line = w.stderr.readline()
                if "started" not in line:
                    raise SystemExit(f"{self.label}: worker did not start: {line}{w.stderr.read()}")
            time.sleep(0.5)  # (each is in its wait for work)
            with self.store.transaction():
                ids = [new_run_in(self.store, "one.star", "main", {"i": i}, {"one.star": ONE_EFFECT})
                       for i in range(n)]
            t0 = time.time()
            sampler = WaitSampler(self.db, waits) if waits is not None else None
            marks = ", ".join("?" for _ in ids)
            deadline = time.monotonic() + 120
            while True:
                done, last = self.store.x(f"SELECT count(*), max(ended_at) FROM runs WHERE state = 'completed' "
                                          f"AND id IN ({marks})", ids).fetchone()
                if done == n:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{self.label}: {done} of {n} runs completed after 120 s")
                time.sleep(0.02)
            if sampler:
                sampler.stop()
            return n / (last - t0)
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                try:
                    w.wait(30)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()

    def run_cost(self, n=50):
        """Per execution of a one-effect run on PostgreSQL: (statements, explicit
        transactions, write transactions), counted over n runs queued beforehand."""
        ids = [new_run_in(self.store, "one.star", "main", {"i": i}, {"one.star": ONE_EFFECT}) for i in range(n)]
        store, counts = self.store, {"q": 0, "tx": 0}
        q, transaction = store.q, store.transaction

        def counting_q(*a, **k):
            counts["q"] += 1
            return q(*a, **k)

        def counting_transaction(*a, **k):
            if getattr(store._local, "conn", None) is None:
                counts["tx"] += 1
            return transaction(*a, **k)

        xid = "SELECT pg_current_xact_id()::text::bigint"
        x0 = store.x(xid).fetchone()[0]
        store.q, store.transaction = counting_q, counting_transaction
        try:
            for run_id in ids:
                execute_claimed(store, run_id)
        finally:
            store.q, store.transaction = q, transaction
        x1 = store.x(xid).fetchone()[0]
        return counts["q"] / n, counts["tx"] / n, (x1 - x0 - 1) / n

    def close(self):
        self.store.close()


class WaitSampler:
    """Samples pg_stat_activity every 5 ms in a thread: counts (wait event, statement) of the
    database's active sessions into `tally`."""

    def __init__(self, url, tally):
        import threading

        self.url, self.tally, self.done = url, tally, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                for event, query in conn.execute(
                        "SELECT coalesce(wait_event_type || ': ' || wait_event, 'running'), left(query, 60) "
                        "FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                        "AND pid <> pg_backend_pid()"):
                    self.tally[(event, " ".join(query.split()))] += 1
                time.sleep(0.005)

    def stop(self):
        self.done.set()
        self.thread.join()


# --- DBOS: a queue served by worker processes ---------------------------------------------

def _dbos_worker(url, sync):
    """A DBOS process serving the queue "runs" until its stdin closes."""
    try:
        import sqlalchemy
        from dbos import DBOS
        from sqlalchemy.pool import Pool
    except ImportError:
        print(f"{PROTOCOL} error DBOS Transact is not installed: pip install -r bench/requirements.txt", flush=True)
        return 3

    @sqlalchemy.event.listens_for(Pool, "connect")
    def _sync(dbapi_conn, record):
        cur = dbapi_conn.cursor()
        cur.execute(f"SET synchronous_commit = {SETTINGS[sync][0]}")
        cur.close()
        dbapi_conn.commit()

    @DBOS.step()
    def now_step():
        return time.time()

    @DBOS.workflow(name="one_effect")
    def one_effect(i):
        now_step()
        return i

    DBOS(config={"name": DBOS_APP, "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    DBOS.register_queue("runs", worker_concurrency=4, polling_interval_sec=POLL)  # (needs the system database)
    print(f"{PROTOCOL} ready", flush=True)
    sys.stdin.read()
    DBOS.destroy()
    return 0


class DbosQueue:
    def __init__(self, url, sync):
        self.url, self.sync, self.batch = url, sync, 0
        from dbos import DBOSClient

        self.client = DBOSClient(system_database_url=url, application_name=DBOS_APP)
        self.pg_url = url

    def runs_per_second(self, n, procs):
        self.batch += 1
        workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--dbos-worker", self.url,
                                     "--sync", self.sync], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
                   for _ in range(procs)]
        try:
            for w in workers:
                while True:
                    line = w.stdout.readline()
                    if not line:
                        raise DbosUnavailable(f"DBOS worker ended: {w.stderr.read().strip()[-500:]}")
                    if line.startswith(f"{PROTOCOL} error"):
                        raise DbosUnavailable(line.split("error", 1)[1].strip())
                    if line.startswith(f"{PROTOCOL} ready"):
                        break
            prefix = f"b{self.batch}-"
            for i in range(n):  # (to a queue nobody serves: nothing starts yet)
                self.client.enqueue({"queue_name": "hold", "workflow_name": "one_effect",
                                     "workflow_id": f"{prefix}{i}"}, i)
            time.sleep(0.3)
            moved = pg_execute(self.pg_url, "UPDATE dbos.workflow_status SET queue_name = 'runs' "
                                            "WHERE queue_name = 'hold' AND workflow_uuid LIKE %s", (prefix + "%",))
            t0 = time.time()
            assert moved == n, (moved, n)
            deadline = time.monotonic() + 120
            while True:
                done, last = pg_execute(self.pg_url, "SELECT count(*), max(completed_at) FROM dbos.workflow_status "
                                                     "WHERE status = 'SUCCESS' AND workflow_uuid LIKE %s",
                                        (prefix + "%",))[0]
                if done == n:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"DBOS: {done} of {n} workflows completed after 120 s")
                time.sleep(0.02)
            return n / (last / 1000 - t0)
        finally:
            for w in workers:
                try:
                    w.stdin.close()
                    w.wait(30)
                except (OSError, subprocess.TimeoutExpired):
                    w.kill()
                    w.wait()

    def close(self):
        self.client.destroy()


# --- the bench ----------------------------------------------------------------------------

class Setting:
    """Everything measured at one durability setting."""

    def __init__(self, sync, cluster, tmp, opts):
        self.sync, self.opts = sync, opts
        commit = SETTINGS[sync][0]
        fm_url = cluster.create_database(f"fm_{sync}")
        pg_execute(cluster.url(), f"ALTER DATABASE fm_{sync} SET synchronous_commit = {commit}")
        self.pg = Flowmetal("Flowmetal PostgreSQL", fm_url, sync)
        self.lite = Flowmetal("Flowmetal SQLite", str(tmp / f"fm_{sync}.db"), sync)
        self.dbos = self.queue = None
        if not opts.no_dbos:
            cluster.create_database(f"dbos_{sync}")
            pg_execute(cluster.url(), f"ALTER DATABASE dbos_{sync} SET synchronous_commit = {commit}")
            url = cluster.url(f"dbos_{sync}")
            self.dbos = DbosProcess(sync, url=url)
            self.queue = DbosQueue(url, sync)
        self.t = {k: [] for k in ("pg_now", "pg_sh", "pg_empty", "lite_now", "lite_sh", "lite_empty",
                                  "dbos_now", "dbos_sh", "dbos_empty")}
        self.runs = {}  # (side, procs): [runs/s]
        self.waits = {}  # procs: Counter of what PostgreSQL's sessions waited for (--waits)

    def steps_block(self, reverse):
        parts = [self._fm(self.pg, "pg"), self._fm(self.lite, "lite")]
        if self.dbos:
            parts.append(self._dbos)
        for part in (reversed(parts) if reverse else parts):
            part()

    def _fm(self, fm, key):
        def part():
            self.t[f"{key}_empty"].append(fm.run(0, NOW_LOOP))
            self.t[f"{key}_now"].append(fm.run(self.opts.steps, NOW_LOOP))
            self.t[f"{key}_sh"].append(fm.run(self.opts.sh_steps, SH_LOOP))
        return part

    def _dbos(self):
        self.t["dbos_empty"].append(self.dbos.seconds("empty", 0))
        self.t["dbos_now"].append(self.dbos.seconds("now", self.opts.steps))
        self.t["dbos_sh"].append(self.dbos.seconds("sh", self.opts.sh_steps))

    def runs_block(self, procs, reverse):
        sides = [("pg", self.pg), ("lite", self.lite)] + ([("dbos", self.queue)] if self.queue else [])
        for key, side in (reversed(sides) if reverse else sides):
            extra = {}
            if key == "pg" and self.opts.waits:
                import collections

                extra["waits"] = self.waits.setdefault(procs, collections.Counter())
            self.runs.setdefault((key, procs), []).append(side.runs_per_second(self.opts.runs, procs, **extra))

    def rates(self):
        out = {}
        for key in ("pg", "lite", "dbos"):
            if not self.t[f"{key}_empty"]:
                continue
            for kind, n in (("now", self.opts.steps), ("sh", self.opts.sh_steps)):
                out[(key, kind)] = marginal_rates([(t, e, n) for t, e in zip(self.t[f"{key}_{kind}"],
                                                                             self.t[f"{key}_empty"])])
        for (key, procs), values in self.runs.items():
            out[(key, f"runs{procs}")] = values
        return out

    def close(self):
        for side in (self.pg, self.lite, self.dbos, self.queue):
            if side is not None:
                side.close()


def fmt(values, spec=",.0f"):
    med, lo, hi = median_range(values)
    return f"{med:{spec}} ({lo:{spec}}-{hi:{spec}})"


def report(setting, opts):
    rates = setting.rates()
    commit, lite = SETTINGS[setting.sync]
    print(f"\n{setting.sync.upper()}: PostgreSQL synchronous_commit={commit} (fsync on), SQLite WAL "
          f"synchronous={lite}" + (f"; {setting.dbos.describe()}" if setting.dbos else ""))
    rows = [("now", "journaled now() / s"), ("sh", 'sh("true") / s')]
    rows += [(f"runs{p}", f"one-effect runs / s, {p} process{'es' if p > 1 else ''}") for p in opts.procs]
    cols = [("pg", "Flowmetal PostgreSQL"), ("lite", "Flowmetal SQLite"), ("dbos", "DBOS PostgreSQL")]
    cols = [(k, label) for k, label in cols if any((k, r) in rates for r, _ in rows)]
    print(f"  {'median (min - max)':38}" + "".join(f"{label:>28}" for _, label in cols)
          + f"{'PG / SQLite':>24}" + (f"{'PG / DBOS':>24}" if any(k == "dbos" for k, _ in cols) else ""))
    for row, label in rows:
        line = f"  {label:38}"
        for key, _ in cols:
            line += f"{fmt(rates[(key, row)]):>28}" if (key, row) in rates else f"{'-':>28}"
        for other in ("lite", "dbos"):
            if ("pg", row) in rates and (other, row) in rates:
                ratios = [a / b for a, b in zip(rates[("pg", row)], rates[(other, row)])]
                line += f"{fmt(ratios, '.2f'):>24}"
        print(line)
    for procs, tally in sorted(setting.waits.items()):
        total = sum(tally.values()) or 1
        print(f"  Flowmetal PostgreSQL, {procs} process(es): active sessions sampled {total} times, waiting for:")
        for (event, query), k in tally.most_common(5):
            print(f"    {k / total:6.1%}  {event:24} {query}")
    stmts, txs, xids = setting.pg.run_cost()
    print(f"  one-effect run on PostgreSQL, per execution: {stmts:.1f} statements, {txs:.1f} explicit "
          f"transactions (each adds BEGIN, the store's advisory lock and COMMIT), {xids:.1f} write "
          f"transactions (commits that flush the WAL at synchronous_commit=on)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="normal only, 2 blocks, small sizes: checks the script")
    ap.add_argument("--sync", choices=("normal", "full", "both"))
    ap.add_argument("--blocks", type=int)
    ap.add_argument("--steps", type=int, help="now() effects and DBOS steps per block (default 500)")
    ap.add_argument("--sh-steps", type=int, help="sh effects and DBOS subprocess steps per block (default 40)")
    ap.add_argument("--runs", type=int, help="one-effect runs per worker block (default 400)")
    ap.add_argument("--procs", help="worker process counts (default 1,2,4)")
    ap.add_argument("--run-blocks", type=int, help="blocks of the worker figures (default 3)")
    ap.add_argument("--no-dbos", action="store_true", help="leave DBOS out")
    ap.add_argument("--waits", action="store_true",
                    help="sample what PostgreSQL's sessions wait for during Flowmetal's worker figures")
    ap.add_argument("--dbos-worker", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.dbos_worker:
        return _dbos_worker(opts.dbos_worker, opts.sync or "normal")
    opts.blocks = opts.blocks or (2 if opts.quick else 5)
    opts.steps = opts.steps or (300 if opts.quick else 500)
    opts.run_blocks = opts.run_blocks or (1 if opts.quick else 3)
    opts.sh_steps = opts.sh_steps or (10 if opts.quick else 40)
    opts.runs = opts.runs or (60 if opts.quick else 400)
    opts.procs = [int(p) for p in (opts.procs or "1,2,4").split(",")]
    syncs = ("normal",) if opts.quick and not opts.sync else \
        (("normal", "full") if opts.sync in (None, "both") else (opts.sync,))

    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="flowmetal-bench-pg-"))
    cluster = DurableCluster().start()
    settings = []
    try:
        try:
            for sync in syncs:
                settings.append(Setting(sync, cluster, tmp, opts))
        except DbosUnavailable as e:
            print(f"bench_postgres: {e} (or leave DBOS out: --no-dbos)", file=sys.stderr)
            return 2
        for i in range(opts.blocks):
            for s in (settings if i % 2 == 0 else settings[::-1]):
                s.steps_block(reverse=i % 2 == 1)
        for i in range(opts.run_blocks):
            for procs in (opts.procs if i % 2 == 0 else opts.procs[::-1]):
                for s in settings:
                    s.runs_block(procs, reverse=i % 2 == 1)
        server = pg_execute(cluster.url(), "SHOW server_version")[0][0]
        print(f"PostgreSQL {server} on 127.0.0.1 (a throwaway cluster in {tmp.parent}); {opts.blocks} interleaved "
              f"blocks of {opts.steps} now() / {opts.sh_steps} sh(\"true\") per side; {opts.run_blocks} blocks of "
              f"{opts.runs} one-effect runs per worker figure; rates of effects are marginal (an empty run's cost "
              f"taken off); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for s in settings:
            report(s, opts)
        print(f"\n({time.monotonic() - t_start:.0f} s)")
    finally:
        for s in settings:
            s.close()
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
