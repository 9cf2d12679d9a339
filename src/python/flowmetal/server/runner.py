"""Running `flowmetal serve`: uvicorn in the main thread, the worker and the
scheduler on threads of the same process, and one drain for all of them.

SIGTERM or SIGINT: the listening socket closes (no new connections), waiting
requests (long-polled results, live logs) answer at once, requests in flight
finish; the worker stops claiming and lets effects in progress finish within
`grace`, as `flowmetal schedule` does, leaving unfinished runs resumable; then
the process exits 0. A second signal stops waiting.
"""

import contextlib
import ipaddress
import signal
import socket
import threading
import time

from flowmetal.clock import SYSTEM

HARD_STOP = 2.5  # of the grace period, kept for interrupting what did not finish (as the scheduler's drain)


def parse_listen(text):
    """"HOST:PORT", "[V6]:PORT" or ":PORT" -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, like 127.0.0.1:8420")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host, port):
    """The listening socket (so an address in use is our error message, and port 0 works)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on every accepted connection: without it
    # a keep-alive client (a worker polling for tasks) waited ~40 ms per request for Nagle.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Background:
    """The worker and/or the scheduler, on threads; `stop()` drains them."""

    def __init__(self, store, root, paths, *, worker=True, scheduler=True, concurrency=4, grace=10.0,
                 schedule_event=None, worker_event=None, clock=SYSTEM):
        self.store, self.root, self.paths, self.clock = store, root, paths, clock
        self.with_worker, self.with_scheduler = worker, scheduler
        self.concurrency, self.grace = concurrency, grace
        self.schedule_event, self.worker_event = schedule_event, worker_event
        self.stopping = threading.Event()
        self.daemon = self.worker = self.thread = None

    def specs(self):
        entries = getattr(getattr(self.daemon, "scheduler", None), "entries", None) or {}
        for _ in range(3):
            try:
                return [e.spec for e in list(entries.values())]
            except RuntimeError:  # changed while being read: read again
                continue
        return []

    def start(self):
        from flowmetal.schedule.daemon import Daemon

        if self.with_scheduler:
            self.daemon = Daemon(self.store, self.root, self.paths, concurrency=self.concurrency, grace=self.grace,
                                 emit=self.schedule_event)
            target = self.daemon.run if self.with_worker else self._schedule_only
        elif self.with_worker:
            from flowmetal.engine.worker import Worker

            self.worker = Worker(self.store, self.clock, concurrency=self.concurrency, on_event=self.worker_event)
            target = self._work_only
        else:
            return
        self.thread = threading.Thread(target=self._guard, args=(target,), name="flowmetal-serve-background",
                                       daemon=True)
        self.thread.start()

    def _guard(self, target):
        """A bug in the scheduler must not leave the API without a worker: say so, and go on executing runs."""
        try:
            target()
        except Exception as e:
            emit = self.schedule_event or (lambda kind, **f: None)
            emit("error", message=f"the scheduler stopped on an internal error: {e!r}; "
                                  f"schedules do not fire until a restart")
            if self.with_worker and not self.stopping.is_set():
                from flowmetal.engine.worker import Worker

                self.worker = Worker(self.store, self.clock, concurrency=self.concurrency,
                                     on_event=self.worker_event)
                self._work_only()

    def _work_only(self):
        w = self.worker
        w.register()  # (`flowmetal workers` and the web view list it)
        runner = threading.Thread(target=w.run_forever, kwargs={"until": self.stopping.is_set}, daemon=True,
                                  name="flowmetal-serve-worker")
        runner.start()
        self.stopping.wait()
        deadline = time.monotonic() + self.grace
        soft = deadline - min(HARD_STOP, self.grace / 2)
        w.drain()
        while w.active and time.monotonic() < soft:
            time.sleep(0.02)
        w.shutdown(interrupt=True, grace=max(0.0, deadline - time.monotonic()))
        runner.join(timeout=max(0.1, deadline - time.monotonic()))

    def _schedule_only(self):
        """Fire schedules; the runs they start are executed by workers elsewhere (--no-worker)."""
        d = self.daemon
        emit = d.emit
        try:
            d.reload()
        except Exception as e:
            emit("error", message=f"loading schedules: {e}")
        emit("started", schedules=len(d.scheduler.entries), owner="(no worker: --no-worker)")
        last_poll = time.monotonic()
        while not self.stopping.is_set():
            try:
                if time.monotonic() - last_poll >= d.poll:
                    last_poll = time.monotonic()
                    if d.workspace.signature() != d.signature:
                        d.reload()
                d.scheduler.tick(self.clock.now())
            except Exception as e:  # keep firing the other schedules; say what went wrong
                emit("error", message=f"scheduler: {e}")
            wait = 0.5
            due = d.scheduler.next_due()
            if due is not None:
                wait = max(0.0, min(wait, due - self.clock.now()))
            self.stopping.wait(wait)
        emit("stopped", left=[])

    def stop(self, hurry=False):
        self.stopping.set()
        if self.daemon is not None and self.with_worker:
            self.daemon.request_stop()
            if hurry:
                self.daemon.request_stop()

    def reload(self):
        if self.daemon is not None:
            self.daemon.request_reload()

    def wake(self):
        """The API changed the database (a new run, a signal, a completed callback or task):
        this process's worker looks at once instead of at its next poll."""
        worker = self.worker or getattr(self.daemon, "worker", None)
        if worker is not None:
            worker.wakeup.set()

    def join(self):
        if self.thread is not None:
            self.thread.join(timeout=self.grace + 5.0)


def _server_class():
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn's server with our signal handling: SIGTERM/SIGINT drain everything
        (uvicorn's own would re-raise the signal after its shutdown, and the process
        would die by it instead of exiting 0)."""

        on_stop = staticmethod(lambda second: None)
        on_reload = staticmethod(lambda: None)

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handlers = {signal.SIGTERM: self._stop, signal.SIGINT: self._stop, signal.SIGHUP: self._reload}
            old = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

        def _stop(self, sig, frame):
            second = self.should_exit
            if second:
                self.force_exit = True
            self.should_exit = True
            self.on_stop(second)

        def _reload(self, sig, frame):
            self.on_reload()

    return DrainingServer


def serve(app, ctx, background, sock, *, grace, say=print):
    """Serve `app` on the bound socket `sock` until SIGTERM/SIGINT; drain; return the exit code."""
    import uvicorn

    config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=max(0.1, grace), server_header=False)
    server = _server_class()(config)
    stopping = {"at": None}

    def on_stop(second):
        if stopping["at"] is None:
            stopping["at"] = time.monotonic()
            say(f"stopping: no new requests; letting requests and effects in flight finish "
                f"(grace {grace:g}s)")
        ctx.changes.stop()
        background.stop(hurry=second)

    server.on_stop = on_stop
    server.on_reload = background.reload
    background.start()
    try:
        server.run(sockets=[sock])
    finally:
        background.stop()
        ctx.changes.stop()
        background.join()
    took = time.monotonic() - (stopping["at"] or time.monotonic())
    say(f"stopped in {took:.1f}s")
    return 0
