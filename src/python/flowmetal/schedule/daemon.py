"""`flowmetal schedule`: the loop that loads the workspace, fires schedules and executes their runs.

`Daemon` reloads on change and on SIGHUP, ticks the `Scheduler` with the real
clock, runs an embedded `Worker`, and stops gracefully on SIGTERM/SIGINT.
The parts it drives live in their own modules:

- flowmetal.lang.discovery: finding and checking the `.star` files (`Workspace`);
- flowmetal.schedule.scheduler (+ reconcile, fire, outcomes): the store-backed core;
- flowmetal.schedule.views: `--list` and `--dry-run`;
- flowmetal.schedule.commands: pause, resume, trigger, backfill.

Loading never stops the daemon. A file that fails to load is reported once as
`file:line:col` (and again only when it changes) and keeps its last good
schedules; a file read as empty keeps them too (see flowmetal.lang.discovery).
A change is loaded once the files have not changed for `SETTLE` seconds, so a
file caught part way through a rewrite is usually not read at all; if it is,
the rules above keep its schedules and the finished file is loaded next.

Events are emitted in the order they happened to a run, once each: a run's
`fire` line comes before the worker's `start` line for it (the tick and its
events happen under one lock the worker's events wait for), and a run that
waits (sleep, signal, children) is not reported as ended when it suspends nor
started again when it resumes: one `start`, one `end` with its final state.
"""

import signal
import threading
import time

from flowmetal.clock import SYSTEM
from flowmetal.errors import FlowmetalError
from flowmetal.lang.discovery import Workspace
from flowmetal.schedule.entry import iso_local, iso_utc  # noqa: F401  (re-exported: cli.render uses iso_local)
from flowmetal.schedule.scheduler import Scheduler
from flowmetal.store.base import ENDED

HARD_STOP = 2.5  # of the grace period, kept for interrupting what did not finish (sh needs 2 s to kill)
FOLLOWUP_SECONDS = 0.5  # at least this often: buffered fires, outcomes, on_failure
SETTLE = 0.3  # a change is loaded once the files' names, mtimes and sizes stayed the same this long


class Daemon:
    """The loop behind `flowmetal schedule`: load, reconcile, tick, execute, reload, stop."""

    def __init__(self, store, root, paths, *, concurrency=4, grace=10.0, emit=None, clock=SYSTEM, poll=1.0):
        self.store, self.clock = store, clock
        self.emit = emit or (lambda kind, **fields: None)
        self.workspace = Workspace(root, paths)
        self.scheduler = Scheduler(store, self.workspace.root, emit=self.emit)
        self.concurrency, self.grace, self.poll = concurrency, grace, poll
        self.stopping = threading.Event()
        self.hurry = threading.Event()
        self.reload_requested = threading.Event()
        self.wake = threading.Event()
        self.signature = None
        self._reported = {}  # file -> (its signature entry, rendered errors) last logged
        self.worker = None
        self.interrupted = set()  # runs this process stopped part way (resumable)
        self._order = threading.Lock()  # held while ticking: a run's fire is emitted before its start
        self._suspended = set()  # runs of ours waiting after a start: no second start or end line

    # --- loading ---------------------------------------------------------------

    def reload(self, now=None):
        """Load the files and reconcile, here and now. Files with errors keep their last good schedules."""
        before = self.workspace.signature()
        return self._apply(self.workspace.load(), before, now)

    def _apply(self, loaded, before, now=None):
        """Reconcile what a load found; `before` is the signature the load started from."""
        now = self.clock.now() if now is None else now
        self.workspace.deps = loaded.deps
        after = self.workspace.signature()
        # A file that changed while it was being loaded must be loaded again: keep the old signature.
        unchanged = isinstance(before, tuple) and all(isinstance(e, tuple) for e in before) and \
            set(before) <= set(after) and {e[0] for e in set(after) - set(before)} <= loaded.deps
        self.signature = after if unchanged else before
        changes = self.scheduler.reconcile(loaded.specs, now, texts=loaded.texts, scope=self.workspace.in_scope,
                                           keep_files=loaded.kept)
        self._report(loaded)  # after reconciling: what a broken file kept is known (after a restart, too)
        return changes

    def _start_reload(self):
        """Load in a thread (a big workspace takes seconds to check); the loop keeps firing meanwhile."""
        box = {"before": self.workspace.signature()}

        def load():
            try:
                box["loaded"] = self.workspace.load()
            except Exception as e:  # reported by _finish_reload; the daemon keeps what it has
                box["error"] = e

        box["thread"] = threading.Thread(target=load, name="flowmetal-schedule-load", daemon=True)
        box["thread"].start()
        return box

    def _finish_reload(self, box):
        if "loaded" in box:
            try:
                self._apply(box["loaded"], box["before"])
            except FlowmetalError as e:
                self.emit("error", message=f"reconciling schedules: {e}")
            return
        e = box.get("error")
        self.signature = box["before"]
        if isinstance(e, FlowmetalError):  # e.g. a path that vanished
            self.emit("load_error", file=None, message=str(e), kept=sorted(self.scheduler.entries))
        else:
            self.emit("error", message=f"loading schedules: {e!r}")

    def _report(self, loaded):
        sig = {entry[0]: entry for entry in self.signature if isinstance(entry, tuple)}
        reported = {}
        for file, diagnostics in sorted(loaded.broken.items()):
            text = "\n".join(d.render() for d in diagnostics) or f"{file}: failed to load"
            key = (sig.get(file), text)
            reported[file] = key
            if self._reported.get(file) != key:
                kept = sorted(n for n, e in self.scheduler.entries.items() if e.spec.file == file)
                self.emit("load_error", file=file, message=text, kept=kept)
        for file in sorted(loaded.unsettled):
            key = (sig.get(file), "empty")
            reported[file] = key
            if self._reported.get(file) != key:
                kept = sorted(n for n, e in self.scheduler.entries.items() if e.spec.file == file)
                self.emit("load_error", file=file, kept=kept,
                          message=f"{file}:1:1: warning: the file is empty (part way through being written?); "
                                  f"its schedules stay as they were until it declares them again or is deleted")
        for file in self._reported:
            if file not in reported:
                self.emit("load_ok", file=file)
        self._reported = reported

    # --- running ---------------------------------------------------------------

    def request_stop(self, *_):
        if self.stopping.is_set():  # a second SIGTERM/SIGINT: do not wait for effects any longer
            self.hurry.set()
        self.stopping.set()
        self.wake.set()

    def request_reload(self, *_):
        self.reload_requested.set()
        self.wake.set()

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig, handler in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                             (signal.SIGHUP, self.request_reload)):
            old[sig] = signal.signal(sig, handler)
        return old

    def _worker_event(self, kind, run, detail=None):
        name = run.get("schedule")
        entry = self.scheduler.entries.get(name) if name else None
        fields = {"schedule": name, "fire_time": run.get("fire_time"), "run_id": run["id"],
                  "target": f"{run['file']}:{run['function']}", "timezone": entry.spec.timezone if entry else "UTC"}
        if kind == "start":
            if run["id"] in self._suspended:  # resumed after a wait: it started once, it ends once
                self._suspended.discard(run["id"])
            else:
                with self._order:  # a tick that created this run emits its fire first
                    self.emit("start", **fields)
        elif kind == "end":
            if detail == "waiting":  # suspended (sleep, signal, children): not an end
                self._suspended.add(run["id"])
                self.wake.set()
                return
            if detail == "interrupted":
                self.interrupted.add(run["id"])
            began = run.get("started_at") or self.clock.now()
            self.emit("end", state=detail, duration=max(0.0, self.clock.now() - began), **fields)
        else:
            self.emit("error", message=f"run {run['id']}: {detail}")
        self.wake.set()

    def run(self, once=False):
        """Serve until SIGTERM/SIGINT (or, with once, until the runs fired now have ended).
        Returns the exit code."""
        from flowmetal.engine.worker import Worker

        old = self._install_signals()
        self.worker = worker = Worker(self.store, self.clock, concurrency=self.concurrency,
                                      on_event=self._worker_event)
        worker.register()  # (it executes runs: `flowmetal workers` lists it)
        thread = threading.Thread(target=worker.run_forever, name="flowmetal-schedule-worker",
                                  kwargs={"until": self.stopping.is_set}, daemon=True)
        code = 0
        try:
            self.reload()
            self.emit("started", schedules=len(self.scheduler.entries), owner=worker.owner)
            thread.start()
            code = self._once(worker) if once else self._loop(worker)
        finally:
            self._shutdown(worker, thread)
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return code

    def _loop(self, worker):
        last_poll = self.clock.now()
        loading = None
        pending = None  # (a changed signature, when it was first seen): loaded once it settles
        while not self.stopping.is_set():
            now = self.clock.now()
            if loading is not None and not loading["thread"].is_alive():
                self._finish_reload(loading)
                loading = None
            if loading is None and self.reload_requested.is_set():  # SIGHUP: load now
                self.reload_requested.clear()
                last_poll, pending = now, None
                loading = self._start_reload()
            elif loading is None and (now - last_poll >= self.poll or
                                      pending is not None and now - pending[1] >= SETTLE):
                last_poll = now
                current = self.workspace.signature()
                if current == self.signature:
                    pending = None
                elif pending is not None and pending[0] == current and now - pending[1] >= SETTLE:
                    pending = None
                    loading = self._start_reload()
                elif pending is None or pending[0] != current:
                    pending = (current, now)
            try:
                with self._order:
                    created = self.scheduler.tick(self.clock.now())
                if created:
                    worker.wakeup.set()
            except FlowmetalError as e:
                self.emit("error", message=str(e))
            except Exception as e:  # a bug of ours must not stop every schedule: say so, keep going
                self.emit("error", message=f"internal error while ticking: {e!r}")
                self.wake.wait(1.0)
            now = self.clock.now()
            wait = min(self.poll - (now - last_poll), FOLLOWUP_SECONDS)
            due = self.scheduler.next_due()
            if due is not None:
                wait = min(wait, due - now)
            if loading is not None:
                wait = min(wait, 0.05)
            if pending is not None:
                wait = min(wait, pending[1] + SETTLE - now)
            if wait > 0:
                self.wake.wait(wait)
            self.wake.clear()
        return 0

    def _tick(self, fire=True):
        with self._order:
            return set(self.scheduler.tick(self.clock.now(), fire=fire))

    def _once(self, worker):
        created = self._tick()
        worker.wakeup.set()
        while created and not self.stopping.is_set():
            runs = [self.store.get_run(r) for r in created]
            if all(r is None or r["state"] in ENDED for r in runs):
                # the last outcomes may start on_failure runs or buffered fires
                more = self._tick(fire=False) - created
                if not more:
                    failed = [r for r in runs if r is not None and r["state"] != "completed"]
                    return 1 if failed else 0
                created |= more
                worker.wakeup.set()
                continue
            created |= self._tick(fire=False)
            self.wake.wait(0.1)
            self.wake.clear()
        return 0

    def _shutdown(self, worker, thread):
        """Stop claiming; let effects in progress finish within the grace period; leave every
        run that did not end resumable (its owner is this process, which is about to die:
        the next worker on this machine takes it over at once)."""
        started = time.monotonic()
        deadline = started + self.grace
        soft = deadline - min(HARD_STOP, self.grace / 2)
        with worker.lock:
            active = list(worker.active.values())
        if active:
            self.emit("stopping", running=len(active), grace=self.grace)
        worker.drain()
        while worker.active and time.monotonic() < soft and not self.hurry.is_set():
            time.sleep(0.02)
        worker.shutdown(interrupt=True, grace=max(0.0, deadline - time.monotonic()))
        if thread.ident is not None:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self.emit("stopped", left=sorted(self.interrupted | set(worker.active)), seconds=time.monotonic() - started)