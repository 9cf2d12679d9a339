"""`flowmetal worker`: execute queued, due and orphaned runs."""

import sys

import click

from flowmetal.cli.app import EXIT_INTERRUPTED, cli, db_option, open_db
from flowmetal.clock import SYSTEM


@cli.command()
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1), help="Runs executed at once.")
@click.option("--until-idle", is_flag=True,
              help="Exit once nothing is left but runs waiting for signals (runs on timers keep it going).")
@db_option
def worker(concurrency, until_idle, db, root):
    """Execute queued, due and orphaned runs."""
    from flowmetal.cli.render import worker_event
    from flowmetal.engine.worker import Worker

    store, _ = open_db(db, root)
    w = Worker(store, SYSTEM, concurrency=concurrency, on_event=worker_event)
    click.echo(f"worker {w.owner} started (concurrency {concurrency})", err=True)
    try:
        w.run_forever(idle_exit=until_idle)
    except KeyboardInterrupt:
        w.shutdown(interrupt=True)
        sys.exit(EXIT_INTERRUPTED)
    w.shutdown()
