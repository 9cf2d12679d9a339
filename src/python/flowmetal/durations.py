"""Durations as users write them: seconds as numbers, or "90s", "10m", "1h30m", "2d"."""

import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value, what="duration"):
    """Return seconds as a float. Raises ValueError with a readable message."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of seconds or a string like \"90s\", got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{what} must not be negative, got {value!r}")
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and _PART.sub("", text) == "" and _PART.match(text):
            return float(sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))
        try:
            seconds = float(text)
        except ValueError:
            pass
        else:
            if seconds >= 0:
                return seconds
    raise ValueError(
        f"{what} must be a number of seconds or a string like \"90s\", \"10m\", \"1h30m\", \"2d\"; got {value!r}"
    )


def format_duration(seconds):
    """Short human form: 0.25s, 42s, 3m20s, 2h5m, 3d4h."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.2f}s".replace(".00s", "s")
    seconds = int(round(seconds))
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            major, rest = divmod(seconds, size)
            minor = rest // subsize
            return f"{major}{unit}{minor}{sub}" if minor else f"{major}{unit}"
    return f"{seconds}s"
