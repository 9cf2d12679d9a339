"""Pure effects: values from the process itself, journaled so that replay sees the same.

The gate records each call and its value in one commit. `now()` is the hottest
builtin: the loader binds `_now_ns` straight to the gate (no prelude frame).
"""

import os

from flowmetal.engine.effects.registry import PURE, BuiltinError, check, effect, non_empty_name

# A secret shorter than this would mask unrelated text ("1" turns "a1 b1 100" into "a*** b*** ***00").
MIN_SECRET_LENGTH = 6


@effect("now", PURE, v1=())
def now(args, ctx):
    """Integer nanoseconds since the epoch (the prelude's now() divides)."""
    return ctx.clock.now_ns()


@effect("random", PURE, v1=())
def random(args, ctx):
    return ctx.clock.random()


@effect("uuid", PURE, v1=())
def uuid(args, ctx):
    return ctx.clock.uuid()


@effect("env", PURE, params={"default": None}, validate=non_empty_name("env"), v1=("name", "default"))
def env(args, ctx):
    return os.environ.get(args["name"], args.get("default"))


@effect("secret", PURE, validate=non_empty_name("secret"), v1=("name",), secret=True)
def secret(args, ctx):
    """The secret's value, from NAME or the file NAME_FILE names; never journaled (doc/effects.md)."""
    name = args["name"]
    value = os.environ.get(name)
    path = os.environ.get(name + "_FILE")
    if value is None and path:
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read().rstrip("\n")
        except OSError as e:
            raise BuiltinError(f"secret(): cannot read {name}_FILE={path}: {e.strerror}") from None
    if value is None:
        raise BuiltinError(f"secret(): environment variable {name} (or {name}_FILE) is not set")
    check(len(value) >= MIN_SECRET_LENGTH, "secret",
          f"the value of {name} is {len(value)} characters long; a secret must have at least "
          f"{MIN_SECRET_LENGTH}, or masking it would change unrelated text")
    return value


@effect("run_info", PURE)
def run_info(args, ctx):
    """The run's identity, as it was at the call's first execution."""
    run = ctx.run
    return {
        "id": run["id"],
        "target": f"{run['file']}:{run['function']}",
        "schedule": run.get("schedule"),
        "fire_time": run.get("fire_time"),
        "attempt": run.get("executions") or 1,
        "parent_id": run.get("parent_id"),
        "root_id": run.get("root_id") or run["id"],
        "continued_from": run.get("continued_from"),
    }
