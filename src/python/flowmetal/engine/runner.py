"""Executing one claimed run: load its pinned code, call its function through
the gate, and record how the execution ended (completed, failed, waiting...).

The gate says why an execution stopped with a typed reason (model.py: Suspend,
Continue, Cancel, Lost, Interrupt, Nondeterminism); the runner reads it and
asks engine/lifecycle.py for the matching state change, in one transaction
with what the gate still holds in memory (engine/gate_held.py).
"""

import json

import starlark as sl

from flowmetal.codec import canonical
from flowmetal.engine import faults, lifecycle
from flowmetal.engine import runs as run_ops
from flowmetal.engine.gate import Gate, Stop, mask
from flowmetal.errors import LoadError, UserError
from flowmetal.ids import new_run_id
from flowmetal.lang.diagnostics import strip_prelude_frames
from flowmetal.lang.loader import Program, top_level_functions
from flowmetal.lang.safe import guard
from flowmetal.lang.workspace import PinnedSources
from flowmetal.engine.warm import WARM_HORIZON, Evicted
from flowmetal.model import Cancel, Continue, Interrupt, Lost, Nondeterminism, Run, Suspend, stop_reason

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
            root_id=gate.run["root_id"], run_id=new_run_id(self.clock.now(), self.clock),
        )

    def child_results(self, gate, handles):
        out = []
        parents = {gate.run_id}  # and the runs it was forked from, whose ended children a fork shares
        row = self.store.get_run(gate.run_id)
        while row is not None and row.get("forked_from"):
            parents.add(row["forked_from"])
            row = self.store.get_run(row["forked_from"])
        for h in handles:
            child = self.store.get_run(h)
            if child is None or child["parent_id"] not in parents:
                raise UserError(f"wait(): {h!r} is not a child run of this run")
            out.append(run_ops.child_result(run_ops.last_incarnation(self.store, child)))
        return out


class Execution:
    """One attempt at executing a run, from replay to the point where it stops."""

    def __init__(self, store, run, owner, clock, keeper=None):
        self.store, self.run, self.owner, self.clock = store, Run.from_row(run), owner, clock
        self.gate = Gate(store, self.run, owner, clock, Hooks(store, clock))
        self.keeper = keeper  # a worker that keeps waits warm (engine/warm.py), or None
        if keeper is not None:
            self.gate.park = self._park

    def _park(self, waiting_for, wake_at):
        """The gate's park: suspend the run (with what the gate holds) and block until the
        worker claims it again (then go on in place) or sends it away (then stop, writing
        nothing: the run stays waiting, and a later execution replays it)."""
        gate = self.gate
        if wake_at is not None and wake_at - self.clock.now() > WARM_HORIZON:  # a long sleep: one row, no thread
            gate.stop = Suspend(waiting_for, wake_at)
            raise Stop("suspend")
        row = self.keeper.park(self, lambda: gate.commit_with(lambda: lifecycle.suspend(
            self.store, self.clock, self.run, self.owner, waiting_for, wake_at)))
        if row == "lost":
            gate.stop = Lost()
            raise Stop("lost ownership of the run")
        if row is None:
            gate.stop = Evicted()
            raise Stop("evicted")
        self.run = Run.from_row(row)
        gate.rebind(self.run)
        if self.run.deadline is not None and self.clock.now() >= self.run.deadline:
            gate.cancel_reason = "timed_out"
            gate.cancel.set()
        elif self.run.cancel_requested:
            gate.cancel_reason = self.run.cancel_requested
            gate.cancel.set()

    def execute(self):
        """Returns the state the run is left in (or "interrupted", "lost")."""
        run, gate = self.run, self.gate
        if run.deadline is not None and self.clock.now() >= run.deadline:
            return self._end("timed_out", error="timed out")
        if run.cancel_requested:
            return self._end(run.cancel_requested, error=run.cancel_requested.replace("_", " "))
        faults.point("execute")
        texts = self.texts = self.store.pinned_sources(run.id)
        program = Program(PinnedSources(texts), effect=gate.effect, log=gate.log)
        options = sl.EvalOptions(check_cancelled=gate.cancel.is_set, max_callstack_size=MAX_CALLSTACK)
        try:
            try:
                # secrets passed by name ({"$secret": NAME}) are read here, from this process's environment
                kwargs = gate.resolve_args(json.loads(run.args))
                posargs = gate.resolve_args(json.loads(run.posargs)) if run.posargs else []
                module = program.load(run.file)
                if not program.function_exists(run.file, run.function):
                    raise UserError(f"{run.file} has no top-level function {run.function!r}")
                program.phase = "execution"
                value = guard(module.call_with, options, run.function, *posargs, **kwargs).value  # panics: UserError
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
            return self._end("failed", error=f"the result of {run.function}() is not a JSON value: {value!r}")
        return self._end("completed", result=result)

    def _stopped(self, error):
        if isinstance(self.gate.stop, Evicted):
            return "evicted"
        stop = stop_reason(self.gate.stop)  # (the gate may still set the old tuples)
        if stop is None:
            if self.gate.cancel.is_set():  # check_cancelled stopped a pure Starlark loop
                reason = self.gate.cancel_reason or "cancelled"
                if reason == "interrupt":
                    return self._interrupted()
                return self._end(reason, error=reason.replace("_", " "))
            return self._end("failed", error=error_text(strip_prelude_frames(str(error), self.texts.__getitem__)))
        if isinstance(stop, Suspend):
            return self.gate.commit_with(lambda: lifecycle.suspend(
                self.store, self.clock, self.run, self.owner, stop.waiting_for, stop.wake_at))
        if isinstance(stop, Continue):
            return self.gate.commit_with(lambda: lifecycle.continue_as_new(
                self.store, self.clock, self.run, self.owner, stop.kwargs))
        if isinstance(stop, Cancel):
            return self._end(stop.state, error=stop.state.replace("_", " "))
        if isinstance(stop, Nondeterminism):
            return self._end("failed", error=stop.message)
        if isinstance(stop, Interrupt):
            return self._interrupted()
        return "lost"  # Lost: another process owns the run now (EndOfJournal only happens in replay)

    def _interrupted(self):
        """Leave the run resumable: still running, with no live owner."""
        self.gate.commit_with(lambda: lifecycle.release(self.store, self.run, self.owner))
        return "interrupted"

    def _end(self, state, result=None, error=None):
        if self.gate.secrets:  # a secret never reaches the database, not even in an error
            error = mask(error, self.gate.secrets)
            result = mask(result, self.gate.secrets)
        # what the gate holds (pure entries, log lines) commits with the run's end
        return self.gate.commit_with(lambda: lifecycle.end(
            self.store, self.clock, self.run, self.owner, state, result=result, error=error))
