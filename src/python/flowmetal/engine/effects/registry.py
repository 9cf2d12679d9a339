"""The registry of effect builtins: each declared once, where it is implemented.

    @effect("sh", OUTSIDE, params={"env": {}, "cwd": None, ...}, validate=validate, v1=(...))
    def perform(args, ctx): ...

declares the builtin `sh`: its kind, its optional parameters with their
defaults, its argument check, and what performing it means. The journal gate
(engine/gate.py) dispatches every `_effect(name, args)` call of the prelude
from REGISTRY; adding a builtin is its module's declaration plus its prelude
line (doc/architecture.md, "The effect registry").

Kinds, and what `perform(args, ctx)` returns for each:

- PURE: the value itself (now, random, uuid, env, secret, run_info). The
  gate records call and value in one commit; replay returns the recorded value.
- OUTSIDE: the result dict of something done in the outside world (sh, http).
  Recorded as started before `perform`, completed after; performed again if
  the process died in between (at-least-once). With `retry = True` the gate
  runs the `retry =` policy using `outcomes`, `retry_after` and `retry_on`.
- WAIT: a wait request (Timer, SignalWait, ChildrenWait below); the gate
  records the wait as started and suspends the run until it has happened.
- DEFERRED: a Deferred request: a result that comes from outside the process
  (a callback URL being called, an outside worker finishing a task). The gate
  records a started entry whose `data` describes what it waits for
  ({"deferred": detail, "deadline": ...}) and suspends the run with
  WaitingFor(kind="effect", seq=..., builtin=..., detail=...); whoever
  completes the entry (complete_effect, issue 11 item 2) wakes the run, and
  replay returns the completed entry's result. No builtin has this kind yet:
  the server's callback()/task() will.
- CONTROL: a request about the run itself (SpawnChild, ContinueAsNew), which
  the gate carries out in one transaction with its journal entry.

Effects never see the store: only the gate writes the journal.

Digests (doc/architecture.md, "Digests"): rule 2 digests only the arguments
that differ from the declared default, so adding an optional parameter does
not change the digest of calls that do not pass it; rule 1, that of runs
recorded by release 0.1.0, digested the argument names listed in `v1`.
"""

from dataclasses import dataclass, field
from typing import Callable

from flowmetal.durations import parse_duration
from flowmetal.errors import BuiltinError  # noqa: F401  (re-exported: effect modules raise it)

PURE, OUTSIDE, WAIT, DEFERRED, CONTROL = "pure", "outside", "wait", "deferred", "control"
KINDS = (PURE, OUTSIDE, WAIT, DEFERRED, CONTROL)


@dataclass(frozen=True)
class Effect:
    name: str
    kind: str
    perform: Callable
    params: dict = field(default_factory=dict)  # optional parameters -> default
    validate: Callable | None = None  # validate(args) raises BuiltinError
    v1: tuple | None = None  # argument names digested by rule 1 (None: the builtin is newer than rule 1)
    retry: bool = False  # accepts `retry =` (outside effects)
    outcomes: Callable = lambda result: []
    retry_after: Callable = lambda result: None
    retry_on: tuple = ()
    secret: bool = False  # the value is a secret: read at every execution, never journaled


REGISTRY: dict = {}


def effect(name, kind, *, params=None, validate=None, v1=None, **options):
    """Declare builtin `name` with the decorated function as its `perform`."""
    if kind not in KINDS:
        raise ValueError(f"unknown effect kind {kind!r}")

    def register(perform):
        REGISTRY[name] = Effect(name, kind, perform, dict(params or {}), validate,
                                None if v1 is None else tuple(v1), **options)
        return perform

    return register


def lookup(name):
    eff = REGISTRY.get(name)
    if eff is None:
        _load_all()
        eff = REGISTRY.get(name)
        if eff is None:
            raise BuiltinError(f"unknown effect {name}()")
    return eff


def _load_all():
    """Import every effect module (each registers its builtins)."""
    from flowmetal.engine.effects import callbacks, children, http, pure, sh, tasks, waits  # noqa: F401


def _same(value, default):
    return type(value) is type(default) and value == default


def recorded_args(eff, args, rule):
    """The arguments of a call as the journal records (and digests) them under digest `rule`.

    Rule 2: every argument not equal to its declared default. Rule 1: the
    names of `eff.v1` whether passed or not (defaults filled in), as release
    0.1.0 recorded them, plus any other argument given a non-default value.
    """
    params = eff.params
    passed = {k: v for k, v in args.items() if k not in params or not _same(v, params[k])}
    if rule == 1 and eff.v1 is not None:
        old = {k: args.get(k, params.get(k)) for k in eff.v1}
        return {**old, **{k: v for k, v in passed.items() if k not in old}}
    return passed


# --- argument checks shared by effect modules ----------------------------------


def check(cond, builtin, message):
    if not cond:
        raise BuiltinError(f"{builtin}(): {message}")


def is_str_dict(value):
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def duration(builtin, arg, value, allow_none=True):
    """Seconds of a duration argument (None stays None when allowed)."""
    if value is None and allow_none:
        return None
    try:
        return parse_duration(value, f"argument {arg}")
    except ValueError as e:
        raise BuiltinError(f"{builtin}(): {e}") from None


def non_empty_name(builtin, arg="name"):
    def validate(args):
        check(isinstance(args[arg], str) and args[arg], builtin, f"argument {arg} must be a non-empty string")

    return validate


# --- what wait, deferred and control effects ask of the gate --------------------


@dataclass(frozen=True)
class Timer:
    """Wait `seconds` from the first execution's call (sleep)."""

    seconds: float


@dataclass(frozen=True)
class SignalWait:
    name: str
    timeout: float | None


@dataclass(frozen=True)
class ChildrenWait:
    """Wait until every child in `handles` has ended, or (any) one of them."""

    handles: tuple
    timeout: float | None
    any: bool = False


@dataclass(frozen=True)
class Deferred:
    """A result someone outside the process will deliver; `detail` says what it waits for."""

    detail: dict
    timeout: float | None = None
    wait: bool = True  # False: only create it (callback()); a later effect waits for it
    target: int | None = None  # wait for the deferred row created at this journal position


@dataclass(frozen=True)
class SpawnChild:
    ref: str
    args: list
    kwargs: dict


@dataclass(frozen=True)
class ContinueAsNew:
    kwargs: dict
