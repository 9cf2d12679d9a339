"""`flowmetal test`: run workflow tests (`*_test.star`) under a virtual clock with fakes."""

import sys

import click

from flowmetal.cli.app import EXIT_FAILED, EXIT_USAGE, cli, db_option, open_db


@cli.command("test")
@click.argument("paths", metavar="[PATH]...", nargs=-1)
@click.option("-k", "pattern", default=None, metavar="PATTERN",
              help="Only the tests whose FILE::NAME contains PATTERN (case-insensitive).")
@click.option("--junit", "junit", default=None, metavar="FILE", help="Also write the outcomes as JUnit XML.")
@click.option("--timeout", "timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="The wall time one test may take; a test past it fails and the next one runs.")
@click.option("--root", default=None, help="The workspace root (default: found from the current directory).")
def test_command(paths, pattern, junit, timeout, root):
    """Run every test_* function of the *_test.star files under PATH (default: .).

    Each test gets a fresh store, a virtual clock (sleeps, timeouts and retry
    delays take no time) and fakes for sh, http and task (t.mock_sh,
    t.mock_http, t.mock_task); callbacks are delivered with t.callback.
    Prints a dot per passing test, then each failure with its file:line; exits
    0 when every test passed, 1 when one failed, 2 when a file does not load.
    """
    from flowmetal.testing import report
    from flowmetal.testing.runner import run_tests

    def shown(outcome):
        click.echo(report.progress_char(outcome), nl=False)

    session = run_tests(paths, pattern=pattern, root=root, on_outcome=shown, timeout=timeout)
    if session.outcomes:
        click.echo()
    for outcome in session.failed:
        click.echo(report.failure_text(outcome))
    if not session.outcomes:
        click.echo("no tests found (test_* functions in *_test.star files)"
                   + (f" matching {pattern!r}" if pattern else ""), err=True)
    click.echo(report.summary(session))
    if junit:
        with open(junit, "w", encoding="utf-8") as f:
            f.write(report.junit_xml(session))
    if session.load_errors:
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_FAILED if session.failed or not session.outcomes else 0)


@cli.command("export")
@click.argument("run_ref", metavar="RUN")
@click.option("-o", "--output", "output", required=True, metavar="FILE",
              help="The journal file to write (name it *.journal.json to have flowmetal test replay it).")
@click.option("--description", default="", help="A line saying what the run shows.")
@db_option
def export_command(run_ref, output, description, db, root):
    """Write a run, its children, journals and pinned sources to one JSON file.

    `flowmetal replay --file FILE [--current]` replays it; `flowmetal test`
    replays every *.journal.json under its paths (golden journals).
    """
    from flowmetal.engine.journal_file import write_file

    store, _ = open_db(db, root, readonly=True, create=False)
    run = store.find_run(run_ref)
    count = write_file(store, run["id"], output, description)
    click.echo(f"run {run['id']} ({count} run(s)) written to {output}", err=True)
