"""Effects on the run tree: spawn a child, continue as a new run."""

from flowmetal.engine.effects.registry import CONTROL, ContinueAsNew, SpawnChild, check, effect


def _check_spawn(args):
    check(isinstance(args["function"], str), "spawn", "argument function must be a top-level function")


@effect("spawn", CONTROL, params={"args": [], "kwargs": {}}, validate=_check_spawn, v1=("function", "args", "kwargs"))
def spawn(args, ctx):
    return SpawnChild(args["function"], list(args.get("args") or []), dict(args.get("kwargs") or {}))


@effect("continue_as_new", CONTROL, params={"kwargs": {}}, v1=("kwargs",))
def continue_as_new(args, ctx):
    return ContinueAsNew(dict(args.get("kwargs") or {}))
