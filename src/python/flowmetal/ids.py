"""Run ids: short, unique, time-sortable (milliseconds + randomness, Crockford base32)."""

import secrets

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(number, width):
    out = []
    for _ in range(width):
        number, r = divmod(number, 32)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_run_id(now=None, clock=None):
    """An id for a run created at `now` (default: `clock`'s time); its random part comes
    from `clock.random()` when the clock has one (a virtual clock makes ids repeatable)."""
    if now is None:
        from flowmetal.clock import SYSTEM

        now = (clock or SYSTEM).now()
    rand = getattr(clock, "random", None)
    bits = int(rand() * (1 << 25)) if rand is not None else secrets.randbits(25)
    return _b32(int(now * 1000), 9) + _b32(bits, 5)
