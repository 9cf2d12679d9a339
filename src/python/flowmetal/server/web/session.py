"""Browser sessions of the web view.

Logging in presents an API bearer token (`flowmetal token create NAME --scope ...`).
The server answers with a random session id in an HttpOnly, SameSite=Strict cookie;
it keeps only the SHA-256 of that id, in this process's memory, with the token's id,
the token's stored hash, its scope, a CSRF secret and an expiry. Nothing is written to
the database, so a restart of `flowmetal serve` ends every session (log in again) and
no session secret can leak from a database copy. Each request re-reads the token's
row: revoking the token (`flowmetal token revoke`) ends its sessions at once.
"""

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from flowmetal.server import tokens

COOKIE = "fm_session"
LOGIN_CSRF_COOKIE = "fm_login_csrf"
LIFETIME = 12 * 3600.0
MAX_SESSIONS = 10_000


def _digest(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Session:
    token_id: str
    token_hash: str
    name: str
    scope: str
    csrf: str
    expires: float

    def allows(self, needed):
        return tokens.allows(self.scope, needed)

    def csrf_ok(self, presented):
        return bool(presented) and hmac.compare_digest(self.csrf, presented)


class Sessions:
    def __init__(self, lifetime=LIFETIME):
        self.lifetime = lifetime
        self._by_hash = {}
        self._lock = threading.Lock()

    def login(self, store, presented):
        """A new session id for a valid token, or None."""
        row = tokens.verify(store, (presented or "").strip())
        if row is None:
            return None
        sid = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._by_hash = {h: s for h, s in self._by_hash.items() if s.expires > now}
            if len(self._by_hash) >= MAX_SESSIONS:  # the oldest go first
                for h in sorted(self._by_hash, key=lambda h: self._by_hash[h].expires)[:len(self._by_hash) // 10]:
                    del self._by_hash[h]
            self._by_hash[_digest(sid)] = Session(row["id"], row["hash"], row["name"], row["scope"],
                                                  secrets.token_urlsafe(24), now + self.lifetime)
        return sid

    def get(self, store, sid):
        """The live session of cookie value `sid`, or None (unknown, expired, token revoked)."""
        if not sid:
            return None
        key = _digest(sid)
        with self._lock:
            session = self._by_hash.get(key)
        if session is None:
            return None
        if session.expires <= time.time():
            self.logout(sid)
            return None
        row = store.get_token(session.token_id)
        if row is None or not hmac.compare_digest(row["hash"], session.token_hash):
            self.logout(sid)
            return None
        return session

    def logout(self, sid):
        with self._lock:
            self._by_hash.pop(_digest(sid or ""), None)
