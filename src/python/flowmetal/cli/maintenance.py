"""Commands that look after a workspace and its database: `check` and `prune`."""

import json
import sys

import click

from flowmetal.cli.app import EXIT_USAGE, CliError, NoDatabase, cli, db_option, open_db
from flowmetal.clock import SYSTEM


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
    try:
        store, _ = open_db(db, root, create=False)
    except NoDatabase as e:
        click.echo(f"nothing to prune: no database at {e.path}", err=True)
        return
    now = SYSTEM.now()
    counts = store.prune(now - age, now, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "before": now - age, **counts}))
    else:
        click.echo(render.prune_text(counts, dry_run))


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Workspace root.")
@click.option("--in-flight", "in_flight", is_flag=True,
              help="Also replay every run in flight against the current files (as replay --current --all); "
                   "exit 1 if one would diverge.")
@click.option("--db", "db", envvar="FLOWMETAL_DB", type=click.Path(dir_okay=False), default=None,
              help="Database of the runs in flight (with --in-flight): a SQLite file path or a postgresql:// URL; "
                   "also FLOWMETAL_DB.")
def check(paths, root, in_flight, db):
    """Load every .star file under PATHs; report syntax, name, load, type, lint and schedule errors.

    Each problem is printed as file:line:col with the source line. Exit 2 if there is any error.
    With --in-flight, also the deploy gate: exit 1 if a run in flight would diverge.
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
    if errors:
        sys.exit(EXIT_USAGE)
    if in_flight:
        from flowmetal.cli.runs import render_gate
        from flowmetal.engine.replay import replay_in_flight

        try:
            store, _ = open_db(db, root, paths, create=False)
        except NoDatabase:
            click.echo("no runs in flight: there is no database yet")
            return
        sys.exit(render_gate(replay_in_flight(store, root)))


@cli.group()
def db():
    """Database tools: move a workload between SQLite and PostgreSQL, export it for analysis."""


@db.command("copy")
@click.argument("src")
@click.argument("dst")
@click.option("--force", is_flag=True, help="Copy into a destination that already holds runs or schedules (merge).")
def db_copy(src, dst, force):
    """Copy every table (runs, journals, sources, logs, signals, blobs, schedules, fires,
    tokens) from SRC to DST, each a database file or a postgresql:// URL, then check the
    row counts. Runs in flight continue on DST. Stop workers and schedulers on SRC first."""
    import os

    from flowmetal.store import open_store
    from flowmetal.store.copy import copy_store

    if "://" not in src and not os.path.isfile(src):
        raise CliError(f"no database at {src}")
    source, dest = open_store(src), open_store(dst)
    try:
        copied = copy_store(source, dest, force=force,
                            progress=lambda table, n: click.echo(f"{table}: {n} rows", err=True))
    finally:
        source.close()
        dest.close()
    click.echo(f"copied {sum(copied.values())} rows; the row counts of every table match")


@db.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), default="csv", show_default=True,
              help="CSV with a header row, or newline-delimited JSON (one object per row).")
@click.option("--table", "table", type=click.Choice(["runs", "journal", "fires"]), default=None,
              help="Export this table only (default: all three).")
@click.option("-o", "--output", "output", type=click.Path(), default=None,
              help="A directory for TABLE.csv / TABLE.ndjson files (created if missing; files of those names "
                   "are replaced), or with --table a file. Default with --table: standard output.")
@db_option
def db_export(fmt, table, output, db, root):
    """Write runs, journals and schedule fires as CSV or newline-delimited JSON, for
    Datasette, pandas or jq. Values are as stored: times in epoch seconds, JSON columns as
    JSON text, secrets masked. All tables are read from one snapshot; safe while workers run."""
    import contextlib
    import os

    from flowmetal.store.export import EXPORTS, export, file_name

    tables = [table] if table else list(EXPORTS)
    target = None  # a file (one table), a directory, or None: standard output
    if output is None:
        if table is None:
            raise CliError("exporting every table needs -o DIR (or --table NAME to write one table to "
                           "standard output)")
    elif os.path.isdir(output):
        target = "dir"
    elif table is None:
        if os.path.exists(output):
            raise CliError(f"-o {output} is a file; exporting every table needs a directory "
                           f"(or --table NAME to write one table to a file)")
        target = "dir"
    else:
        parent = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(parent):
            raise CliError(f"-o {output}: directory {parent} does not exist")
        target = "file"
    try:
        store, _ = open_db(db, root, readonly=True, create=False)
    except NoDatabase as e:
        raise CliError(f"no database at {e.path}: nothing to export") from None
    with contextlib.ExitStack() as files:
        paths = {}

        def open_out(name):
            if target is None:
                return sys.stdout
            if target == "dir":
                os.makedirs(output, exist_ok=True)
                path = os.path.join(output, file_name(name, fmt))
            else:
                path = output
            paths[name] = path
            try:
                return files.enter_context(open(path, "w", encoding="utf-8", newline=""))
            except OSError as e:
                raise CliError(f"cannot write {path}: {e.strerror}") from None

        try:
            written = export(store, tables, fmt, open_out)
        except BrokenPipeError:
            if target is not None:
                raise
            # the reader of standard output stopped (`| head`): it wants no more; stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        finally:
            store.close()
    for name in tables:
        where = f" to {paths[name]}" if name in paths else ""
        click.echo(f"{name}: {written[name]} rows{where}", err=True)
