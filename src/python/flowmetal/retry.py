"""Retry policy for effects: which failures are retried, and how long to wait.

Everything here is pure and deterministic (no clock, no randomness), so that
replaying a journal recomputes exactly the same decisions and delays.

- `attempts` counts every try, the first included: attempts = 3 means at most
  two retries. attempts = 1 means no retry.
- The wait after failed attempt n (1-based) is `initial * backoff**(n-1)`,
  capped at `max_delay`.
- Jitter (on by default) multiplies that wait by a factor in [0.5, 1.0]
  derived from a hash of the effect's key (its idempotency key
  `<run id>:<sequence>`) and the attempt number: stable across replays,
  different between effects so that retries do not stampede together.
- A server-requested delay (`Retry-After` on HTTP 429/503) is a floor: the
  wait is at least that long, but never longer than `max_delay` (the user's
  policy bounds every wait). It is not jittered.
- `retry_on` lists outcome names (see `KNOWN_OUTCOMES` and the patterns
  "exit:N", "signal:SIGNAME", "status:N"); None means the effect's default
  (`RETRY_ON` of its module). An empty list never retries. A cancelled effect
  is never retried.
"""

import hashlib
import math
import re
from dataclasses import dataclass

from flowmetal.durations import parse_duration

KNOWN_OUTCOMES = ("nonzero", "timeout", "signal", "connection", "429", "5xx", "4xx")
_PATTERNS = (
    (re.compile(r"exit:(\d{1,3})"), lambda m: 0 <= int(m.group(1)) <= 255),
    (re.compile(r"status:(\d{3})"), lambda m: 100 <= int(m.group(1)) <= 599),
    (re.compile(r"signal:SIG[A-Z0-9]+"), lambda m: True),
)
_FIELDS = ("attempts", "initial", "backoff", "max_delay", "jitter", "retry_on")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    initial: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: bool = True
    retry_on: tuple | None = None

    @classmethod
    def from_args(cls, args):
        """A validated policy from `retry_policy(...)` keyword arguments (None → defaults).

        Raises ValueError naming the bad argument.
        """
        if args is None:
            return cls()
        if not isinstance(args, dict):
            raise ValueError(f"retry must be a retry_policy(...), got {args!r}")
        unknown = sorted(set(args) - set(_FIELDS))
        if unknown:
            raise ValueError(f"retry_policy: unknown argument {unknown[0]!r}; expected one of {', '.join(_FIELDS)}")
        values = {}
        if args.get("attempts") is not None:
            attempts = args["attempts"]
            if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
                raise ValueError(f"retry_policy: attempts must be an integer >= 1, got {attempts!r}")
            values["attempts"] = attempts
        for name in ("initial", "max_delay"):
            if args.get(name) is not None:
                values[name] = parse_duration(args[name], f"retry_policy: {name}")
        if args.get("backoff") is not None:
            backoff = args["backoff"]
            if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not backoff >= 1:
                raise ValueError(f"retry_policy: backoff must be a number >= 1, got {backoff!r}")
            values["backoff"] = float(backoff)
        if args.get("jitter") is not None:
            if not isinstance(args["jitter"], bool):
                raise ValueError(f"retry_policy: jitter must be True or False, got {args['jitter']!r}")
            values["jitter"] = args["jitter"]
        if args.get("retry_on") is not None:
            values["retry_on"] = check_retry_on(args["retry_on"])
        return cls(**values)

    def to_dict(self):
        """The policy as a JSON-able dict of keyword arguments (for the journal); from_args reads it back."""
        args = {name: getattr(self, name) for name in _FIELDS}
        args["retry_on"] = None if self.retry_on is None else list(self.retry_on)
        return args


def check_retry_on(names):
    """Validate a `retry_on` list; return it as a tuple. Raises ValueError on an unknown name."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"retry_policy: retry_on must be a list of outcome names, got {names!r}")
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"retry_policy: retry_on must be a list of strings, got {name!r}")
        if name in KNOWN_OUTCOMES:
            continue
        if any((m := pattern.fullmatch(name)) and ok(m) for pattern, ok in _PATTERNS):
            continue
        raise ValueError(
            f"retry_policy: unknown outcome {name!r} in retry_on; known: {', '.join(KNOWN_OUTCOMES)}, "
            f"exit:N, signal:SIGNAME, status:N"
        )
    return tuple(names)


def should_retry(policy, outcomes, default_retry_on, attempt=None):
    """True when one of `outcomes` is in the policy's retry_on (or `default_retry_on`).

    With `attempt` (the 1-based number of the attempt that just failed), also
    False once the policy's attempts are used up.
    """
    if not outcomes or "cancelled" in outcomes:
        return False
    if attempt is not None and attempt >= policy.attempts:
        return False
    retry_on = default_retry_on if policy.retry_on is None else policy.retry_on
    return any(outcome in retry_on for outcome in outcomes)


def delay(policy, attempt, key, retry_after=None):
    """Seconds to wait after failed attempt `attempt` (1-based) of the effect with `key`."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt!r}")
    try:
        wait = policy.initial * policy.backoff ** (attempt - 1)
    except OverflowError:
        wait = math.inf
    wait = min(wait, policy.max_delay)
    if policy.jitter:
        wait *= jitter_factor(key, attempt)
    if retry_after is not None:
        wait = max(wait, min(float(retry_after), policy.max_delay))
    return wait


def jitter_factor(key, attempt):
    """A factor in [0.5, 1.0], the same for the same key and attempt on every machine."""
    digest = hashlib.sha256(f"{key}#{attempt}".encode("utf-8")).digest()
    return 0.5 + 0.5 * (int.from_bytes(digest[:8], "big") / 2**64)
