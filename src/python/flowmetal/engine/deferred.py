"""Completing deferred effects: a result delivered from outside the process.

A deferred effect (kind DEFERRED in effects/registry.py, e.g. `task()`) is
recorded by the gate as a started journal entry plus a row of the `deferred`
table describing what it waits for, in one transaction; the run then suspends
holding nothing (state waiting, no owner, WaitingFor(kind="effect", seq=...)).

`complete_effect(store, run_id, seq, result=None, error=None)`, callable from
any process, completes that row exactly once and makes the run due, in one
transaction. The run's next execution finds the completed row and records its
result in the journal (only the run's owner writes the journal).
"""

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from flowmetal.clock import SYSTEM
from flowmetal.codec import canonical, content_hash, loads  # noqa: F401 (loads: for the routes)
from flowmetal.errors import UserError

COMPLETED, DUPLICATE, CONFLICT, EXPIRED, VOID, UNKNOWN = (
    "completed", "duplicate", "conflict", "expired", "void", "unknown")


@dataclass(frozen=True)
class Completion:
    """What a completion did. `outcome`: completed (this call won), duplicate (already
    completed with this same payload: nothing changed), conflict (already completed with a
    different payload: nothing changed), expired (its deadline passed), void (its run has
    ended), unknown (no such deferred effect). `message` says it in a sentence."""

    outcome: str
    message: str

    @property
    def ok(self):
        return self.outcome in (COMPLETED, DUPLICATE)


def payload_hash(result, error):
    return content_hash(canonical({"error": error, "result": result}))


def complete_effect(store, run_id, seq, result=None, error=None, clock=None):
    """Complete the deferred effect at journal position `seq` of run `run_id` with `result`
    (a JSON value) or `error` (a string: the effect failed). The first completion wins and
    wakes the run; a later one changes nothing and says so. Returns a Completion."""
    clock = clock or store.clock or SYSTEM
    if error is not None and not isinstance(error, str):
        raise TypeError("complete_effect: error must be a string")
    text = canonical(result)  # (raises on a value JSON cannot hold)
    digest = payload_hash(loads(text), error)
    where = f"deferred effect {run_id}:{seq}"
    with store.transaction():
        now = clock.now()
        if store.complete_deferred(run_id, seq, text, error, digest, now):
            store.wake(run_id)
            return Completion(COMPLETED, f"{where} completed")
        row = store.get_deferred(run_id, seq)
        if row is None:
            return Completion(UNKNOWN, f"no {where}")
        if row["state"] == "completed":
            if row["payload_hash"] == digest:
                return Completion(DUPLICATE, f"{where} already completed (with the same payload)")
            return Completion(CONFLICT, f"{where} already completed with a different payload")
        if row["state"] == "expired" or (row["deadline"] is not None and now >= row["deadline"]):
            return Completion(EXPIRED, f"{where} expired")
        run = store.get_run(run_id)
        state = run["state"] if run else "gone"
        return Completion(VOID, f"{where} is void: its run has ended ({state})")


def is_done(store, run_id, seq):
    """Has the deferred row been completed (so a run about to wait for it is due at once)?"""
    row = store.get_deferred(run_id, seq)
    return row is not None and row["state"] == "completed"


# --- callbacks: a URL whose call completes the row -------------------------------
#
# The token of a callback URL is HMAC-SHA256(server secret, "callback:<run id>:<seq>"),
# base64url (256 bits). The journal records the callback without its URL; every
# execution derives the same URL again, and the `deferred` row keeps only the
# token's SHA-256 to find it. The secret is a file, never in the database: the file
# FLOWMETAL_SECRET_FILE names (on PostgreSQL it must: the same file on every machine, so a
# run replayed on another machine derives the same URL), or, on SQLite, `secret` next to
# the database (`.flowmetal/secret`), created 0600 with 32 random bytes.

SECRET_FILE = "secret"


def secret_path(store):
    """The server secret's file for `store` (see above); UserError if there is none."""
    named = os.environ.get("FLOWMETAL_SECRET_FILE")
    if named:
        return named
    path = getattr(store, "path", None) or ""
    if "://" in path:
        raise UserError("callback URLs on PostgreSQL need FLOWMETAL_SECRET_FILE: the path of a file holding "
                        "the server secret, the same on every machine (doc/operations.md, 'Callback secret')")
    return os.path.join(os.path.dirname(os.path.abspath(path)), SECRET_FILE)


def store_secret(store):
    """The server secret callback URLs of runs in `store` are derived from."""
    return read_secret(secret_path(store))
PUBLIC_URL = "http://127.0.0.1:8420"  # `flowmetal serve`'s default listen address


def server_secret(directory):
    """The server secret in `directory`, created (0600, 32 random bytes) if missing."""
    return read_secret(os.path.join(directory, SECRET_FILE))


def read_secret(path):
    """The server secret in the file `path`, created (0600, 32 random bytes) if missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    for _ in range(100):  # (another process may be writing it this very moment)
        with open(path) as f:
            text = f.read().strip()
        if len(text) == 64:
            return bytes.fromhex(text)
        SYSTEM.sleep(0.01)  # (real time: waiting for another process)
    raise OSError(f"the server secret {path} is malformed")


def callback_token(secret, run_id, seq):
    mac = hmac.new(secret, f"callback:{run_id}:{seq}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def public_url():
    """Where callback URLs point: FLOWMETAL_PUBLIC_URL (`flowmetal serve --public-url` sets it)."""
    return (os.environ.get("FLOWMETAL_PUBLIC_URL") or PUBLIC_URL).rstrip("/")


def complete_callback(store, token, payload, clock=None):
    """Complete the callback whose URL token is `token` with `payload`: a Completion
    (unknown when no callback has this token)."""
    row = store.deferred_by_token(token_hash(token)) if isinstance(token, str) and token else None
    if row is None:
        return Completion(UNKNOWN, "no such callback")
    return complete_effect(store, row["run_id"], row["seq"], result=payload, clock=clock)
