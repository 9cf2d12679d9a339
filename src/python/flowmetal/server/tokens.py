"""Bearer tokens of the HTTP API: create, list, revoke, verify.

A token is `fm_<id>_<secret>`: `id` is 8 random characters that name the row
(looked up by the database index), `secret` 256 random bits. Only the SHA-256 of
the whole token is stored. A slow password hash (bcrypt, argon2) exists to make
guessing a *low-entropy* password from its hash expensive; a 256-bit random secret
cannot be guessed however fast the hash is, so one SHA-256 is enough and keeps every
request cheap. The stored and presented hashes are compared with
`hmac.compare_digest`, in constant time.

Scopes are ordered: read < write < admin; a token grants its scope and the ones below.
"""

import hashlib
import hmac
import re
import secrets

from flowmetal.clock import SYSTEM
from flowmetal.errors import NotFound, UserError

SCOPES = ("read", "write", "admin")
_FORMAT = re.compile(r"^fm_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TOUCH_EVERY = 60.0  # seconds: last_used_at is written at most this often per token


class DuplicateToken(UserError):
    """A token of that name exists (HTTP 409)."""

    http_status = 409


def token_hash(token):
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store, name, scope="read", now=None):
    """Store a new token's hash; return the token (shown once, never stored)."""
    if not _NAME.match(name or ""):
        raise UserError(f"token name {name!r}: use 1 to 64 letters, digits, '_', '.', '@', '-'")
    if scope not in SCOPES:
        raise UserError(f"scope {scope!r}: expected one of {', '.join(SCOPES)}")
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    token_id = "".join(secrets.choice(alphabet) for _ in range(8))
    token = f"fm_{token_id}_{secrets.token_urlsafe(32)}"
    row = {"id": token_id, "name": name, "scope": scope, "hash": token_hash(token),
           "created_at": SYSTEM.now() if now is None else now}
    if not store.insert_token(row):
        raise DuplicateToken(f"a token named {name!r} exists; revoke it first (flowmetal token revoke {name})")
    return token


def list_tokens(store):
    return store.list_tokens()


def revoke_token(store, name):
    if not store.delete_token(name):
        raise NotFound(f"no token named {name!r}")


def verify(store, presented, now=None):
    """The token row (name, scope, ...) the presented bearer token belongs to, or None."""
    m = _FORMAT.match(presented or "")
    if not m:
        return None
    row = store.get_token(m.group(1))
    if row is None or not hmac.compare_digest(row["hash"], token_hash(presented)):
        return None
    now = SYSTEM.now() if now is None else now
    if (row["last_used_at"] or 0) < now - TOUCH_EVERY:
        try:
            store.touch_token(row["id"], now)
        except Exception:  # a busy database must not turn a valid token away
            pass
    return row


def allows(scope, needed):
    return SCOPES.index(scope) >= SCOPES.index(needed)
