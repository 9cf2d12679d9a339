"""Durable steps per second at equal durability: Flowmetal, raw SQLite commits and DBOS
Transact, at synchronous NORMAL and FULL (issue 17). Prints figures and ratios; asserts nothing.

    pip install -r bench/requirements.txt    # DBOS Transact, for its columns
    python3 bench/bench_durability.py [--quick] [--blocks 10] [--steps 400] [--sh-steps 50] [--no-dbos]

For each `synchronous` setting (NORMAL, and FULL as FLOWMETAL_SYNC=full sets it;
WAL everywhere, so FULL is one fsync per commit), interleaved in blocks so all
sides see the same machine:

- raw SQLite commits per second: a one-row INSERT per transaction, on a database
  of its own with the same pragmas (the floor under one durable step);
- Flowmetal `now()` per second: a run of `--steps` journaled now() calls,
  executed in this process by the runner;
- Flowmetal `sh("true")` per second: a run of `--sh-steps` of them;
- DBOS steps per second: a workflow of `--steps` steps returning time.time(), and
  one of `--sh-steps` steps running subprocess.run(["true"]), in a DBOS process
  per setting (DBOS has one global instance per process; see dbos_baseline.py)
  on a SQLite database put in WAL mode at the same synchronous setting.

Effects and steps per second are marginal on both sides: n / (time of an n-step
run - time of an empty run, the median over the blocks). Each ratio is computed
per block, and the table shows the median and the range over the blocks, next to
issue 17's targets (for FULL: now() at least 5x raw commits and 20x DBOS;
sh("true") at least DBOS's subprocess step). The pragmas of every database are
read back and printed; a mismatch stops the bench.
"""

import argparse
import statistics
import sys

from bench_journal import NOW_LOOP, SH_LOOP
from common import SYNC_CODES, SYNCS, Bench, RawCommits, median_range
from dbos_baseline import DbosProcess, DbosUnavailable, marginal_rates

# (ratio name, target, for which settings): issue 17's acceptance
TARGETS = {
    "now_raw": (5.0, ("full",)),
    "now_dbos": (20.0, ("full",)),
    "sh_dbos": (1.0, ("full", "normal")),
}


class Side:
    """Everything measured at one synchronous setting."""

    def __init__(self, sync, steps, sh_steps, dbos):
        self.sync, self.steps, self.sh_steps = sync, steps, sh_steps
        self.bench = Bench(sync)
        self.raw = RawCommits(sync=sync)
        self.now_path = self.bench.workflow("now.star", NOW_LOOP)
        self.sh_path = self.bench.workflow("sh.star", SH_LOOP)
        self.dbos = DbosProcess(sync) if dbos else None
        want = ("wal", SYNC_CODES[sync])
        for what, got in (("Flowmetal store", self.bench.pragmas()), ("raw baseline", self.raw.pragmas())):
            if got != want:
                raise SystemExit(f"{what} runs at journal_mode/synchronous {got}, wanted {want}")
        self.raw_rates, self.fm_now, self.fm_sh, self.fm_empty = [], [], [], []
        self.dbos_now, self.dbos_sh, self.dbos_empty = [], [], []
        self.run(0)  # warm: the first run loads the engine's caches and opens connections
        self.run(1, self.sh_path)

    def run(self, n, path=None):
        state, secs = self.bench.execute(self.bench.start(path or self.now_path, args={"n": n}))
        if state != "completed":
            raise SystemExit(f"bench run ended {state}")
        return secs

    def block(self, reverse):
        steps = [self._raw, self._fm_now, self._fm_sh]
        if self.dbos:
            steps += [self._dbos_now, self._dbos_sh]
        for step in (reversed(steps) if reverse else steps):
            step()

    def _raw(self):
        self.raw.seconds_per_commit(50)  # untimed, as the runs are timed warm
        self.raw_rates.append(1 / self.raw.seconds_per_commit(self.steps))

    def _fm_now(self):
        self.fm_empty.append(self.run(0))
        self.fm_now.append(self.run(self.steps))

    def _fm_sh(self):
        self.fm_sh.append(self.run(self.sh_steps, self.sh_path))

    def _dbos_now(self):
        self.dbos_empty.append(self.dbos.seconds("empty", 0))
        self.dbos_now.append(self.dbos.seconds("now", self.steps))

    def _dbos_sh(self):
        self.dbos_sh.append(self.dbos.seconds("sh", self.sh_steps))

    def rates(self):
        """Per-block rates of every column: {name: [per second, ...]}."""
        out = {"raw": self.raw_rates,
               "now": marginal_rates([(t, e, self.steps) for t, e in zip(self.fm_now, self.fm_empty)]),
               "sh": marginal_rates([(t, e, self.sh_steps) for t, e in zip(self.fm_sh, self.fm_empty)])}
        if self.dbos:
            out["dbos_now"] = marginal_rates([(t, e, self.steps) for t, e in zip(self.dbos_now, self.dbos_empty)])
            out["dbos_sh"] = marginal_rates([(t, e, self.sh_steps) for t, e in zip(self.dbos_sh, self.dbos_empty)])
        return out

    def close(self):
        if self.dbos:
            self.dbos.close()


LABELS = {
    "raw": "raw SQLite commits",
    "now": "Flowmetal now()",
    "sh": 'Flowmetal sh("true")',
    "dbos_now": "DBOS step returning time.time()",
    "dbos_sh": 'DBOS step running subprocess.run(["true"])',
}
RATIOS = (("now_raw", "now() / raw commits", "now", "raw"),
          ("now_dbos", "now() / DBOS time.time() step", "now", "dbos_now"),
          ("sh_raw", 'sh("true") / raw commits', "sh", "raw"),
          ("sh_dbos", 'sh("true") / DBOS subprocess step', "sh", "dbos_sh"))


def fmt_range(values, spec):
    med, lo, hi = median_range(values)
    return f"{med:{spec}}  ({lo:{spec}} - {hi:{spec}})"


def report(side, blocks):
    rates = side.rates()
    dbos = side.dbos.describe() if side.dbos else "DBOS not measured"
    print(f"\nsynchronous={side.sync.upper()}: Flowmetal store and raw baseline WAL/{SYNC_CODES[side.sync]}; {dbos}")
    print(f"  {'per second, median (min - max) of ' + str(blocks) + ' blocks':46} ")
    for key, label in LABELS.items():
        if key in rates:
            print(f"  {label:44} {fmt_range(rates[key], '10,.0f')}")
    print(f"  {'ratio, median (min - max) of per-block ratios':46} {'':29} target")
    for key, label, num, den in RATIOS:
        if den not in rates:
            continue
        ratios = [a / b for a, b in zip(rates[num], rates[den])]
        target, where = TARGETS.get(key, (None, ()))
        if target is not None and side.sync in where:
            verdict = "met" if statistics.median(ratios) >= target else "not met"
            goal = f">= {target:g}x  {verdict}"
        else:
            goal = "-"
        print(f"  {label:44} {fmt_range(ratios, '8.3f')}   {goal}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 blocks of 200 now() and 20 sh (checks the script)")
    ap.add_argument("--blocks", type=int)
    ap.add_argument("--steps", type=int, help="now() effects and DBOS steps per block (default 400)")
    ap.add_argument("--sh-steps", type=int, help="sh effects and DBOS subprocess steps per block (default 50)")
    ap.add_argument("--no-dbos", action="store_true", help="leave DBOS out")
    opts = ap.parse_args()
    blocks = opts.blocks or (3 if opts.quick else 10)
    steps = opts.steps or (200 if opts.quick else 400)
    sh_steps = opts.sh_steps or (20 if opts.quick else 50)

    sides = []
    try:
        for sync in SYNCS:
            sides.append(Side(sync, steps, sh_steps, dbos=not opts.no_dbos))
    except DbosUnavailable as e:
        for side in sides:
            side.close()
        print(f"bench_durability: {e} (or leave DBOS out: --no-dbos)", file=sys.stderr)
        return 2
    try:
        for i in range(blocks):
            for side in (sides if i % 2 == 0 else sides[::-1]):
                side.block(reverse=i % 2 == 1)
    finally:
        for side in sides:
            side.close()
    print(f"{blocks} interleaved blocks of {steps} now() / {sh_steps} sh(\"true\") per side and setting; "
          f"rates are marginal (an empty run's or workflow's cost taken off)")
    for side in sides:
        report(side, blocks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
