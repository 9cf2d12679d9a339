"""`flowmetal token create|list|revoke`: bearer tokens of the HTTP API."""

import json

import click

from flowmetal.cli import cli, db_option, open_db


@cli.group("token")
def token_group():
    """Bearer tokens for `flowmetal serve`. Only their hashes are stored."""


@token_group.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), default="read", show_default=True,
              help="read: GET; write: also start, signal and cancel runs; admin: also schedules and tokens.")
@db_option
def token_create(name, scope, db, root):
    """Make a token NAME and print it on stdout, once: it cannot be shown again."""
    from flowmetal.server.tokens import create_token

    store, _ = open_db(db, root)
    click.echo(create_token(store, name, scope))
    click.echo(f"token {name} ({scope}) created; it is shown only now", err=True)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@db_option
def token_list(as_json, db, root):
    """List the tokens: name, scope, when created and last used (never the token)."""
    from flowmetal.cli.render import when
    from flowmetal.server.tokens import list_tokens

    store, _ = open_db(db, root)
    rows = list_tokens(store)
    if as_json:
        click.echo(json.dumps([{k: r[k] for k in ("name", "scope", "created_at", "last_used_at")} for r in rows],
                              indent=2))
        return
    for r in rows:
        used = when(r["last_used_at"]) if r["last_used_at"] else "never used"
        click.echo(f"{r['name']:<24} {r['scope']:<6} created {when(r['created_at'])}  last used {used}")
    if not rows:
        click.echo("no tokens; make one with: flowmetal token create NAME --scope read|write|admin", err=True)


@token_group.command("revoke")
@click.argument("name")
@db_option
def token_revoke(name, db, root):
    """Delete token NAME: requests with it get 401 from now on."""
    from flowmetal.server.tokens import revoke_token

    store, _ = open_db(db, root)
    revoke_token(store, name)
    click.echo(f"token {name} revoked", err=True)
