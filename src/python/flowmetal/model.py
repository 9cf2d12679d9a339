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


# --- a run -------------------------------------------------------------------


@dataclass
class Run:
    """One row of the runs table, typed: `state` is a RunState, `waiting_for` a WaitingFor.

    The engine works on these (`Run.from_row(store row)`). For the code that
    still reads rows as dicts, a Run also answers `run["id"]` and `run.get(...)`
    with the stored values (a state as its text, waiting_for as its JSON).
    """

    id: str
    file: str
    function: str
    args: str = "{}"
    posargs: str | None = None
    state: RunState = RunState.PENDING
    result: str | None = None
    error: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    updated_at: float | None = None
    root_dir: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    continued_from: str | None = None
    continued_as: str | None = None
    schedule: str | None = None
    fire_time: float | None = None
    waiting_for: WaitingFor | None = None
    wake_at: float | None = None
    deadline: float | None = None
    cancel_requested: str | None = None
    owner: str | None = None
    lease_expires: float | None = None
    executions: int = 0
    extra: dict = field(default_factory=dict)  # columns added later (e.g. the run's version)

    @classmethod
    def from_row(cls, row):
        if row is None or isinstance(row, Run):
            return row
        known = cls.__dataclass_fields__
        values = {k: v for k, v in row.items() if k in known and k != "extra"}
        values["state"] = RunState(values.get("state") or "pending")
        values["waiting_for"] = WaitingFor.from_json(values.get("waiting_for"))
        extra = {k: v for k, v in row.items() if k not in known}
        return cls(**values, extra=extra)

    @property
    def ended(self):
        return self.state.ended

    # mapping access, as the rows it replaces
    def __getitem__(self, key):
        if key in self.extra:
            return self.extra[key]
        if key not in self.__dataclass_fields__ or key == "extra":
            raise KeyError(key)
        value = getattr(self, key)
        if key == "state":
            return value.value
        if key == "waiting_for":
            return None if value is None else value.to_json()
        return value

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default


INTERNAL_ERROR = "internal error: "
"""How the error of a run that a bug of Flowmetal's failed begins (see lifecycle.fail_internal)."""


def is_internal_error(run):
    """Did a bug in Flowmetal (not the workflow) fail this run? `run`: a Run or a row."""
    return run is not None and run["state"] == "failed" and (run["error"] or "").startswith(INTERNAL_ERROR)


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


def stop_reason(stop):
    """The typed stop reason for `stop`, which may still be the gate's old tuple form
    (("suspend", waiting_for dict, wake_at), ("continue", kwargs), ("cancel", state),
    ("lost",), ("interrupt",), ("nondeterminism", message)). None stays None."""
    if stop is None or isinstance(stop, StopReason):
        return stop
    kind, *rest = stop
    if kind == "suspend":
        waiting_for, wake_at = rest
        if isinstance(waiting_for, dict):
            doc = dict(waiting_for)
            doc["runs"] = tuple(doc.get("runs", ()))
            waiting_for = WaitingFor(**{k: v for k, v in doc.items() if k in WaitingFor.__dataclass_fields__})
        return Suspend(waiting_for, wake_at)
    if kind == "continue":
        return Continue(rest[0])
    if kind == "cancel":
        return Cancel(rest[0])
    if kind == "lost":
        return Lost()
    if kind == "interrupt":
        return Interrupt()
    if kind == "nondeterminism":
        return Nondeterminism(rest[0])
    if kind == "end_of_journal":
        return EndOfJournal(rest[0])
    raise ValueError(f"unknown stop reason {stop!r}")


StopReason = Suspend | Continue | Cancel | Lost | Interrupt | Nondeterminism | EndOfJournal
