"""The worker: claims runnable runs and executes them, up to `concurrency` at once.

A run is runnable when it is pending, waiting with a wake time that has come,
or running under a lease that expired. Runs owned by a dead process on this
machine have their lease expired at once. A heartbeat thread renews the leases
of the runs this process executes and passes cancellation and timeouts to them.

Between claims the worker sleeps until the next wake time, but looks at
`PRAGMA data_version` (a cheap counter that changes when another connection
commits) every 100 ms, so a signal or a new run is seen within that time
without querying tables at a high rate.
"""

import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from flowmetal.engine.runner import Execution

LEASE_SECONDS = 30.0
HEARTBEAT_SECONDS = 0.5
RENEW_EVERY = 5.0
POLL_SECONDS = 0.1
RESCAN_SECONDS = 2.0


def make_owner():
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def expire_dead_local_owners(store):
    """Runs owned by a process on this machine that no longer exists are taken over at once."""
    host = socket.gethostname()
    for run in store.running_runs():
        owner = run["owner"] or ""
        parts = owner.split(":")
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            pid = int(parts[1])
            if pid != os.getpid() and not _pid_alive(pid):
                store.update_run(run["id"], if_owner=owner, lease_expires=0)


class Worker:
    def __init__(self, store, clock, concurrency=4, root_id=None, run_id=None, on_event=None):
        self.store, self.clock = store, clock
        self.concurrency = max(1, concurrency)
        self.root_id, self.run_id = root_id, run_id
        self.owner = make_owner()
        self.on_event = on_event or (lambda kind, run, state=None: None)
        self.active = {}  # run id -> Execution
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="flowmetal-run")
        self._heartbeat = threading.Thread(target=self._beat, name="flowmetal-heartbeat", daemon=True)
        self._heartbeat.start()

    # --- heartbeat --------------------------------------------------------

    def _beat(self):
        last_renew = 0.0
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            try:
                now = time.time()
                if now - last_renew >= RENEW_EVERY:
                    rows = self.store.renew_leases(self.owner, self.clock.now() + LEASE_SECONDS)
                    last_renew = now
                else:
                    rows = self.store.owned_runs(self.owner)
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
            except Exception:  # the heartbeat must outlive a locked database
                pass

    # --- the loop ---------------------------------------------------------

    def step(self):
        """Claim and start as many runnable runs as there are free slots. Returns how many started."""
        started = 0
        while len(self.active) < self.concurrency and not self.stopping.is_set():
            now = self.clock.now()
            run = self.store.claim_run(self.owner, now, now + LEASE_SECONDS, root_id=self.root_id, run_id=self.run_id)
            if run is None:
                break
            ex = Execution(self.store, run, self.owner, self.clock)
            with self.lock:
                self.active[run["id"]] = ex
            self.on_event("start", run)
            self.pool.submit(self._execute, ex)
            started += 1
        return started

    def _execute(self, ex):
        try:
            state = ex.execute()
        except Exception as e:  # a bug of ours must not kill the worker; the run stays resumable
            state = "error"
            self.on_event("error", ex.run, repr(e))
        finally:
            with self.lock:
                self.active.pop(ex.run["id"], None)
            self.wakeup.set()
        self.on_event("end", ex.run, state)

    def run_forever(self, until=None, idle_exit=False):
        """Loop until `until()` is true, or (idle_exit) nothing is left but runs waiting for events."""
        version = None
        last_scan = 0.0
        while not self.stopping.is_set():
            now = time.time()
            if now - last_scan >= RESCAN_SECONDS:
                expire_dead_local_owners(self.store)
                last_scan = now
            self.step()
            if until is not None and until():
                break
            if idle_exit and not self.active and not self.store.has_pending(self.root_id) \
                    and self.store.next_wake(self.root_id) is None:
                break
            # Sleep until something may have changed.
            deadline = time.time() + RESCAN_SECONDS
            wake = self.store.next_wake(self.root_id)
            if wake is not None:
                deadline = min(deadline, time.time() + max(0.0, wake - self.clock.now()))
            while time.time() < deadline and not self.stopping.is_set():
                if self.wakeup.wait(POLL_SECONDS):
                    self.wakeup.clear()
                    break
                current = self.store.data_version()
                if version is not None and current != version:
                    version = current
                    break
                version = current

    def drain(self):
        """Stop claiming, and stop each running execution before its next effect: effects in
        progress finish and are recorded; the runs stay resumable. `shutdown` follows."""
        self.stopping.set()
        with self.lock:
            for ex in self.active.values():
                ex.gate.drain.set()

    def shutdown(self, interrupt=False, grace=5.0):
        """Stop claiming. With `interrupt`, ask running executions to stop at their next effect
        (their runs stay resumable); then wait up to `grace` seconds for them."""
        self.stopping.set()
        if interrupt:
            with self.lock:
                for ex in self.active.values():
                    ex.gate.cancel_reason = "interrupt"
                    ex.gate.cancel.set()
        end = time.time() + grace
        while self.active and time.time() < end:
            time.sleep(0.05)
        self.pool.shutdown(wait=not self.active, cancel_futures=True)
