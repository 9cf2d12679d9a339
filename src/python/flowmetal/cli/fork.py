"""Commands that start a run from a prefix of another run's journal: `fork`, `retry`."""

import sys

import click

from flowmetal.cli.app import cli, db_option, open_db
from flowmetal.cli.execute import drive


def _start(store, run_id, source_id, at, queue, concurrency, reapplied=None):
    if queue:
        click.echo(run_id)
        return
    extra = "" if reapplied is None else f"; {reapplied} signal(s) reapplied"
    click.echo(f"run {run_id} (forked from {source_id} at {at}{extra})", err=True)
    sys.exit(drive(store, run_id, concurrency))


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--at", "at", required=True, type=click.IntRange(min=0), metavar="SEQ",
              help="Copy the first SEQ journal entries of RUN; the new run continues live after them.")
@click.option("--current", is_flag=True, help="Use the files on disk instead of RUN's pinned code.")
@click.option("--reapply-signals", "reapply", is_flag=True,
              help="Send the new run again every signal RUN received that the prefix did not consume, "
                   "and carry over the payloads of callbacks RUN was called back on.")
@click.option("--queue", is_flag=True, help="Only queue the new run (for a worker) and print its id.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1),
              help="Child runs executed at once.")
@db_option
def fork(run_ref, at, current, reapply, queue, concurrency, db, root):
    """Start a new run of RUN's function and arguments from RUN's first SEQ journal entries.

    The prefix is replayed first, with no effects, on RUN's pinned code (or with
    --current the files on disk); if it does not match, the fork is refused
    naming the position, the recorded and the actual call, and nothing is
    created. Then the new run executes in the foreground as `run` does.
    Signals of RUN are not carried over unless --reapply-signals: then every
    signal RUN received that its first SEQ entries did not consume (consumed
    later, or never) is sent to the new run again, in the order received, and
    a callback of the prefix RUN was called back on keeps its payload (else the
    new run's callback waits for a call of its own URL). A prefix may spawn
    only children that have ended.
    """
    from flowmetal.engine.fork import fork_run

    store, _ = open_db(db, root, create=False)
    source = store.find_run(run_ref)
    run_id = fork_run(store, source["id"], at, current=current, reapply_signals=reapply)
    reapplied = len(store.signals(run_id)) if reapply else None
    _start(store, run_id, source["id"], at, queue, concurrency, reapplied)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--reapply-signals", "reapply", is_flag=True,
              help="Send the new run again every signal RUN received that the kept entries did not consume.")
@click.option("--queue", is_flag=True, help="Only queue the new run (for a worker) and print its id.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1),
              help="Child runs executed at once.")
@db_option
def retry(run_ref, reapply, queue, concurrency, db, root):
    """Fork a failed RUN just before its failing entry, on the files on disk, and execute it.

    The failing entry is the last journal entry when it records an error (an
    effect failed the run); else the program itself failed after its last
    effect and the whole journal is kept. The effects before it are not
    performed again. Fix the code, then retry.
    """
    from flowmetal.engine.fork import retry_run

    store, _ = open_db(db, root, create=False)
    source = store.find_run(run_ref)
    run_id, at = retry_run(store, source["id"], reapply_signals=reapply)
    _start(store, run_id, source["id"], at, queue, concurrency, len(store.signals(run_id)) if reapply else None)
