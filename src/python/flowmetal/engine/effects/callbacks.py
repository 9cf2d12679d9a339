"""callback() and wait_callback(): a single-use URL whose call delivers a JSON payload.

`callback()` is a deferred effect that only creates its `deferred` row (with the
hash of its URL token) and returns at once; `wait_callback(cb)` waits for that
row to be completed (engine/deferred.py: complete_callback, the server's
POST /callbacks/{token}). The URL's token is derived, never stored: see
engine/deferred.py, callback_token.
"""

from flowmetal.engine.effects.registry import DEFERRED, Deferred, check, duration, effect


def _check_callback(args):
    name = args.get("name")
    check(name is None or isinstance(name, str), "callback", "argument name must be a string or None")
    duration("callback", "timeout", args.get("timeout"))
    check(isinstance(args.get("approval", False), bool), "callback", "argument approval must be True or False")


@effect("callback", DEFERRED, params={"name": None, "timeout": None, "approval": False}, validate=_check_callback)
def callback(args, ctx):
    return Deferred({"callback": args.get("name"), "approval": bool(args.get("approval", False))},
                    duration("callback", "timeout", args.get("timeout")), wait=False)


def _check_wait_callback(args):
    check(isinstance(args["callback"], int) and args["callback"] > 0, "wait_callback",
          "argument cb must be a callback returned by callback()")
    duration("wait_callback", "timeout", args.get("timeout"))


@effect("wait_callback", DEFERRED, params={"timeout": None}, validate=_check_wait_callback)
def wait_callback(args, ctx):
    return Deferred({"wait": args["callback"]}, duration("wait_callback", "timeout", args.get("timeout")),
                    target=args["callback"])
