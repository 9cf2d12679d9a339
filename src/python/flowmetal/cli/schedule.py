"""`flowmetal schedule` (the cron replacement) and `flowmetal import-crontab`."""

import json
import sys
from datetime import datetime, time as dtime, timedelta
from pathlib import Path

import click

from flowmetal.cli import CliError, EXIT_USAGE, cli, db_option, open_db
from flowmetal.clock import SYSTEM


def parse_when(text, what):
    """--from/--to: an ISO date or date-time; without an offset, in the machine's time zone."""
    from flowmetal.schedule.cron import local_timezone

    try:
        if len(text) == 10:
            moment = datetime.combine(datetime.fromisoformat(text).date(), dtime())
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise CliError(f"{what} {text!r}: expected an ISO date or date-time, like 2026-03-29 or "
                       f"2026-03-29T02:30 or 2026-03-29T02:30:00+02:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=local_timezone())
    return moment.timestamp()


@cli.command("schedule")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--concurrency", default=4, show_default=True, help="Runs executed at once.")
@click.option("--list", "list_", is_flag=True,
              help="Print each schedule: next fire times, last fire and its outcome, skips and misses.")
@click.option("--json", "as_json", is_flag=True, help="With --list or --dry-run: one JSON document on stdout.")
@click.option("--once", is_flag=True, help="Fire what is due now, execute those runs, exit when they end.")
@click.option("--dry-run", is_flag=True, help="Print what would fire between --from and --to; start nothing.")
@click.option("--from", "from_", metavar="T", default=None, help="With --dry-run: window start (default now).")
@click.option("--to", "to", metavar="T", default=None, help="With --dry-run: window end (default one day later).")
@click.option("--grace", default="10s", show_default=True,
              help="On SIGTERM/SIGINT, how long running effects may take to finish before runs are interrupted.")
@db_option
def schedule_command(paths, concurrency, list_, as_json, once, dry_run, from_, to, grace, db, root):
    """The cron replacement: load the schedules under PATHs (default .), fire them on time,
    and execute their runs.

    Each fire is recorded once (never twice, even with two schedulers on one
    database); skips and misses are recorded with their reason. Edits to the
    files are picked up within a second (or on SIGHUP); a file with errors keeps
    its last good schedules. SIGTERM or SIGINT stops firing, lets running effects
    finish within --grace and exits 0, leaving unfinished runs resumable.
    """
    from flowmetal.durations import parse_duration
    from flowmetal.lang.workspace import root_for

    if sum(map(bool, (list_, once, dry_run))) > 1:
        raise CliError("--list, --once and --dry-run cannot be combined")
    if as_json and not (list_ or dry_run):
        raise CliError("--json goes with --list or --dry-run")
    if (from_ or to) and not dry_run:
        raise CliError("--from and --to go with --dry-run")
    try:
        grace_seconds = parse_duration(grace, "--grace")
    except ValueError as e:
        raise CliError(str(e)) from None
    paths = paths or (".",)
    for p in paths:
        if not Path(p).exists():
            raise CliError(f"{p}: no such file or directory")
    if dry_run:
        sys.exit(_dry_run(root_for(paths, root), paths, from_, to, as_json))
    store, root = open_db(db, root, paths)
    if list_:
        sys.exit(_list(store, root, paths, as_json))
    from flowmetal.cli.render import schedule_event
    from flowmetal.schedule.daemon import Daemon

    daemon = Daemon(store, root, paths, concurrency=concurrency, grace=grace_seconds, emit=schedule_event)
    sys.exit(daemon.run(once=once))


def _loaded(root, paths):
    from flowmetal.lang.discovery import Workspace

    loaded = Workspace(root, paths).load()
    for diagnostics in loaded.broken.values():
        for d in diagnostics:
            click.echo(d.render(), err=True)
    return loaded


def _dry_run(root, paths, from_, to, as_json):
    from flowmetal.cli import render
    from flowmetal.schedule.views import preview

    start = parse_when(from_, "--from") if from_ else SYSTEM.now()
    end = parse_when(to, "--to") if to else start + timedelta(days=1).total_seconds()
    if end <= start:
        raise CliError("--to must be later than --from")
    loaded = _loaded(root, paths)
    rows = preview(loaded.specs, start, end)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        render.fire_preview(rows)
        click.echo(f"{len(rows)} fire(s) of {len(loaded.specs)} schedule(s)", err=True)
    return EXIT_USAGE if loaded.broken else 0


def _list(store, root, paths, as_json):
    from flowmetal.cli import render
    from flowmetal.schedule.views import listing

    loaded = _loaded(root, paths)
    rows = listing(store, loaded.specs, SYSTEM.now())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        render.schedules_table(rows)
    return EXIT_USAGE if loaded.broken else 0


@cli.command("import-crontab")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Write the .star file here (default: stdout).")
@click.option("--prefix", default="job", show_default=True,
              help="Schedules are named PREFIX-1, PREFIX-2, ... in the order of the crontab's jobs.")
def import_crontab(file, output, prefix):
    """Translate a crontab (FILE, or - for stdin) into a .star file of schedules.

    Each job becomes a function that runs the command with sh() and a
    schedule() that fires it, with cron's semantics (local time, no catch-up,
    overlapping runs allowed); what cannot be translated is kept as a comment.
    """
    import re

    from flowmetal.schedule.crontab import convert_crontab

    if not re.match(r"^[A-Za-z0-9_.-]{1,90}$", prefix):
        raise CliError(f"--prefix {prefix!r}: use letters, digits, '_', '.', '-' (a schedule name's characters)")
    if file == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CliError(f"{file}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"{file}: cannot read it: {e}") from None
        source = file
    star = convert_crontab(text, source, prefix=prefix)
    if output is None:
        click.echo(star, nl=False)
        return
    try:
        Path(output).write_text(star, encoding="utf-8")
    except OSError as e:
        raise CliError(f"{output}: cannot write it: {e.strerror}") from None
    jobs = star.count("\nschedule(")
    click.echo(f"wrote {output}: {jobs} schedule(s); check it with: flowmetal check {output}", err=True)
