"""The command line: parse arguments, call one library function, render the result.

Errors a user can cause are shown as text (never a traceback) with exit code 2.
Exit codes: 0 success, 1 the run failed (or was cancelled or timed out),
2 usage, load or validation error, 130 interrupted.
"""

import json
import os
import sys
import time
from pathlib import Path

import click

from flowmetal import __version__
from flowmetal.clock import SYSTEM
from flowmetal.errors import FlowmetalError, LoadError, StoreError, UserError

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class CliError(click.ClickException):
    exit_code = EXIT_USAGE

    def __init__(self, message, diagnostics=()):
        super().__init__(message)
        self.diagnostics = diagnostics

    def show(self, file=None):
        out = sys.stderr
        for d in self.diagnostics:
            print(d.render(), file=out)
        if not self.diagnostics:
            print(f"error: {self.message}", file=out)


class InternalError(click.ClickException):
    exit_code = 70

    def show(self, file=None):
        print(f"error: {self.message}", file=sys.stderr)


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LoadError as e:
            raise CliError(str(e), e.diagnostics) from None
        except (UserError, StoreError) as e:
            raise CliError(str(e)) from None
        except FlowmetalError as e:
            raise CliError(str(e)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a bug of ours: say so briefly; FLOWMETAL_DEBUG=1 shows the traceback
            if os.environ.get("FLOWMETAL_DEBUG"):
                raise
            raise InternalError(f"internal error: {type(e).__name__}: {e} "
                                f"(this is a bug in Flowmetal; FLOWMETAL_DEBUG=1 shows the traceback)") from None


def db_option(f):
    f = click.option("--root", type=click.Path(file_okay=False), default=None,
                     help="Workspace root (default: nearest directory with a .flowmetal marker, else the current one).")(f)
    f = click.option("--db", "db", envvar="FLOWMETAL_DB", type=click.Path(dir_okay=False), default=None,
                     help="Database file (also FLOWMETAL_DB; default .flowmetal/flowmetal.db under the workspace root).")(f)
    return f


def open_db(db, root, paths=()):
    from flowmetal.durations import parse_duration
    from flowmetal.lang.workspace import default_db_path, root_for
    from flowmetal.store import open_store, private_dir

    root = root_for(paths, root)
    if db is None:
        db = default_db_path(root)
        private_dir(os.path.dirname(db))  # (0700: the database is private)
    busy = os.environ.get("FLOWMETAL_BUSY_TIMEOUT")
    try:
        busy = None if not busy else parse_duration(busy, "FLOWMETAL_BUSY_TIMEOUT")
    except ValueError as e:
        raise CliError(str(e))
    return open_store(db, synchronous_full=os.environ.get("FLOWMETAL_SYNC") == "full", busy_timeout=busy), root


def parse_args(pairs, args_json):
    """`-a KEY=VALUE` (a string), `-a KEY:=JSON` (a JSON value), `--args JSON` (an object)."""
    out = {}
    if args_json:
        try:
            out = json.loads(args_json)
        except json.JSONDecodeError as e:
            raise CliError(f"--args is not valid JSON: {e.msg} (line {e.lineno} column {e.colno})")
        if not isinstance(out, dict):
            raise CliError("--args must be a JSON object, like '{\"name\": \"world\"}'")
    for pair in pairs:
        if ":=" in pair and ("=" not in pair or pair.index(":=") < pair.index("=")):
            key, raw = pair.split(":=", 1)
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError as e:
                raise CliError(f"-a {pair}: the value after := is not valid JSON ({e.msg})")
        elif "=" in pair:
            key, value = pair.split("=", 1)
            out[key] = value
        else:
            raise CliError(f"-a {pair}: expected KEY=VALUE or KEY:=JSON")
        if not key:
            raise CliError(f"-a {pair}: the key is empty")
    return out


def split_target(target):
    """FILE[:FUNCTION] -> (path, function)."""
    path, sep, function = target.rpartition(":")
    if not sep or "/" in function or function.endswith(".star"):
        return target, "main"
    return path, function or "main"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowmetal")
def cli():
    """Flowmetal: durable workflows in Starlark, and a cron replacement.

    Every effect a workflow performs is journaled to SQLite before the program
    sees its result, so a run survives crashes, restarts and long waits.
    """


# --- runs -------------------------------------------------------------------

def run_options(f):
    f = click.option("--timeout", default=None, help="End the run as timed_out after this long (e.g. 10m).")(f)
    f = click.option("--args", "args_json", default=None, help="All arguments as one JSON object.")(f)
    f = click.option("-a", "--arg", "pairs", multiple=True, metavar="KEY=VALUE|KEY:=JSON",
                     help="An argument: KEY=VALUE passes a string, KEY:=JSON a JSON value.")(f)
    return db_option(f)


def _new_run(db, root, target, pairs, args_json, timeout):
    from flowmetal.durations import parse_duration
    from flowmetal.engine.runs import create_run, load_target

    path, function = split_target(target)
    if not Path(path).exists():
        raise CliError(f"{path}: no such file")
    args = parse_args(pairs, args_json)
    seconds = None
    if timeout is not None:
        try:
            seconds = parse_duration(timeout, "--timeout")
        except ValueError as e:
            raise CliError(str(e))
    store, root = open_db(db, root, [path])
    name, texts = load_target(root, path, function)
    run_id = create_run(store, SYSTEM, file=name, function=function, args=args, texts=texts,
                        root_dir=str(root), timeout=seconds)
    return store, run_id


@cli.command()
@click.argument("target", metavar="FILE[:FUNCTION]")
@click.option("--concurrency", default=8, show_default=True, help="Child runs executed at once.")
@run_options
def run(target, pairs, args_json, timeout, concurrency, db, root):
    """Start a run of FUNCTION (default main) and execute it in the foreground until it ends.

    The run id goes to stderr at the start, the log streams to stderr, and the
    result is printed as JSON on stdout. Interrupted, the run stays resumable.
    """
    store, run_id = _new_run(db, root, target, pairs, args_json, timeout)
    click.echo(f"run {run_id}", err=True)
    sys.exit(_drive(store, run_id, concurrency))


@cli.command()
@click.argument("target", metavar="FILE[:FUNCTION]")
@run_options
def start(target, pairs, args_json, timeout, db, root):
    """Queue a run for a worker and print its id."""
    store, run_id = _new_run(db, root, target, pairs, args_json, timeout)
    click.echo(run_id)


def _drive(store, run_id, concurrency):
    """Execute a run (and its children) here until it ends; return the exit code."""
    from flowmetal.cli.render import RunFollower
    from flowmetal.engine.worker import Worker

    run = store.get_run(run_id)
    worker = Worker(store, SYSTEM, concurrency=concurrency, root_id=run["root_id"])
    follower = RunFollower(store, run_id)
    try:
        worker.run_forever(until=follower.poll)
    except KeyboardInterrupt:
        worker.shutdown(interrupt=True)
        follower.poll()
        click.echo(f"interrupted; resume with: flowmetal resume {follower.tip}", err=True)
        return EXIT_INTERRUPTED
    worker.shutdown()
    follower.poll()
    code = follower.finish()
    from flowmetal.model import is_internal_error

    return InternalError.exit_code if is_internal_error(store.get_run(follower.tip)) else code


@cli.command()
@click.option("--status", type=click.Choice(["pending", "running", "waiting", "completed", "failed",
                                             "cancelled", "timed_out"]), default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@db_option
def runs(status, limit, as_json, db, root):
    """List runs, newest first."""
    from flowmetal.cli import render

    store, _ = open_db(db, root)
    rows = store.list_runs(status=status, limit=limit)
    if as_json:
        click.echo(json.dumps([render.run_json(r) for r in rows], indent=2))
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

    store, _ = open_db(db, root)
    run = store.find_run(run_ref)
    journal = store.journal(run["id"])
    children = store.list_runs(parent_id=run["id"], limit=10_000)

    def decode(text):
        return decode_result(store, text)

    if as_json:
        doc = render.run_json(run)
        doc["journal"] = [render.entry_json(e, decode) for e in journal]
        doc["children"] = [c["id"] for c in children]
        click.echo(json.dumps(doc, indent=2))
    else:
        render.show_run(run, journal, children, decode)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run ends.")
@db_option
def logs(run_ref, follow, db, root):
    """The run's log."""
    from flowmetal.cli.render import print_log_line
    from flowmetal.store.base import ENDED

    store, _ = open_db(db, root)
    run = store.find_run(run_ref)
    after = 0
    try:
        while True:
            for row in store.logs(run["id"], after):
                print_log_line(row)
                after = row["rowid"]
            if not follow or store.get_run(run["id"])["state"] in ENDED:
                if follow:
                    for row in store.logs(run["id"], after):
                        print_log_line(row)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


@cli.command()
@click.argument("run_refs", metavar="[RUN]...", nargs=-1)
@click.option("--concurrency", default=8, show_default=True)
@db_option
def resume(run_refs, concurrency, db, root):
    """Take over runs left behind by a dead process and execute them here until they end.

    With no RUN, every orphaned run (running, but its owner is gone).
    """
    from flowmetal.engine.worker import expire_dead_local_owners
    from flowmetal.store.base import ENDED

    store, _ = open_db(db, root)
    expire_dead_local_owners(store)
    if run_refs:
        targets = [store.find_run(r) for r in run_refs]
    else:
        now = SYSTEM.now()
        targets = [r for r in store.list_runs(status="running", limit=100_000)
                   if (r["lease_expires"] or 0) < now and r["parent_id"] is None]
        if not targets:
            click.echo("no orphaned runs", err=True)
            return
    code = 0
    for run in targets:
        if run["state"] in ENDED:
            click.echo(f"run {run['id']} has already ended ({run['state']})", err=True)
            code = max(code, 0 if run["state"] == "completed" else EXIT_FAILED)
            continue
        if run["state"] == "running" and (run["lease_expires"] or 0) >= SYSTEM.now():
            raise CliError(f"run {run['id']} is being executed by {run['owner']}, whose lease is current; "
                           f"it is not orphaned")
        click.echo(f"run {run['id']}", err=True)
        result = _drive(store, run["id"], concurrency)
        if result == EXIT_INTERRUPTED:
            sys.exit(result)
        code = max(code, result)
    sys.exit(code)


@cli.command()
@click.option("--concurrency", default=4, show_default=True, help="Runs executed at once.")
@click.option("--until-idle", is_flag=True,
              help="Exit once nothing is left but runs waiting for signals (runs on timers keep it going).")
@click.option("--grace", default="10s", show_default=True,
              help="On SIGTERM, how long running effects may take to finish before runs are interrupted.")
@db_option
def worker(concurrency, until_idle, grace, db, root):
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
    w = Worker(store, SYSTEM, concurrency=concurrency, on_event=worker_event)
    click.echo(f"worker {w.owner} started (concurrency {concurrency})", err=True)
    try:
        code = w.serve(idle_exit=until_idle, grace=grace_seconds)
    except KeyboardInterrupt:
        w.shutdown(interrupt=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.argument("name")
@click.argument("payload", metavar="[JSON]", required=False)
@db_option
def signal(run_ref, name, payload, db, root):
    """Deliver signal NAME (with an optional JSON payload; - reads it from stdin) to a run."""
    from flowmetal.engine.runs import send_signal

    if payload == "-":
        payload = sys.stdin.read()

    store, _ = open_db(db, root)
    run_id = send_signal(store, SYSTEM, run_ref, name, payload)
    click.echo(f"signal {name} sent to run {run_id}", err=True)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@db_option
def cancel(run_ref, db, root):
    """Cancel a run and its children."""
    from flowmetal.engine.runs import cancel_run

    store, _ = open_db(db, root)
    run_id = cancel_run(store, SYSTEM, run_ref)
    click.echo(f"run {run_id} cancelled", err=True)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--current", is_flag=True,
              help="Replay against the current files on disk instead of the pinned code "
                   "(to check in-flight runs before deploying a change).")
@db_option
def replay(run_ref, current, db, root):
    """Execute a run's code against its journal with no effects; report whether it diverges."""
    from flowmetal.engine.replay import replay_run

    store, _ = open_db(db, root)
    run = store.find_run(run_ref)
    report = replay_run(store, run, current=current)
    click.echo(report.text)
    sys.exit(0 if report.ok else EXIT_FAILED)


@cli.command()
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Delete runs that ended longer ago than this, e.g. 30d.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@db_option
def prune(older_than, dry_run, as_json, db, root):
    """Delete ended runs older than a duration, with their journals, logs and signals.

    A run is deleted with all its child runs, once every one of them has ended before
    the cutoff; runs in flight and their children are never touched. Also deleted:
    schedule fires before the cutoff whose outcome is recorded, and pinned sources and
    large results nothing refers to any more. Safe while workers and the scheduler run.
    """
    from flowmetal.cli import render
    from flowmetal.durations import parse_duration

    try:
        age = parse_duration(older_than, "--older-than")
    except ValueError as e:
        raise CliError(str(e))
    store, _ = open_db(db, root)
    now = SYSTEM.now()
    counts = store.prune(now - age, now, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "before": now - age, **counts}))
    else:
        click.echo(render.prune_text(counts, dry_run))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Workspace root.")
def check(paths, root):
    """Load every .star file under PATHs; report syntax, name, load, type, lint and schedule errors.

    Each problem is printed as file:line:col with the source line. Exit 2 if there is any error.
    """
    from flowmetal.lang.check import check as run_check
    from flowmetal.lang.workspace import root_for

    paths = paths or (".",)
    root = root_for(paths, root)
    report = run_check(root, paths)
    for d in report.diagnostics:
        click.echo(d.render())
    errors, warnings = len(report.errors), len(report.diagnostics) - len(report.errors)
    summary = (f"{report.files} file(s) checked, {len(report.schedules)} schedule(s), "
               f"{errors} error(s), {warnings} warning(s)")
    click.echo(summary, err=True)
    sys.exit(EXIT_USAGE if errors else 0)


from flowmetal.cli import schedule as _schedule  # noqa: E402,F401  registers schedule and import-crontab


def main():
    cli(prog_name="flowmetal")
