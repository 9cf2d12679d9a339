"""Plain data of the engine: run states, what a run waits for, and why an execution stopped.

Nothing here reads the clock, the store or Starlark: these are the words the
gate, the runner, the store and the CLI use to talk about a run's life.
"""

import json
from dataclasses import asdict, dataclass, field
from enum import Enum


class RunState(str, Enum):
    """A run's state (SPEC section 3). A `str`, so it compares equal to the stored text."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    def __str__(self):
        return self.value

    @property
    def ended(self):
        return self in ENDED_STATES


ENDED_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED, RunState.TIMED_OUT})


@dataclass(frozen=True)
class WaitingFor:
    """What a waiting run waits for; stored as JSON in the run's `waiting_for` column.

    kind: "timer" (a sleep or a retry delay; `builtin` names which), "signal"
    (`name`), "children" (`runs`, and `any` when one ended child is enough) or
    "effect" (a deferred effect at journal position `seq`, e.g. a callback or a
    task, described by `builtin` and `detail`). `until` is the deadline (epoch
    seconds) after which the wait ends anyway, or None.
    """

    kind: str
    until: float | None = None
    builtin: str | None = None
    name: str | None = None
    runs: tuple = ()
    any: bool = False
    seq: int | None = None
    detail: dict = field(default_factory=dict)

    def to_json(self):
        doc = {k: v for k, v in asdict(self).items() if v not in (None, (), [], {}, False)}
        doc["kind"] = self.kind
        if "runs" in doc:
            doc["runs"] = list(doc["runs"])
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text):
        """The WaitingFor stored in a run row (None when the run waits for nothing)."""
        if not text:
            return None
        doc = json.loads(text)
        if not doc:
            return None
        doc["runs"] = tuple(doc.get("runs", ()))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})


# --- why an execution stopped ------------------------------------------------
#
# The gate sets one of these as `gate.stop` and raises through the Starlark
# evaluation; the runner turns it into the run's next state.


@dataclass(frozen=True)
class Suspend:
    """The run waits for something that has not happened yet."""

    waiting_for: WaitingFor
    wake_at: float | None


@dataclass(frozen=True)
class Continue:
    """continue_as_new(**kwargs): end this run, start a fresh one with these arguments."""

    kwargs: dict


@dataclass(frozen=True)
class Cancel:
    """The run was cancelled or timed out from outside; `state` is cancelled or timed_out."""

    state: str


@dataclass(frozen=True)
class Lost:
    """Another process owns the run now: change nothing."""


@dataclass(frozen=True)
class Interrupt:
    """Ctrl-C or a drain: stop before the next effect, leave the run resumable."""


@dataclass(frozen=True)
class Nondeterminism:
    """Replay met a call that differs from the journal; `message` names position and both calls."""

    message: str


@dataclass(frozen=True)
class EndOfJournal:
    """Replay without effects reached the end of the recorded journal (`seq` entries)."""

    seq: int


StopReason = Suspend | Continue | Cancel | Lost | Interrupt | Nondeterminism | EndOfJournal
