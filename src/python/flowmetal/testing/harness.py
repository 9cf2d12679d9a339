"""One test's world: a fresh store, a virtual clock, fakes, and the driver of its runs.

Runs execute on the real engine: engine/runner.py's Execution, the journal gate
and engine/lifecycle.py, against a SQLite store of the test's own. Only two
things differ from production, both in the gate (TestGate):

- outside effects (`sh`, `http`) are performed by the fakes (fakes.py), which
  the gate is given in place of the registry's perform functions;
- a wait never waits in place: a wait whose time has not come suspends the
  run, and the driver moves the clock.

`task()` and `callback()` go through the production gate unchanged; their
`deferred` rows are answered from outside, as a worker or the server would
(testing/deferred.py: the task fakes, `t.callback`).

The driver (`settle`) executes every runnable run, one at a time; when none is
runnable and it may move time, it jumps the clock to the next wake time (a
sleep's end, a retry delay, a timeout, a run's deadline, a task fake's answer).
When no run is runnable and none has a wake time, every run left waits for
something only the test can give (a signal, a callback), or the test has
deadlocked.
"""

import dataclasses
import json
import os
import tempfile
import threading

from flowmetal.codec import canonical
from flowmetal.engine import lifecycle
from flowmetal.engine import runs as run_ops
from flowmetal.engine.effects.registry import OUTSIDE
from flowmetal.engine.gate import Gate, decode_result
from flowmetal.engine.runner import Execution, Hooks
from flowmetal.errors import UserError
from flowmetal.ids import new_run_id
from flowmetal.lang.loader import Program
from flowmetal.lang.refs import parse_function_value
from flowmetal.lang.workspace import DiskSources
from flowmetal.model import Run, WaitingFor
from flowmetal.store.base import ENDED
from flowmetal.store.sqlite import SqliteStore
from flowmetal.testing.clock import VirtualClock
from flowmetal.testing.deferred import TaskDesk, deliver_callback, find_callback
from flowmetal.testing.fakes import HINTS, Fakes

OWNER = "flowmetal-test:0:0"
MAX_STEPS = 100_000  # executions one settle may make (a run that never stops waking is a bug to report)


class TimeLimit(Exception):
    """The test ran out of its wall time (--timeout); raised where the harness notices."""


class TestFailure(Exception):
    """A test failed: an assertion, a call with no fake, a deadlock. `detail` is shown as is."""

    def __init__(self, message, detail=""):
        super().__init__(message)
        self.message, self.detail = message, detail


class TestGate(Gate):
    def __init__(self, store, run, owner, clock, hooks, fakes):
        super().__init__(store, run, owner, clock, hooks)
        self.fakes = fakes
        self._kinds[OUTSIDE] = self._faked

    def _faked(self, eff, args):
        return self._with_retry(dataclasses.replace(eff, perform=self.fakes.perform(eff.name)), args)

    def _wait_until(self, until):
        return until <= self.clock.now()


class TestExecution(Execution):
    def __init__(self, store, run, owner, clock, fakes):
        self.store, self.run, self.owner, self.clock = store, Run.from_row(run), owner, clock
        self.gate = TestGate(store, self.run, owner, clock, Hooks(store, clock), fakes)


def describe_wait(run):
    w = WaitingFor.from_json(run["waiting_for"])
    what = "nothing it says" if w is None else {
        "signal": lambda: f"signal {w.name!r}",
        "timer": lambda: f"a timer ({w.builtin})",
        "children": lambda: f"{'any of' if w.any else 'its'} child run(s) {', '.join(w.runs)}",
        "effect": lambda: _describe_effect(w),
    }.get(w.kind, lambda: w.kind)()
    return f"run {run['id']} ({run['file']}:{run['function']}) waits for {what}"


def _describe_effect(w):
    if w.builtin == "task":
        return f"task() on queue {w.detail.get('queue')!r} at position {w.seq}"
    if w.builtin == "wait_callback":
        return f"its callback at position {w.seq} (wait_callback(); deliver it with t.callback())"
    return f"{w.builtin}() at position {w.seq}"


class Harness:
    """The host side of one test's `t` object."""

    def __init__(self, root, texts_cache, schedules=None):
        self.root = str(root)
        self.schedules = schedules or {}  # name -> schedule() arguments declared by the loaded files
        self.texts_cache = texts_cache  # {file: pinned texts}, shared by the tests of a session
        self.clock = VirtualClock()
        self._dir = tempfile.TemporaryDirectory(prefix="flowmetal-test-")
        self.store = SqliteStore(os.path.join(self._dir.name, "test.db"), clock=self.clock)
        self.fakes = Fakes()
        self.tasks = TaskDesk(self.store, self.clock, self.fakes)
        self.roots = []  # ids of the runs the test started, in order
        self.expired = threading.Event()  # set by the watchdog when the test's wall time is up
        self.executing = None  # the TestExecution in progress (the watchdog interrupts it)
        self.stopped_run = None  # the run the watchdog interrupted

    def time_up(self):
        """The watchdog's call (another thread): stop the test, and the run it is executing."""
        self.expired.set()
        ex = self.executing
        if ex is not None:
            self.stopped_run = ex.run.id
            ex.gate.cancel_reason = "interrupt"  # (left resumable, not cancelled: the test is what failed)
            ex.gate.cancel.set()

    def check_time(self):
        if self.expired.is_set():
            raise TimeLimit()

    def close(self):
        self.store.close()
        self._dir.cleanup()

    # --- runs -------------------------------------------------------------

    def _texts(self, file):
        texts = self.texts_cache.get(file)
        if texts is None:
            program = Program(DiskSources(self.root))
            program.load(file)
            texts = self.texts_cache[file] = dict(program.texts)
        return texts

    def create(self, ref, args, kwargs):
        file, function = parse_function_value(ref)
        texts = self._texts(file)
        if function not in _functions(texts[file]):
            raise UserError(f"{file} has no top-level function {function!r} (a run calls a top-level function "
                            f"by name: not a lambda or a nested function)")
        if function.startswith("_"):
            raise UserError(f"{file}: {function}() is private (its name starts with _): a run can only call "
                            f"a public top-level function")
        run_id = run_ops.create_run(self.store, self.clock, file=file, function=function, args=kwargs,
                                    posargs=args, texts=texts, root_dir=self.root,
                                    run_id=new_run_id(self.clock.now(), self.clock))
        self.roots.append(run_id)
        return run_id

    def run_id(self, handle):
        if isinstance(handle, dict):
            handle = handle.get("id")
        if not isinstance(handle, str) or self.store.get_run(handle) is None:
            raise UserError(f"{handle!r} is not a run of this test (pass what t.start() returned)")
        return handle

    def execute_one(self):
        run = lifecycle.claim(self.store, OWNER)
        if run is None:
            return False
        ex = self.executing = TestExecution(self.store, run, OWNER, self.clock, self.fakes)
        try:
            ex.execute()
        except Exception as e:  # a bug of ours: the run fails saying so, as under a worker
            lifecycle.fail_internal(self.store, self.clock, ex.run, OWNER, e)
        finally:
            self.executing = None
        self.check_time()
        self.tasks.dispatch()
        self._check_unmatched()
        return True

    def _check_unmatched(self):
        if self.fakes.unmatched:
            call = self.fakes.unmatched[0]
            what = f"queue {call.text!r}" if call.builtin == "task" else call.text
            raise TestFailure(f"{call.builtin}() called with no matching fake: {what}",
                              f"in run {call.run} at journal position {call.seq}; add {HINTS[call.builtin]} for it")

    def settle(self, jump=True, until=None, horizon=None):
        """Execute what is runnable; with `jump`, move the clock to each next wake time (not
        past `horizon`). Stops early when run `until` has ended."""
        for _ in range(MAX_STEPS):
            self.check_time()
            if until is not None and self.store.get_run(until)["state"] in ENDED:
                return
            if self.execute_one() or self.tasks.deliver():
                continue
            if not jump:
                return
            wakes = [w for w in (self.store.next_wake(), self.tasks.next_due()) if w is not None]
            wake = min(wakes, default=None)
            if wake is None or (horizon is not None and wake > horizon):
                return
            self.clock.set(wake)
        raise TestFailure(f"runs still runnable after {MAX_STEPS} executions (a loop that never waits?)")

    def blocked(self):
        return [r for state in ("waiting", "pending", "running") for r in self.store.list_runs(status=state, limit=10_000)]

    def deadlock(self, run_id):
        lines = [describe_wait(r) for r in self.blocked()]
        raise TestFailure(f"deadlock: run {run_id} cannot end: every run is blocked and no timer is left",
                          "\n".join(lines))

    def status(self, run_id):
        row = self.store.get_run(run_id)
        row = run_ops.last_incarnation(self.store, row)
        result = None if row["result"] is None else json.loads(row["result"])
        doc = {"id": run_id, "state": row["state"], "result": result, "error": row["error"],
               "waiting_for": None}
        if row["state"] == "waiting":
            doc["waiting_for"] = describe_wait(row)
        return doc

    def drive(self, run_id):
        """Execute (moving the clock) until run `run_id`, or what it continued as, has ended,
        or nothing can move any more. Returns the last incarnation's row."""
        tip = self.store.get_run(run_id)
        while True:
            self.settle(jump=True, until=tip["id"])
            tip = self.store.get_run(tip["id"])
            if tip["state"] not in ENDED or not tip["continued_as"]:
                return tip
            tip = self.store.get_run(tip["continued_as"])

    def wait(self, run_id):
        if self.drive(run_id)["state"] not in ENDED:
            self.deadlock(run_id)
        return self.status(run_id)

    # --- the t object's calls ------------------------------------------------

    def call(self, name, a):
        return getattr(self, "t_" + name)(**a)

    def t_start(self, function, args, kwargs):
        run_id = self.create(function, args, kwargs)
        self.settle(jump=False)
        return run_id

    def t_run(self, function, args, kwargs):
        run_id = self.create(function, args, kwargs)
        self.drive(run_id)
        return self.status(run_id)

    def t_fails(self, function, args, kwargs):
        doc = self.t_run(function, args, kwargs)
        if doc["state"] == "completed":
            raise TestFailure(f"t.fails(): {function.rpartition('.star.')[2]}() did not fail",
                              f"it completed with result {canonical(doc['result'])}")
        if doc["state"] != "failed":
            raise TestFailure(f"t.fails(): {function.rpartition('.star.')[2]}() did not fail",
                              f"it is {doc['state']}" + (f": {doc['waiting_for']}" if doc["waiting_for"] else ""))
        return (doc["error"] or "").split("\n", 1)[0]

    def t_wait(self, run):
        return self.wait(self.run_id(run))

    def t_status(self, run):
        return self.status(self.run_id(run))

    def t_signal(self, run, name, payload):
        run_id = self.run_id(run)
        run_ops.send_signal(self.store, self.clock, run_id, name, canonical(payload))
        self.settle(jump=False)
        return None

    def t_cancel(self, run):
        run_ops.cancel_run(self.store, self.clock, self.run_id(run))
        self.settle(jump=False)
        return None

    def t_advance(self, seconds):
        target = self.clock.now() + seconds
        self.settle(jump=True, horizon=target)
        self.clock.set(target)
        self.settle(jump=False)
        return None

    def t_now(self):
        return self.clock.now()

    def t_journal(self, run):
        return [entry_doc(self.store, e) for e in self.store.journal(self.run_id(run))]

    def t_mock_sh(self, pattern, exit_code, stdout, stderr, times):
        if not isinstance(exit_code, int):
            raise UserError("t.mock_sh(): exit_code must be a number")
        self.fakes.add("sh", pattern, {"exit_code": exit_code, "stdout": stdout or "", "stderr": stderr or ""}, times)

    def t_mock_http(self, url_pattern, status, json, body, headers, times, method):
        if status is not None and not isinstance(status, int):
            raise UserError("t.mock_http(): status must be a number (or None: a connection failure)")
        self.fakes.add("http", url_pattern, {"status": status, "json": json, "body": body, "headers": headers},
                       times, method)

    def t_mock_task(self, queue, result, error, times, delay):
        if error is not None and not isinstance(error, str):
            raise UserError("t.mock_task(): error must be a string (the worker's error message) or None")
        if error is not None and result is not None:
            raise UserError("t.mock_task(): give result or error, not both (a worker answers one)")
        if not isinstance(delay, (int, float)) or delay < 0:
            raise UserError("t.mock_task(): delay must be a duration")
        self.fakes.add("task", queue, {"result": result, "error": error, "delay": float(delay)}, times)

    def _callback(self, target, payload, name, approval=False):
        if isinstance(target, dict):
            target = target.get("id")
        if not isinstance(target, str):
            raise UserError("t.callback(): pass a run's handle or a callback's name")
        runs = [r["id"] for r in self.all_runs()]
        row = find_callback(self.store, runs, target, name=name, approval=approval)
        outcome = deliver_callback(self.store, self.clock, row, payload)
        self.settle(jump=False)
        return outcome

    def t_callback(self, target, payload, name):
        return self._callback(target, payload, name)

    def t_approve(self, target, name, approved):
        return self._callback(target, {"approved": approved}, name, approval=True)

    def t_calls(self, builtin):
        if builtin in ("sh", "http", "task"):
            return [c.to_dict() for c in self.fakes.calls if c.builtin == builtin]
        out = []
        for run in self.all_runs():
            for e in self.store.journal(run["id"]):
                if e["builtin"] == builtin:
                    out.append({"run": run["id"], "seq": e["seq"], **json.loads(e["args"] or "{}")})
        return out

    def t_fire_times(self, schedule, start, end, timezone=None):
        """Fire times of a schedule (a name declared by a loaded file, or a cron expression) in
        (start, end], as ISO 8601 in the schedule's zone: daylight saving as the scheduler does it."""
        from datetime import datetime, timezone as tzmod

        from flowmetal.schedule.cron import check_cron, fires_between, resolve_timezone

        declared = self.schedules.get(schedule)
        cron = declared["cron"] if declared else schedule
        zone_name = timezone or (declared or {}).get("timezone") or "UTC"
        try:
            problem = check_cron(cron)
            if problem:
                raise ValueError(problem)
            zone = resolve_timezone(zone_name)
        except ValueError as e:
            known = ", ".join(sorted(self.schedules)) or "none"
            raise UserError(f"t.fire_times(): {schedule!r} is neither a declared schedule (declared: {known}) "
                            f"nor a valid cron expression: {e}") from None

        def instant(value, what):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return datetime.fromtimestamp(value, tzmod.utc)
            try:
                when = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise UserError(f"t.fire_times(): {what} must be epoch seconds or ISO 8601, got {value!r}") from None
            return when if when.tzinfo else when.replace(tzinfo=zone)

        fires = fires_between(cron, zone, instant(start, "start"), instant(end, "end"), limit=10_000)
        return [f.astimezone(zone).isoformat() for f in fires]

    def all_runs(self):
        """Every run of the test, in the order they were created (ids of one instant are random)."""
        return sorted(self.store.list_runs(limit=1_000_000), key=lambda r: (r["created_at"], r.get("num") or 0))

    def t_runs(self):
        return [self.status(r["id"]) for r in self.all_runs()]

    def t_fail(self, kind, msg=None, **values):
        head = {"eq": "t.eq() failed: the values differ", "true": "t.true() failed"}.get(kind, kind)
        if msg:
            head += f": {msg}"
        if kind == "eq":
            detail = f"left:  {values['left']}\nright: {values['right']}"
        else:
            detail = f"value: {values['value']}"
        raise TestFailure(head, detail)

    # --- what a failure report shows -----------------------------------------

    def journals_text(self, limit_runs=10):
        lines = []
        for run in self.all_runs()[-limit_runs:]:
            state = run["state"]
            lines.append(f"run {run['id']} {run['file']}:{run['function']} {state}"
                         + (f" ({describe_wait(run).split(' waits for ', 1)[1]})" if state == "waiting" else ""))
            for e in self.store.journal(run["id"]):
                lines.append("  " + entry_line(self.store, e))
            if run["error"] and state != "completed":
                lines.append("  error: " + run["error"].split("\n", 1)[0])
        return "\n".join(lines)


def _functions(text):
    from flowmetal.lang.loader import top_level_functions

    return top_level_functions(text)


def entry_doc(store, e):
    result = None
    if e["result"] is not None:
        result = decode_result(store, e["result"])
    return {"seq": e["seq"], "builtin": e["builtin"], "args": json.loads(e["args"] or "{}"), "status": e["status"],
            "result": result, "error": e["error"], "at": e["started_at"]}


def entry_line(store, e, width=100):
    args = e["args"] or "{}"
    if len(args) > width:
        args = args[:width - 3] + "..."
    out = f"{e['seq']:>3} {e['builtin']}({args}) {e['status']}"
    if e["error"]:
        out += f": {e['error'].splitlines()[0][:width]}"
    elif e["result"] is not None and e["builtin"] not in ("now", "random", "uuid"):
        text = e["result"] if len(e["result"]) <= width else e["result"][:width - 3] + "..."
        out += f" -> {text}"
    return out
