"""Waits: sleep, wait_signal and wait (for children). Each returns what to wait for;
the gate records the wait and suspends the run until it has happened."""

from flowmetal.durations import parse_duration
from flowmetal.engine.effects.registry import (
    WAIT, ChildrenWait, SignalWait, Timer, check, duration, effect, non_empty_name,
)


def _check_sleep(args):
    duration("sleep", "duration", args["duration"], allow_none=False)


@effect("sleep", WAIT, validate=_check_sleep, v1=("duration",))
def sleep(args, ctx):
    return Timer(parse_duration(args["duration"]))


def _check_wait_signal(args):
    non_empty_name("wait_signal")(args)
    duration("wait_signal", "timeout", args.get("timeout"))


@effect("wait_signal", WAIT, params={"timeout": None}, validate=_check_wait_signal, v1=("name", "timeout"))
def wait_signal(args, ctx):
    return SignalWait(args["name"], duration("wait_signal", "timeout", args.get("timeout")))


def _check_wait(args):
    check(isinstance(args["handles"], list) and all(isinstance(h, str) for h in args["handles"]), "wait",
          "argument handles must be a handle returned by spawn() or a list of them")
    check(isinstance(args.get("any", False), bool), "wait", "argument any must be True or False")
    duration("wait", "timeout", args.get("timeout"))


@effect("wait", WAIT, params={"timeout": None, "any": False}, validate=_check_wait, v1=("handles", "timeout"))
def wait(args, ctx):
    return ChildrenWait(tuple(args["handles"]), duration("wait", "timeout", args.get("timeout")),
                        bool(args.get("any", False)))
