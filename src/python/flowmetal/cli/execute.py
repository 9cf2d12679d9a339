"""Commands that start runs and execute them here, in the foreground: `run`, `start`, `resume`."""

import os
import sys
from pathlib import Path

import click

from flowmetal.cli.app import (
    EXIT_FAILED, EXIT_INTERRUPTED, CliError, InternalError, NoDatabase, cli, db_location, db_option, loads_json,
    open_db,
)
from flowmetal.clock import SYSTEM
from flowmetal.codec import short


def parse_args(pairs, args_json):
    """`-a KEY=VALUE` (a string), `-a KEY:=JSON` (a JSON value), `--args JSON` (an object)."""
    out = {}
    if args_json:
        out = loads_json(args_json, "--args")
        if not isinstance(out, dict):
            raise CliError("--args must be a JSON object, like '{\"name\": \"world\"}'")
    for pair in pairs:
        shown = short(pair, 60)  # the value may be huge: show its start
        if ":=" in pair and ("=" not in pair or pair.index(":=") < pair.index("=")):
            key, raw = pair.split(":=", 1)
            out[key] = loads_json(raw, f"-a {shown}: the value after :=")
        elif "=" in pair:
            key, value = pair.split("=", 1)
            out[key] = value
        else:
            raise CliError(f"-a {shown}: expected KEY=VALUE or KEY:=JSON")
        if not key:
            raise CliError(f"-a {shown}: the key is empty")
    return out


def run_options(f):
    f = click.option("--timeout", default=None, help="End the run as timed_out after this long (e.g. 10m).")(f)
    f = click.option("--args", "args_json", default=None, help="All arguments as one JSON object.")(f)
    f = click.option("-a", "--arg", "pairs", multiple=True, metavar="KEY=VALUE|KEY:=JSON",
                     help="An argument: KEY=VALUE passes a string, KEY:=JSON a JSON value.")(f)
    return db_option(f)


def _new_run(db, root, target, pairs, args_json, timeout):
    """Check everything a user typed, then create the run; returns (store, run id).

    Nothing is stored, and no database is created, until the file has loaded and the
    arguments fit the function's parameters."""
    from flowmetal.durations import parse_duration
    from flowmetal.engine.runs import create_run, load_target
    from flowmetal.lang.refs import parse_target
    from flowmetal.lang.signature import check_arguments

    path, function = parse_target(target)
    if not Path(path).exists():
        raise CliError(f"{path}: no such file")
    args = parse_args(pairs, args_json)
    seconds = None
    if timeout is not None:
        try:
            seconds = parse_duration(timeout, "--timeout")
        except ValueError as e:
            raise CliError(str(e))
    db_path, root_dir = db_location(db, root, [path])
    name, texts = load_target(root_dir, path, function)
    check_arguments(texts, name, function, args)
    store, root_dir = open_db(db, root, [path])
    run_id = create_run(store, SYSTEM, file=name, function=function, args=args, texts=texts,
                        root_dir=str(root_dir), timeout=seconds)
    if db is None:
        here, _ = db_location(None, root)
        if os.path.abspath(here) != os.path.abspath(db_path):
            click.echo(f"database {os.path.abspath(db_path)} (the workspace of {path}; commands run from here "
                       f"use {here}: pass them --db {os.path.abspath(db_path)})", err=True)
    return store, run_id


@cli.command()
@click.argument("target", metavar="FILE[:FUNCTION]")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1),
              help="Child runs executed at once.")
@run_options
def run(target, pairs, args_json, timeout, concurrency, db, root):
    """Start a run of FUNCTION (default main) and execute it in the foreground until it ends.

    The run id goes to stderr at the start, the log streams to stderr, and the
    result is printed as JSON on stdout. Interrupted, the run stays resumable.
    """
    store, run_id = _new_run(db, root, target, pairs, args_json, timeout)
    click.echo(f"run {run_id}", err=True)
    sys.exit(drive(store, run_id, concurrency))


@cli.command()
@click.argument("target", metavar="FILE[:FUNCTION]")
@run_options
def start(target, pairs, args_json, timeout, db, root):
    """Queue a run for a worker and print its id."""
    store, run_id = _new_run(db, root, target, pairs, args_json, timeout)
    click.echo(run_id)


def drive(store, run_id, concurrency):
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


def resumable(store, now):
    """The top-level run of every run tree that has not ended and that no live process is
    executing: no run of the tree is `running` under a current lease. That takes in
    orphans (their owner died), runs waiting on a timer, a signal or children (which no
    process holds), and queued runs. Oldest first."""
    open_runs = [r for state in ("pending", "running", "waiting")
                 for r in store.list_runs(status=state, limit=10_000_000)]
    live = {r["root_id"] for r in open_runs if r["state"] == "running" and (r["lease_expires"] or 0) >= now}
    return sorted((r for r in open_runs if r["parent_id"] is None and r["root_id"] not in live),
                  key=lambda r: r["id"])


@cli.command()
@click.argument("run_refs", metavar="[RUN]...", nargs=-1)
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1))
@db_option
def resume(run_refs, concurrency, db, root):
    """Take over runs that no live process will continue and execute them here until they end.

    With no RUN: every run that has not ended and that no live process is
    executing, such as a run left behind by a dead process, or by a `flowmetal
    run` interrupted while it waited on a timer or a signal; one after another,
    each with its children.
    """
    from flowmetal.engine.worker import expire_dead_local_owners
    from flowmetal.store.base import ENDED

    try:
        store, _ = open_db(db, root, create=False)
    except NoDatabase:
        if run_refs:
            raise
        click.echo("no orphaned runs: there is no database yet", err=True)
        return
    expire_dead_local_owners(store)
    if run_refs:
        targets = [store.find_run(r) for r in run_refs]
    else:
        targets = resumable(store, SYSTEM.now())
        if not targets:
            click.echo("no orphaned runs: every run has ended or is being executed by a live process", err=True)
            return
    code = 0
    for run in targets:
        run = store.get_run(run["id"])
        if run["state"] in ENDED:
            click.echo(f"run {run['id']} has already ended ({run['state']})", err=True)
            code = max(code, 0 if run["state"] == "completed" else EXIT_FAILED)
            continue
        if run["state"] == "running" and (run["lease_expires"] or 0) >= SYSTEM.now():
            raise CliError(f"run {run['id']} is being executed by {run['owner']}, whose lease is current; "
                           f"it is not orphaned")
        click.echo(f"run {run['id']}", err=True)
        result = drive(store, run["id"], concurrency)
        if result == EXIT_INTERRUPTED:
            sys.exit(result)
        code = max(code, result)
    sys.exit(code)
