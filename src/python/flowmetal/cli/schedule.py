"""`flowmetal schedule` (the cron replacement, and commands on one schedule) and `flowmetal import-crontab`.

`flowmetal schedule [PATH]... [--list|--once|--dry-run]` serves, lists or previews
the schedules under PATHs; `flowmetal schedule pause|resume|trigger|backfill NAME`
act on one stored schedule. The first argument decides which: a subcommand's
name, else a PATH (a directory that has such a name is written ./pause).
"""

import json
import sys
from datetime import datetime, time as dtime, timedelta
from pathlib import Path

import click

from flowmetal.cli import CliError, EXIT_USAGE, cli, db_option, open_db
from flowmetal.clock import SYSTEM


def parse_when(text, what, base=None):
    """--from/--to: an ISO date or date-time (without an offset, in the machine's time zone),
    or a duration ("7d", "90m") counted from `base` (default now)."""
    from flowmetal.durations import parse_duration
    from flowmetal.schedule.cron import local_timezone

    try:
        if len(text) == 10:
            moment = datetime.combine(datetime.fromisoformat(text).date(), dtime())
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        try:
            return (SYSTEM.now() if base is None else base) + parse_duration(text, what)
        except ValueError:
            pass
        raise CliError(f"{what} {text!r}: expected an ISO date or date-time, like 2026-03-29 or "
                       f"2026-03-29T02:30 or 2026-03-29T02:30:00+02:00, or a duration like 7d") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=local_timezone())
    return moment.timestamp()


class PathsOrCommands(click.Group):
    """A group whose bare form takes PATHs: `schedule [PATH]... [OPTIONS]` or `schedule COMMAND ...`.

    When the first argument names a subcommand, the group's own parameters keep
    their defaults and the subcommand parses the rest; otherwise the group parses
    every argument itself (options may follow the paths) and runs its bare form.
    """

    def parse_args(self, ctx, args):
        if args and args[0] in self.commands:
            click.Command.parse_args(self, ctx, [])  # the bare form's parameters, at their defaults
            if isinstance(getattr(type(ctx), "protected_args", None), property):  # click >= 8.2
                ctx._protected_args, ctx.args = args[:1], args[1:]
            else:
                ctx.protected_args, ctx.args = args[:1], args[1:]
            return ctx.args
        return click.Command.parse_args(self, ctx, args)

    def collect_usage_pieces(self, ctx):
        return ["[PATH]... [OPTIONS]", "|", "COMMAND [ARGS]..."]


class _Paths(click.Argument):
    """The bare form's PATHs: shown by the group's own usage line, never in its subcommands'."""

    def get_usage_pieces(self, ctx):
        return []


@cli.group("schedule", cls=PathsOrCommands, invoke_without_command=True,
           context_settings={"allow_interspersed_args": True})
@click.argument("paths", nargs=-1, type=click.Path(), cls=_Paths)
@click.option("--concurrency", default=4, show_default=True, help="Runs executed at once.")
@click.option("--list", "list_", is_flag=True,
              help="Print each schedule under the PATHs: status, next fire times, last fire and its outcome, "
                   "skips and misses.")
@click.option("--json", "as_json", is_flag=True, help="With --list or --dry-run: one JSON document on stdout.")
@click.option("--once", is_flag=True, help="Fire what is due now, execute those runs, exit when they end.")
@click.option("--dry-run", is_flag=True, help="Print what would fire between --from and --to; start nothing.")
@click.option("--from", "from_", metavar="T", default=None,
              help="With --dry-run: window start, a date-time or a duration from now (default now).")
@click.option("--to", "to", metavar="T", default=None,
              help="With --dry-run: window end, a date-time or a duration after --from (default 1d).")
@click.option("--grace", default="10s", show_default=True,
              help="On SIGTERM/SIGINT, how long running effects may take to finish before runs are interrupted.")
@db_option
@click.pass_context
def schedule_command(ctx, paths, concurrency, list_, as_json, once, dry_run, from_, to, grace, db, root):
    """The cron replacement: load the schedules under PATHs (default .), fire them on time,
    and execute their runs. With a COMMAND: act on one stored schedule.

    Each fire is recorded once (never twice, even with two schedulers on one
    database); skips and misses are recorded with their reason. Edits to the
    files are picked up within a second or two (or on SIGHUP); a file that fails to
    load is reported as file:line:col and keeps its last good schedules, and so
    does a file read as empty (caught part way through a rewrite). SIGTERM or
    SIGINT stops firing, lets running effects finish within --grace and exits 0,
    leaving unfinished runs resumable. --list and --dry-run exit 2 when a file
    failed to load (after listing everything else).
    """
    if ctx.invoked_subcommand is not None:
        return
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


def _loaded(workspace):
    loaded = workspace.load()
    for diagnostics in loaded.broken.values():
        for d in diagnostics:
            click.echo(d.render(), err=True)
    return loaded


def _dry_run(root, paths, from_, to, as_json):
    from flowmetal.cli import render
    from flowmetal.lang.discovery import Workspace
    from flowmetal.schedule.views import preview

    start = parse_when(from_, "--from") if from_ else SYSTEM.now()
    end = parse_when(to, "--to", base=start) if to else start + timedelta(days=1).total_seconds()
    if end <= start:
        raise CliError("--to must be later than --from")
    loaded = _loaded(Workspace(root, paths))
    rows = preview(loaded.specs, start, end)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        render.fire_preview(rows)
        click.echo(f"{len(rows)} fire(s) of {len(loaded.specs)} schedule(s)", err=True)
    return EXIT_USAGE if loaded.broken else 0


def _list(store, root, paths, as_json):
    from flowmetal.cli import render
    from flowmetal.lang.discovery import Workspace
    from flowmetal.schedule.views import listing

    workspace = Workspace(root, paths)
    loaded = _loaded(workspace)
    rows = listing(store, loaded.specs, SYSTEM.now(), scope=workspace.in_scope)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        render.schedules_table(rows)
    return EXIT_USAGE if loaded.broken else 0


# --- commands on one stored schedule (the library functions are flowmetal.schedule.commands)

def _one(result, as_json, text):
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(text)


@schedule_command.command("pause")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@db_option
def pause_command(name, as_json, db, root):
    """Pause schedule NAME: its fire times pass, recorded as missed ("paused"), until `resume`.

    Runs already started go on; fires waiting in its overlap buffer are dropped.
    The pause is kept in the database: restarts and edits of the file keep it.
    """
    from flowmetal.schedule.commands import pause_schedule

    store, _ = open_db(db, root)
    r = pause_schedule(store, name, SYSTEM.now())
    _one(r, as_json, f"paused schedule {name} ({r['file']}:{r['line']})" if r["changed"]
         else f"schedule {name} was already paused")


@schedule_command.command("resume")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@db_option
def resume_command(name, as_json, db, root):
    """Resume paused schedule NAME from now on (the paused time is not caught up: see backfill)."""
    from flowmetal.schedule.commands import resume_schedule

    store, _ = open_db(db, root)
    r = resume_schedule(store, name, SYSTEM.now())
    _one(r, as_json, f"resumed schedule {name} ({r['file']}:{r['line']})" if r["changed"]
         else f"schedule {name} is not paused ({r['status']})")


@schedule_command.command("trigger")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@db_option
def trigger_command(name, as_json, db, root):
    """Start a run of schedule NAME now, recorded as a manual fire (whatever its overlap policy,
    paused or not). A running `flowmetal schedule` (or `flowmetal worker`) executes it."""
    from flowmetal.schedule.commands import trigger_schedule

    store, root = open_db(db, root)
    r = trigger_schedule(store, root, name, SYSTEM.now())
    _one(r, as_json, f"run {r['run_id']}\ntriggered schedule {name} at {r['fire_time']}")


@schedule_command.command("backfill")
@click.argument("name")
@click.option("--from", "from_", metavar="T", required=True,
              help="The first fire time to consider: a date-time (as --dry-run takes).")
@click.option("--to", "to", metavar="T", required=True,
              help="Fire times before this: a date-time, or a duration after --from (7d). Not in the future.")
@click.option("--dry-run", is_flag=True, help="Print what would be started; start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@db_option
def backfill_command(name, from_, to, dry_run, as_json, db, root):
    """Start a run of schedule NAME for each of its fire times from --from up to (not including)
    --to, each recorded as a fire ("backfill"). Fire times already started are left alone;
    missed or skipped ones are started. A running `flowmetal schedule` executes the runs."""
    from flowmetal.schedule.commands import backfill_schedule

    start = parse_when(from_, "--from")
    end = parse_when(to, "--to", base=start)
    store, root = open_db(db, root)
    rows = backfill_schedule(store, root, name, start, end, SYSTEM.now(), dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        run = f" run {r['run_id']}" if r["run_id"] else ""
        why = f" ({r['reason']})" if r["reason"] else ""
        click.echo(f"{r['fire_time']}  {r['action']}{run}{why}")
    started = sum(r["action"] in ("started", "would start") for r in rows)
    verb = "would start" if dry_run else "started"
    click.echo(f"{verb} {started} of {len(rows)} fire time(s) of {name}", err=True)


@cli.command("import-crontab")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="Write the .star file here (default: stdout).")
@click.option("--prefix", default="job", show_default=True,
              help="Schedules are named PREFIX-1, PREFIX-2, ... in the order of the crontab's jobs.")
@click.option("--system/--user", "system", default=None,
              help="Read FILE as a system crontab, whose sixth field is the user a job runs as "
                   "(default: --system for /etc/crontab and /etc/cron.d/*, else --user).")
@click.option("--strict", is_flag=True, help="Exit 1 if any line could not be translated (the output is still written).")
def import_crontab(file, output, prefix, system, strict):
    """Translate a crontab (FILE, or - for stdin) into a .star file of schedules.

    Each job becomes a function that runs the command with sh() and a
    schedule() that fires it, with cron's semantics (local time, no catch-up,
    overlapping runs allowed). A system crontab's jobs run as their user with
    runuser. Every line that cannot be translated (@reboot, MAILTO=address,
    invalid lines) is printed on stderr with its line number and reason, kept
    as a comment in the output, and counted in the summary.
    """
    import re

    from flowmetal.schedule.crontab import is_system_crontab, translate_crontab

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
    if system is None:
        system = file != "-" and is_system_crontab(Path(file).resolve())
    result = translate_crontab(text, source, prefix=prefix, system=system)
    for item in result.untranslated:
        click.echo(f"{source}:{item.line}: not translated: {item.reason}: {item.text}", err=True)
    if output is not None:
        try:
            Path(output).write_text(result.star, encoding="utf-8")
        except OSError as e:
            raise CliError(f"{output}: cannot write it: {e.strerror}") from None
    else:
        click.echo(result.star, nl=False)
    where = f"wrote {output}: " if output is not None else ""
    kind = " (a system crontab: jobs run as their user with runuser)" if system else ""
    click.echo(f"{where}{result.jobs} schedule(s), {len(result.untranslated)} line(s) not translated{kind}"
               + (f"; check it with: flowmetal check {output}" if output is not None else ""), err=True)
    if strict and result.untranslated:
        click.echo(f"--strict: {len(result.untranslated)} line(s) of {source} were not translated", err=True)
        sys.exit(1)
