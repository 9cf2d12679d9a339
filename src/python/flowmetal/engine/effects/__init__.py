"""Effect implementations: plain functions that do one thing, each declared in the
registry (registry.py) with its kind, defaults and argument check.

Contract (every effect module follows it):

    @effect("name", KIND, params=..., validate=...)
    def perform(args: dict, ctx: EffectContext) -> ...

- `args` are the builtin's keyword arguments as JSON values, already checked
  by the effect's `validate` (once, by the gate); durations are still as the
  user wrote them (use `flowmetal.durations.parse_duration`).
- The return value is a JSON-able dict: the struct the workflow sees. Outcomes
  that are failures of the outside world (non-zero exit, HTTP 503, connection
  refused) are *results* with `ok = False` and an `error` text, never
  exceptions, so that retry and `check` can be decided by the journal gate.
- Raise `flowmetal.errors.EffectError` only for a call that can never succeed
  as written (a missing executable, a malformed URL).
- Effects never touch the store. They report log lines through `ctx.log`.
- `outcomes(result) -> list[str]` names what happened, for `retry_on`;
  `RETRY_ON` is the default list of outcome names that are retried;
  `retry_after(result) -> float | None` is a server-requested delay.
"""

import threading
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class EffectContext:
    run_id: str
    seq: int
    # Set when the run is cancelled or timed out: a long effect must stop promptly.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Secret values to mask (replace with "***") in anything the effect returns or logs.
    secrets: tuple = ()
    # log(stream, line): a line for the run's log ("stdout", "stderr", "log").
    log: Callable[[str, str], None] = lambda stream, line: None
    # For pure effects: the clock (now) and the run's row (run_info), read-only.
    clock: object = None
    run: dict = field(default_factory=dict)

    @property
    def idempotency_key(self):
        return f"{self.run_id}:{self.seq}"

    def mask(self, text):
        for value in self.secrets:
            if value:
                text = text.replace(value, "***")
        return text
