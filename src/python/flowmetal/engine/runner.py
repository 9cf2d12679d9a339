"""Executing one claimed run: load its pinned code, call its function through
the gate, and record how the execution ended (completed, failed, waiting...).
"""

import json

import starlark as sl

from flowmetal.codec import canonical
from flowmetal.engine import runs as run_ops
from flowmetal.engine.gate import Gate, Stop, mask
from flowmetal.errors import LoadError, UserError
from flowmetal.lang.diagnostics import strip_prelude_frames
from flowmetal.ids import new_run_id
from flowmetal.lang.loader import Program, top_level_functions
from flowmetal.lang.safe import guard
from flowmetal.lang.workspace import PinnedSources
from flowmetal.model import Cancel, Continue, Interrupt, Nondeterminism, Suspend
from flowmetal.store.base import ENDED

MAX_CALLSTACK = 500


def error_text(traceback):
    """A failed run's error: its one-line message first, then the Starlark traceback."""
    traceback = traceback.strip()
    message = next((ln[len("error: "):] for ln in traceback.splitlines() if ln.startswith("error: ")), None)
    return f"{message}\n{traceback}" if message else traceback


class Hooks:
    """What the gate may ask of the engine: child runs."""

    def __init__(self, store, clock):
        self.store, self.clock = store, clock

    def spawn_child(self, gate, seq, ref, args, kwargs):
        file, function = run_ops.resolve_ref(ref)
        sources = gate.store.pinned_sources(gate.run_id)
        if file not in sources:
            raise UserError(f"spawn(): {file} is not part of this run's code")
        if function not in top_level_functions(sources[file]):
            raise UserError(f"spawn(): {function} is not a top-level function of {file}")
        return run_ops.create_run(
            self.store, self.clock, file=file, function=function, args=kwargs, posargs=args,
            texts=gate.run_id, root_dir=gate.run["root_dir"], parent_id=gate.run_id,
            root_id=gate.run["root_id"], run_id=new_run_id(self.clock.now()),
        )

    def child_results(self, gate, handles):
        out = []
        for h in handles:
            child = self.store.get_run(h)
            if child is None or child["parent_id"] != gate.run_id:
                raise UserError(f"wait(): {h!r} is not a child run of this run")
            out.append(run_ops.child_result(run_ops.last_incarnation(self.store, child)))
        return out


class Execution:
    """One attempt at executing a run, from replay to the point where it stops."""

    def __init__(self, store, run, owner, clock):
        self.store, self.run, self.owner, self.clock = store, run, owner, clock
        self.gate = Gate(store, run, owner, clock, Hooks(store, clock))

    def execute(self):
        """Returns the state the run is left in."""
        run, gate = self.run, self.gate
        if run["deadline"] is not None and self.clock.now() >= run["deadline"]:
            return self._end("timed_out", error="timed out")
        if run["cancel_requested"]:
            return self._end(run["cancel_requested"], error=run["cancel_requested"].replace("_", " "))
        texts = self.texts = self.store.pinned_sources(run["id"])
        program = Program(PinnedSources(texts), effect=gate.effect, log=gate.log)
        options = sl.EvalOptions(check_cancelled=gate.cancel.is_set, max_callstack_size=MAX_CALLSTACK)
        try:
            try:
                # secrets passed by name ({"$secret": NAME}) are read here, from this process's environment
                kwargs = gate.resolve_args(json.loads(run["args"]))
                posargs = gate.resolve_args(json.loads(run["posargs"])) if run.get("posargs") else []
                module = program.load(run["file"])
                if not program.function_exists(run["file"], run["function"]):
                    raise UserError(f"{run['file']} has no top-level function {run['function']!r}")
                program.phase = "execution"
                value = guard(module.call_with, options, run["function"], *posargs, **kwargs).value  # panics: UserError
            finally:
                module = None
                program.close()
        except LoadError as e:
            return self._end("failed", error="\n".join(d.render() for d in e.diagnostics) or str(e))
        except UserError as e:
            return self._end("failed", error=str(e))
        except (sl.StarlarkError, Stop) as e:
            return self._stopped(e)
        try:
            result = canonical(value)
        except (TypeError, ValueError):
            return self._end("failed", error=f"the result of {run['function']}() is not a JSON value: {value!r}")
        return self._end("completed", result=result)

    def _stopped(self, error):
        stop = self.gate.stop
        if stop is None:
            if self.gate.cancel.is_set():  # check_cancelled stopped a pure Starlark loop
                reason = self.gate.cancel_reason or "cancelled"
                if reason == "interrupt":
                    return "interrupted"
                return self._end(reason, error=reason.replace("_", " "))
            return self._end("failed", error=error_text(strip_prelude_frames(str(error), self.texts.__getitem__)))
        if isinstance(stop, Suspend):
            return self._suspend(stop.waiting_for, stop.wake_at)
        if isinstance(stop, Continue):
            return self._continue(stop.kwargs)
        if isinstance(stop, Cancel):
            return self._end(stop.state, error=stop.state.replace("_", " "))
        if isinstance(stop, Nondeterminism):
            return self._end("failed", error=stop.message)
        if isinstance(stop, Interrupt):
            # Leave the run resumable: still 'running' but with no live owner.
            self.store.update_run(self.run["id"], if_owner=self.owner, lease_expires=0)
            return "interrupted"
        return "lost"  # another process owns the run now

    def _suspend(self, waiting_for, wake_at):
        run, store, now = self.run, self.store, self.clock.now()
        if run["deadline"] is not None:
            wake_at = run["deadline"] if wake_at is None else min(wake_at, run["deadline"])
        with store.transaction():
            if waiting_for.kind == "signal":
                if store.has_signal(run["id"], waiting_for.name):
                    wake_at = now
            elif waiting_for.kind == "children":  # (any or all: one more ended child is worth a look)
                states = [store.get_run(c)["state"] for c in waiting_for.runs]
                if any(s in ENDED for s in states):
                    wake_at = now
            fresh = store.get_run(run["id"])
            if fresh["cancel_requested"]:
                wake_at = now
            ok = store.update_run(run["id"], if_owner=self.owner, state="waiting", owner=None,
                                  waiting_for=waiting_for.to_json(), wake_at=wake_at, lease_expires=None)
        return "waiting" if ok else "lost"

    def _continue(self, kwargs):
        run, store = self.run, self.store
        with store.transaction():
            new_id = run_ops.create_run(
                store, self.clock, file=run["file"], function=run["function"], args=kwargs, texts=run["id"],
                root_dir=run["root_dir"], parent_id=run["parent_id"], root_id=run["root_id"],
                continued_from=run["id"], schedule=run["schedule"], fire_time=run["fire_time"],
            )
            state = self._end("completed", result="null", continued_as=new_id)
        return state

    def _end(self, state, result=None, error=None, **extra):
        store, run = self.store, self.run
        if self.gate.secrets:  # a secret never reaches the database, not even in an error
            error = mask(error, self.gate.secrets)
            result = mask(result, self.gate.secrets)
        with store.transaction():
            ok = store.update_run(run["id"], if_owner=self.owner, state=state, result=result, error=error,
                                  ended_at=self.clock.now(), owner=None, waiting_for=None, wake_at=None,
                                  lease_expires=None, **extra)
            if not ok:
                return "lost"
            # Children do not outlive their parent (as Temporal's default parent-close policy).
            for child in store.descendants(run["id"]):
                run_ops._cancel_one(store, self.clock, child, "cancelled")
            run_ops.notify_parent(store, self.clock, run)
        return state
