"""Run ids: short, unique, time-sortable (milliseconds + randomness, Crockford base32)."""

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(number, width):
    out = []
    for _ in range(width):
        number, r = divmod(number, 32)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_run_id(now=None):
    ms = int((time.time() if now is None else now) * 1000)
    return _b32(ms, 9) + _b32(secrets.randbits(25), 5)
