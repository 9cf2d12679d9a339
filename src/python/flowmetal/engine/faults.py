"""Named fault points: a testing hook that makes Flowmetal fail on purpose where a bug could.

`FLOWMETAL_FAULT` holds a comma-separated list of point names; at a named
point, `point(name)` raises `InjectedFault`. Unset (always, in production),
`point` costs one dictionary lookup. As DBOS's named fault points, they let a
test (a real subprocess of the CLI) show what a user sees when the engine
breaks there. Points:

- `execute`: inside an execution, after the run is claimed, before its code loads
  (an exception of ours: the run must fail with an internal error, not hang).
- `heartbeat`: in every beat of a worker's heartbeat (errors there are logged,
  rate-limited, and the worker goes on).
"""

import os


class InjectedFault(RuntimeError):
    """Raised at a fault point named in FLOWMETAL_FAULT."""


def point(name):
    faults = os.environ.get("FLOWMETAL_FAULT")
    if faults and name in faults.split(","):
        raise InjectedFault(f"fault injected at {name!r} (FLOWMETAL_FAULT)")
