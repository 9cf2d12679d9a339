"""The `flowmetal` command group: exit codes, how errors are shown, and the options and
helpers every command shares (the database, strict JSON)."""

import json
import math
import os
import sys

import click

from flowmetal import __version__
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


class NoDatabase(CliError):
    """A command that needs recorded runs, where no database exists: none is created."""

    def __init__(self, path):
        super().__init__(f"no database at {path}: nothing has run with it yet "
                         f"(--db or FLOWMETAL_DB names another database)")
        self.path = path


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


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowmetal")
def cli():
    """Flowmetal: durable workflows in Starlark, and a cron replacement.

    Every effect a workflow performs is journaled to SQLite before the program
    sees its result, so a run survives crashes, restarts and long waits.
    """


def main():
    cli(prog_name="flowmetal")


# --- the database -------------------------------------------------------------


def db_option(f):
    f = click.option("--root", type=click.Path(file_okay=False), default=None,
                     help="Workspace root (default: nearest directory with a .flowmetal marker, else the current one).")(f)
    f = click.option("--db", "db", envvar="FLOWMETAL_DB", type=click.Path(dir_okay=False), default=None,
                     help="The database: a SQLite file path, or a postgresql:// URL (password in ~/.pgpass, not the URL). "
                          "Also FLOWMETAL_DB; default .flowmetal/flowmetal.db under the workspace root.")(f)
    return f


def db_location(db, root, paths=()):
    """(database path, workspace root) for --db/--root and the files named on the command line."""
    from flowmetal.lang.workspace import default_db_path, root_for

    root = root_for(paths, root)
    return (db if db is not None else default_db_path(root)), root


def open_db(db, root, paths=(), *, readonly=False, create=True):
    """Open the database; returns (store, workspace root).

    `create=False`: a database that does not exist is `NoDatabase`, and none is made.
    `readonly`: for commands that only read; the store takes no write lock when it opens,
    so it reads under WAL while another process writes.
    """
    from flowmetal.durations import parse_duration
    from flowmetal.store import open_store, private_dir

    path, root = db_location(db, root, paths)
    is_file = "://" not in path
    if is_file and not os.path.exists(path):
        if not create:
            raise NoDatabase(path)
        if db is None:
            private_dir(os.path.dirname(path))  # (0700: the database is private)
    busy = os.environ.get("FLOWMETAL_BUSY_TIMEOUT")
    try:
        busy = None if not busy else parse_duration(busy, "FLOWMETAL_BUSY_TIMEOUT")
    except ValueError as e:
        raise CliError(str(e))
    sync_full = os.environ.get("FLOWMETAL_SYNC") == "full"
    if readonly and is_file:
        from flowmetal.store.sqlite import SqliteStore  # open_store has no read-only path (yet)

        ms = None if busy is None else int(busy * 1000)
        return SqliteStore(path, synchronous_full=sync_full, busy_timeout_ms=ms, readonly=True), root
    return open_store(path, synchronous_full=sync_full, busy_timeout=busy), root


# --- JSON from the command line -------------------------------------------------


def _finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range (the largest is about 1.8e308)")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows (it has no NaN or Infinity)")


def loads_json(text, what):
    """Parse JSON typed by a user, strictly: NaN, Infinity and numbers too large for a
    float (1e999) are refused, as JSON itself refuses them. Errors are CliError naming `what`."""
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise CliError(f"{what} is not valid JSON: {e.msg} (line {e.lineno} column {e.colno})") from None
    except ValueError as e:  # from the hooks above, or an integer with too many digits
        raise CliError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise CliError(f"{what} is not valid JSON: nested too deeply") from None
