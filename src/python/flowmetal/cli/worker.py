"""`flowmetal worker`: execute queued, due and orphaned runs."""

import sys

import click

from flowmetal.cli.app import EXIT_INTERRUPTED, CliError, cli, db_option, open_db
from flowmetal.clock import SYSTEM


@cli.command()
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1), help="Runs executed at once.")
@click.option("--until-idle", is_flag=True,
              help="Exit once nothing is left but runs waiting for signals (runs on timers keep it going).")
@click.option("--grace", default="10s", show_default=True,
              help="On SIGTERM, how long running effects may take to finish before runs are interrupted.")
@click.option("--warm", type=click.IntRange(min=0), default=None,
              help="Suspended runs kept parked in memory and continued in place when their wait ends "
                   "(0: replay every time). Default: FLOWMETAL_WARM, else 256.")
@db_option
def worker(concurrency, until_idle, grace, warm, db, root):
    """Execute queued, due and orphaned runs.

    SIGTERM stops claiming, lets running effects finish within --grace, interrupts
    the rest (ending their commands' process groups) and exits 0, leaving unfinished
    runs resumable.
    """
    from flowmetal.cli.render import worker_event
    from flowmetal.durations import parse_duration
    from flowmetal.engine.worker import Worker

    try:
        grace_seconds = parse_duration(grace, "--grace")
    except ValueError as e:
        raise CliError(str(e))
    store, _ = open_db(db, root)
    w = Worker(store, SYSTEM, concurrency=concurrency, on_event=worker_event, warm=warm)
    click.echo(f"worker {w.owner} started (concurrency {concurrency})", err=True)
    try:
        code = w.serve(idle_exit=until_idle, grace=grace_seconds)
    except KeyboardInterrupt:
        w.shutdown(interrupt=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@db_option
def workers(as_json, db, root):
    """Worker processes on this database, newest first: id, host, pid, start time, last
    heartbeat, runs held, and live, stopped or lost (no heartbeat for 3 renewals)."""
    import json

    from flowmetal.engine.worker import worker_rows

    store, _ = open_db(db, root, readonly=True, create=False)
    rows = worker_rows(store, SYSTEM.now())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from flowmetal.cli.render import when as fmt_time

    header = ("id", "host", "pid", "started", "last seen", "runs", "status")
    table = [header] + [(r["id"], r["host"], str(r["pid"]), fmt_time(r["started_at"]), fmt_time(r["seen_at"]),
                         str(r["runs"]), r["status"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
