"""The worker: claims runnable runs and executes them, up to `concurrency` at once.

A run is runnable when it is pending, waiting with a wake time that has come,
or running under a lease that expired. Runs owned by a dead process on this
machine are released at once. A heartbeat thread renews the leases of the runs
this process executes and passes cancellation and timeouts to them; its errors
go to stderr (rate-limited) and it keeps beating.

Between claims the worker waits until the next wake time, but asks the store
to `wait_for_change` meanwhile, so a signal or a new run is seen within about
100 ms without querying tables at a high rate. All its time and pauses come
from the injected clock.

An exception of ours inside an execution fails that run with an internal error
that says so (lifecycle.fail_internal) and releases it: it never stays
`running` under a live owner. `serve` is the loop of `flowmetal worker`:
SIGTERM drains it (`stop`): no new claims, effects in progress get the grace
period to finish, then the rest is interrupted (their `sh` process groups are
ended), every unfinished run stays resumable, and it returns 0.

Warm waits (engine/warm.py): each execution has a thread of its own; a run
that suspends stays parked in it (up to `warm` runs, FLOWMETAL_WARM), and when
the worker claims that run again it continues there instead of replaying.
Parked runs do not count against `concurrency` (they hold no lease and run
nothing); stopping the worker sends them all away (they stay waiting).
"""

import os
import queue
import signal
import socket
import sys
import threading

from flowmetal.clock import SYSTEM
from flowmetal.engine import faults, lifecycle
from flowmetal.engine.runner import Execution
from flowmetal.engine.warm import Parked, WarmRuns, warm_limit
from flowmetal.errors import UserError

HEARTBEAT_SECONDS = 0.5
RENEW_EVERY = 5.0
RESCAN_SECONDS = 2.0
# FLOWMETAL_POLL (seconds, default RESCAN_SECONDS): the longest the idle worker waits between
# looks at the tables when nothing tells it of a change (wait_for_change: SQLite's data_version,
# PostgreSQL's NOTIFY). A fallback only; the tests set it to 30 s to show that NOTIFY wakes runs.


def poll_seconds():
    text = os.environ.get("FLOWMETAL_POLL")
    try:
        return float(text) if text else RESCAN_SECONDS
    except ValueError:
        raise UserError(f"FLOWMETAL_POLL={text!r}: expected a number of seconds") from None
IDLE_SECONDS = 30.0  # how long a thread whose execution ended waits for the next one
HARD_STOP = 2.5  # seconds of the grace period kept for interrupting what did not finish (sh needs 2 s to kill)
LOST_AFTER = 3 * RENEW_EVERY  # seconds without a heartbeat after which `flowmetal workers` says "lost"
ERROR_REPORT_EVERY = 10.0  # the heartbeat reports a repeated error at most this often
LEASE_SECONDS = lifecycle.LEASE_SECONDS


def make_owner(clock=SYSTEM):
    return f"{socket.gethostname()}:{os.getpid()}:{clock.token(8)}"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def expire_dead_local_owners(store):
    """Runs owned by a process on this machine that no longer exists are released at once."""
    host = socket.gethostname()
    for run in store.running_runs():
        owner = run["owner"] or ""
        parts = owner.split(":")
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            pid = int(parts[1])
            if pid != os.getpid() and not _pid_alive(pid):
                lifecycle.release(store, run, owner)


def _stderr(line):
    print(line, file=sys.stderr, flush=True)


class Worker:
    def __init__(self, store, clock, concurrency=4, root_id=None, run_id=None, on_event=None, log=None, warm=None):
        self.store, self.clock = store, clock
        self.concurrency = max(1, concurrency)
        self.root_id, self.run_id = root_id, run_id
        self.owner = make_owner(clock)
        self.on_event = on_event or (lambda kind, run, state=None: None)
        self.log = log or _stderr
        self.active = {}  # run id -> Execution
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.hurry = threading.Event()
        self._errors = {}  # heartbeat error text -> [last reported (monotonic), times since]
        self.registered = False  # in the workers table (`serve`: a `flowmetal worker` process)
        self.threads = set()  # the threads of executions (running, parked or idle), until they end
        self._jobs = queue.SimpleQueue()  # executions to start, taken by idle threads
        self._idle = 0  # threads waiting for a job
        self.warm = WarmRuns(warm_limit(warm))  # runs parked at a wait, continued in place (engine/warm.py)
        self.resumed_warm = 0  # claims that continued a parked run instead of replaying it
        self._heartbeat = threading.Thread(target=self._beat, name="flowmetal-heartbeat", daemon=True)
        self._heartbeat.start()

    # --- heartbeat --------------------------------------------------------

    def _beat(self):
        last_renew = None
        while not self.clock.wait(self.stopping, HEARTBEAT_SECONDS):
            try:
                faults.point("heartbeat")
                now = self.clock.monotonic()
                if last_renew is None or now - last_renew >= RENEW_EVERY:
                    rows = lifecycle.renew(self.store, self.owner)
                    last_renew = now
                    if self.registered:
                        self.store.worker_seen(self.owner, self.clock.now())
                else:
                    rows = self.store.owned_runs(self.owner)
                self._pass_cancels(rows)
            except Exception as e:  # the heartbeat must outlive a locked database: say so, keep beating
                self._report(e)

    def _pass_cancels(self, rows):
        with self.lock:
            for run_id, cancel_requested, deadline in rows:
                ex = self.active.get(run_id)
                if ex is None or ex.gate.cancel.is_set():
                    continue
                reason = cancel_requested
                if reason is None and deadline is not None and self.clock.now() >= deadline:
                    reason = "timed_out"
                if reason:
                    ex.gate.cancel_reason = reason
                    ex.gate.cancel.set()

    def _report(self, error):
        """One stderr line per kind of heartbeat error, then at most one per ERROR_REPORT_EVERY."""
        text = f"{type(error).__name__}: {error}"
        now = self.clock.monotonic()
        seen = self._errors.get(text)
        if seen is None or now - seen[0] >= ERROR_REPORT_EVERY:
            again = f" (and {seen[1]} more times)" if seen and seen[1] else ""
            self.log(f"flowmetal worker {self.owner}: heartbeat: {text}{again}; retrying")
            self._errors[text] = [now, 0]
        else:
            seen[1] += 1

    # --- the loop ---------------------------------------------------------

    def step(self):
        """Claim and start as many runnable runs as there are free slots. Returns how many started."""
        started = 0
        while len(self.active) < self.concurrency and not self.stopping.is_set():
            run = lifecycle.claim(self.store, self.owner, root_id=self.root_id, run_id=self.run_id)
            if run is None:
                break
            started += 1
            with self.lock:
                parked = self.warm.take(run.id)
                if parked is not None and parked.fresh(run):  # warm: it goes on where it waits
                    self.active[run.id] = parked.execution
                    self.resumed_warm += 1
                    self.on_event("start", run)
                    parked.resume(run)
                    continue
                if parked is not None:  # another execution came between: replay
                    parked.evict()
            ex = Execution(self.store, run, self.owner, self.clock, keeper=self if self.warm.limit else None)
            with self.lock:
                self.active[run.id] = ex
            self.on_event("start", run)
            self._start(ex)
        return started

    def _start(self, ex):
        """Run `ex` in an idle thread, or a new one: a thread stays with its execution while
        it is parked, and waits IDLE_SECONDS for the next one when it ends (keeping its
        database connection)."""
        with self.lock:
            self._jobs.put(ex)
            if self._idle > 0:
                self._idle -= 1
                return
            thread = threading.Thread(target=self._thread, name="flowmetal-run", daemon=True)
            self.threads.add(thread)
        thread.start()

    def _thread(self):
        try:
            while True:
                try:
                    ex = self._jobs.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    with self.lock:
                        if self._jobs.empty():  # (else a job was put for this thread: take it)
                            self._idle -= 1
                            return
                    continue
                if ex is None:  # (shutdown: this idle thread ends)
                    with self.lock:
                        self._idle -= 1
                    return
                self._execute(ex)
                with self.lock:
                    self._idle += 1
        finally:
            with self.lock:
                self.threads.discard(threading.current_thread())
            _release_connection(self.store)

    def park(self, ex, suspend):
        """An execution's run waits (engine/runner.py Execution._park): commit `suspend()` and
        keep the execution here, blocked, until `step` claims the run again (returns the
        claimed row) or it is sent away (returns None); "lost" if the suspension was refused."""
        parked = Parked(ex)
        with self.lock:  # (a claim of the run, possible once the suspension commits, finds it parked)
            state = suspend()
            if state == "lost":
                return "lost"
            if self.stopping.is_set():
                parked.evict()
            else:
                self.warm.add(parked)
            if self.active.get(ex.run.id) is ex:
                del self.active[ex.run.id]
            self.on_event("end", ex.run, state)
        self.wakeup.set()
        _release_connection(self.store)  # a parked run holds no database connection
        parked.event.wait()
        return parked.row

    def evict_all(self):
        """Send every parked run away: each stays waiting, and its next execution replays."""
        with self.lock:
            self.warm.evict_all()

    def _execute(self, ex):
        try:
            state = ex.execute()
        except Exception as e:  # a bug of ours: fail the run saying so, never leave it running
            try:  # with what the gate holds (its log lines), unless writing that is what failed
                state = ex.gate.commit_with(lambda: lifecycle.fail_internal(self.store, self.clock, ex.run,
                                                                             self.owner, e))
            except Exception:
                state = lifecycle.fail_internal(self.store, self.clock, ex.run, self.owner, e)
            self.on_event("error", ex.run, lifecycle.internal_error_text(e))
        finally:
            with self.lock:
                if self.active.get(ex.run.id) is ex:
                    del self.active[ex.run.id]
            self.wakeup.set()
        if state != "evicted":  # (an evicted run's "end", waiting, was told when it parked)
            self.on_event("end", ex.run, state)

    def run_forever(self, until=None, idle_exit=False):
        """Loop until `until()` is true, or (idle_exit) nothing is left but runs waiting for events."""
        last_scan = None
        clock = self.clock
        poll = poll_seconds()
        while not self.stopping.is_set():
            now = clock.monotonic()
            if last_scan is None or now - last_scan >= RESCAN_SECONDS:
                expire_dead_local_owners(self.store)
                last_scan = now
            self.step()
            if until is not None and until():
                break
            if idle_exit and not self.active and not self.store.has_pending(self.root_id) \
                    and self.store.next_wake(self.root_id) is None:
                break
            # Wait until something may have changed.
            wait = poll
            wake = self.store.next_wake(self.root_id)
            if wake is not None:
                wait = min(wait, max(0.0, wake - clock.now()))
            if wait > 0 and not self.stopping.is_set():
                self.store.wait_for_change(wait, self.wakeup)
            self.wakeup.clear()

    # --- stopping ---------------------------------------------------------

    def request_stop(self, *_):
        """Stop claiming (a signal handler); a second request hurries the drain."""
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()
        self.wakeup.set()

    def drain(self):
        """Stop claiming, and stop each running execution before its next effect: effects in
        progress finish and are recorded; the runs stay resumable. `shutdown` follows."""
        self.stopping.set()
        self.evict_all()
        with self.lock:
            for ex in self.active.values():
                ex.gate.drain.set()

    def shutdown(self, interrupt=False, grace=5.0):
        """Stop claiming. With `interrupt`, ask running executions to stop at once (an effect
        in progress is cancelled; their runs stay resumable); then wait up to `grace` seconds."""
        self.stopping.set()
        self.evict_all()
        if interrupt:
            with self.lock:
                for ex in self.active.values():
                    ex.gate.cancel_reason = "interrupt"
                    ex.gate.cancel.set()
        end = self.clock.monotonic() + grace
        while self.active and self.clock.monotonic() < end:
            self.clock.sleep(0.05)
        if self.active:
            _end_process_groups()
        # evicted runs unwind their evaluation: let them end before the process may exit
        with self.lock:
            left = [t for t in self.threads if t is not threading.current_thread()]
            for _ in left:
                self._jobs.put(None)  # (an idle thread ends)
        for thread in left:
            thread.join(timeout=max(0.1, end - self.clock.monotonic()))
        if self.registered:
            self.registered = False
            self.store.worker_stopped(self.owner, self.clock.now())

    def register(self):
        """Enter this worker's identity (owner id = host:pid:token) in the workers table, shown by
        `flowmetal workers` and the web view; its heartbeat keeps it live, shutdown marks it stopped."""
        if not self.registered:
            self.store.worker_started(self.owner, socket.gethostname(), os.getpid(), self.clock.now())
            self.registered = True

    def stop(self, grace=10.0):
        """Drain within `grace` seconds: effects in progress may finish until HARD_STOP (or half
        the grace) before its end, then they are interrupted and their process groups ended."""
        started = self.clock.monotonic()
        deadline = started + grace
        soft = deadline - min(HARD_STOP, grace / 2)
        self.drain()
        while self.active and self.clock.monotonic() < soft and not self.hurry.is_set():
            self.clock.sleep(0.02)
        self.shutdown(interrupt=True, grace=max(0.0, deadline - self.clock.monotonic()))

    def serve(self, idle_exit=False, grace=10.0):
        """`flowmetal worker`: run until idle (idle_exit) or SIGTERM, then drain (`stop`).
        Returns the exit code: 0. (Ctrl-C still raises KeyboardInterrupt to the caller.)"""
        old = None
        if threading.current_thread() is threading.main_thread():
            old = signal.signal(signal.SIGTERM, self.request_stop)
        self.register()
        try:
            self.run_forever(idle_exit=idle_exit)
            self.stop(grace)
        finally:
            if old is not None:
                signal.signal(signal.SIGTERM, old)
        return 0


def _release_connection(store):
    """Close this thread's SQLite connection (a thread that ends or parks keeps none open)."""
    from flowmetal.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        store.close()


def _end_process_groups():
    """SIGKILL the process groups of `sh` effects still running in this process."""
    from flowmetal.engine.effects import sh

    for pgid in list(sh.LIVE_GROUPS):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def worker_rows(store, now):
    """The workers table for `flowmetal workers`, each row with its status: stopped, live
    (a heartbeat within LOST_AFTER seconds of `now`), or lost (killed, or its machine gone)."""
    rows = store.workers()
    for r in rows:
        if r["stopped_at"] is not None:
            r["status"] = "stopped"
        else:
            r["status"] = "live" if now - r["seen_at"] <= LOST_AFTER else "lost"
    return rows
