"""Commands on recorded runs: `runs`, `show`, `logs` (which only read), and `signal`,
`cancel`, `replay`."""

import json
import sys
import time

import click

from flowmetal.cli.app import EXIT_FAILED, EXIT_INTERRUPTED, CliError, NoDatabase, cli, db_option, loads_json, \
    open_db
from flowmetal.clock import SYSTEM
from flowmetal.engine.documents import run_json

STATES = ["pending", "running", "waiting", "completed", "failed", "cancelled", "timed_out"]


@cli.command()
@click.option("--status", type=click.Choice(STATES), default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@db_option
def runs(status, limit, as_json, db, root):
    """List runs, newest first."""
    from flowmetal.cli import render

    try:
        store, _ = open_db(db, root, readonly=True, create=False)
        rows = store.list_runs(status=status, limit=limit)
    except NoDatabase:
        rows = []
    if as_json:
        click.echo(json.dumps([run_json(r) for r in rows], indent=2))
    else:
        render.runs_table(rows)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@db_option
def show(run_ref, as_json, db, root):
    """A run's state, arguments, result or error, children, and its journal."""
    from flowmetal.cli import render
    from flowmetal.engine.gate import decode_result

    store, _ = open_db(db, root, readonly=True, create=False)
    run = store.find_run(run_ref)
    journal = store.journal(run["id"])
    children = store.list_runs(parent_id=run["id"], limit=10_000)

    def decode(text):
        return decode_result(store, text)

    if as_json:
        from flowmetal.engine.documents import run_document  # the shape GET /api/v1/runs/{id} serves

        click.echo(json.dumps(run_document(store, run), indent=2))
    else:
        render.show_run(run, journal, children, decode)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("--tree", is_flag=True,
              help="Also the lines of the run's children (and theirs), each marked with its run.")
@db_option
def logs(run_ref, follow, tree, db, root):
    """The run's log."""
    from flowmetal.cli.render import print_log_line
    from flowmetal.store.base import ENDED

    store, _ = open_db(db, root, readonly=True, create=False)
    run = store.find_run(run_ref)
    after = 0

    def new_lines():
        nonlocal after
        if tree:
            members = {run["id"], *store.descendants(run["id"])}
            rows = [r for r in store.tree_logs(run["root_id"], after) if r["run_id"] in members]
        else:
            rows = store.logs(run["id"], after)
        for row in rows:
            print_log_line(row, "" if row.get("run_id", run["id"]) == run["id"] else f"[{row['run_id']}] ")
            after = row["rowid"]

    try:
        while True:
            new_lines()
            if not follow or store.get_run(run["id"])["state"] in ENDED:
                if follow:
                    new_lines()
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.argument("name")
@click.argument("payload", metavar="[JSON]", required=False)
@db_option
def signal(run_ref, name, payload, db, root):
    """Deliver signal NAME (with an optional JSON payload; - reads it from stdin) to a run."""
    from flowmetal.engine.runs import send_signal

    if not name.strip():
        raise CliError("the signal name is empty")
    if payload == "-":
        payload = sys.stdin.read()
    if payload is not None:
        loads_json(payload, "the signal payload")  # the store keeps the text; refuse NaN and 1e999 here
    store, _ = open_db(db, root, create=False)
    run_id = send_signal(store, SYSTEM, run_ref, name, payload)
    click.echo(f"signal {name} sent to run {run_id}", err=True)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@db_option
def cancel(run_ref, db, root):
    """Cancel a run and its children."""
    from flowmetal.engine.runs import cancel_run

    store, _ = open_db(db, root, create=False)
    run_id = cancel_run(store, SYSTEM, run_ref)
    click.echo(f"run {run_id} cancelled", err=True)


@cli.command()
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--current", is_flag=True,
              help="Replay against the current files on disk instead of the pinned code "
                   "(to check in-flight runs before deploying a change).")
@click.option("--file", "file", default=None, type=click.Path(dir_okay=False),
              help="Replay the runs of a journal file (flowmetal export) instead of a run of the database.")
@click.option("--all", "all_runs", is_flag=True,
              help="With --current: every run in flight (pending, running, waiting); exit 1 if any diverges.")
@db_option
def replay(run_ref, current, file, all_runs, db, root):
    """Execute a run's code against its journal with no effects; report whether it diverges.

    `replay --current --all` is the deploy gate: it replays every run in flight
    against the files on disk and exits 1 listing each run that would diverge.
    """
    from flowmetal.engine.replay import replay_document, replay_in_flight, replay_run

    if sum(x is not None and x is not False for x in (run_ref, file, all_runs or None)) != 1:
        raise CliError("replay takes one of: RUN, --file FILE, --current --all")
    if file is not None:
        from flowmetal.engine.journal_file import read_file
        from flowmetal.lang.workspace import root_for

        reports = replay_document(read_file(file), root=root_for([], root), current=current)
        for _, report in reports:
            click.echo(report.text)
        sys.exit(0 if all(r.ok for _, r in reports) else EXIT_FAILED)
    if all_runs:
        if not current:
            raise CliError("--all replays the runs in flight against the current files: pass --current too")
        try:
            store, _ = open_db(db, root, create=False)
        except NoDatabase:
            click.echo("no runs in flight: there is no database yet")
            return
        sys.exit(render_gate(replay_in_flight(store, root)))
    store, _ = open_db(db, root, create=False)
    run = store.find_run(run_ref)
    report = replay_run(store, run, current=current)
    click.echo(report.text)
    sys.exit(0 if report.ok else EXIT_FAILED)


def render_gate(results):
    """Print the deploy gate's outcome; return its exit code (1 when a run would diverge)."""
    bad = [(row, report) for row, report in results if not report.ok]
    for row, report in bad:
        click.echo(f"DIVERGES {row['id']} ({row['state']}, {row['file']}:{row['function']})")
        click.echo("    " + report.text.replace("\n", "\n    "))
    if bad:
        click.echo(f"{len(bad)} of {len(results)} run(s) in flight would diverge on the current files; "
                   f"do not deploy until they have ended (or change the code so that they replay)")
        return EXIT_FAILED
    click.echo(f"{len(results)} run(s) in flight replay on the current files; no divergence")
    return 0
