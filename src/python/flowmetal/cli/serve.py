"""`flowmetal serve`: the HTTP API, a worker and the scheduler in one process."""

import os
import sys
from pathlib import Path

import click

from flowmetal.cli import CliError, cli, db_option, open_db


@cli.command("serve")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--listen", default="127.0.0.1:8420", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (port 0: any free port, printed at start).")
@click.option("--public-url", default=None, metavar="URL",
              help="The URL clients reach this server at (behind a proxy), used in links it hands out.")
@click.option("--no-worker", is_flag=True, help="Do not execute runs here (other workers do).")
@click.option("--no-scheduler", is_flag=True, help="Do not fire the schedules under PATHs.")
@click.option("--concurrency", default=4, show_default=True, help="Runs executed at once by the worker.")
@click.option("--grace", default="10s", show_default=True,
              help="On SIGTERM/SIGINT, how long requests and running effects may take to finish.")
@click.option("--allow-remote", is_flag=True,
              help="Allow listening on a non-loopback address. Tokens travel in clear text: put a "
                   "TLS-terminating proxy in front.")
@db_option
def serve_command(paths, listen, public_url, no_worker, no_scheduler, concurrency, grace, allow_remote, db, root):
    """Serve the JSON API under /api/v1 (with /healthz and /metrics), execute runs as
    `flowmetal worker` does, and fire the schedules under PATHs (default .) as
    `flowmetal schedule` does.

    Every /api/ request needs a token: flowmetal token create NAME --scope read|write|admin.
    SIGTERM or SIGINT stops accepting connections, lets requests and running effects
    finish within --grace, and exits 0; unfinished runs stay resumable.
    """
    from flowmetal.durations import parse_duration
    from flowmetal.server.runner import bind, is_loopback, parse_listen

    try:
        host, port = parse_listen(listen)
        grace_seconds = parse_duration(grace, "--grace")
    except ValueError as e:
        raise CliError(str(e)) from None
    if not is_loopback(host) and not allow_remote:
        raise CliError(f"--listen {listen}: not a loopback address. Bearer tokens would cross the network "
                       f"in clear text; put a TLS-terminating proxy in front and pass --allow-remote")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise CliError(f"--public-url {public_url!r}: expected an http:// or https:// URL")
    paths = paths or (".",)
    for p in paths:
        if not Path(p).exists():
            raise CliError(f"{p}: no such file or directory")
    store, root = open_db(db, root, paths)
    try:
        sock = bind(host, port)
    except OSError as e:
        raise CliError(str(e)) from None

    from flowmetal.cli.render import schedule_event, worker_event
    from flowmetal.clock import SYSTEM
    from flowmetal.server.app import create_app
    from flowmetal.server.notify import Changes
    from flowmetal.server.runner import Background, serve

    changes = Changes(store)  # a run of this process's worker ended: long polls and live logs answer at once

    def on_worker_event(kind, run, *rest):
        worker_event(kind, run, *rest)
        if kind == "end":
            changes.notify()

    def on_schedule_event(kind, **fields):
        schedule_event(kind, **fields)
        if kind == "end":
            changes.notify()

    background = Background(store, root, paths, worker=not no_worker, scheduler=not no_scheduler,
                            concurrency=concurrency, grace=grace_seconds, schedule_event=on_schedule_event,
                            worker_event=on_worker_event)
    options = {"public_url": public_url, "worker": not no_worker, "scheduler": not no_scheduler}
    app, ctx = create_app(store, SYSTEM, root, options=options, schedule_specs=background.specs,
                          changes=changes, wake=background.wake)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
    # where callback() URLs point (engine/deferred.py reads it in the embedded worker)
    os.environ["FLOWMETAL_PUBLIC_URL"] = public_url or os.environ.get("FLOWMETAL_PUBLIC_URL") or url
    parts = [p for p, on in (("worker", not no_worker), ("scheduler", not no_scheduler)) if on]
    say = lambda text: click.echo(text, err=True)  # noqa: E731
    say(f"flowmetal serve: listening on {url} (API {url}/api/v1, {' and '.join(parts) or 'API only'}; "
        f"database {store.path})")
    if not is_loopback(host):
        say("warning: listening on a non-loopback address; bearer tokens are sent in clear text unless "
            "a TLS-terminating proxy is in front")
    if store.count_tokens() == 0:
        say("no API token exists yet, so every /api/ request gets 401. Make one (it is printed once):\n"
            "  flowmetal token create NAME --scope admin")
    sys.exit(serve(app, ctx, background, sock, grace=grace_seconds, say=say))
