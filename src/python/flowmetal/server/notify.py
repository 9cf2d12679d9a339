"""`Changes`: wakes waiting requests (long-polled results, live logs) when the
database changes, without each of them polling.

One thread asks the store, `POLL` seconds at a time, whether another connection
committed (`Store.wait_for_change`; for SQLite, `PRAGMA data_version` moving: the
worker's threads, the CLI, another process on the same file); when it has,
every waiter wakes and looks.
"""

import asyncio
import threading

POLL = 0.05


class Changes:
    def __init__(self, store, poll=POLL):
        self.store, self.poll = store, poll
        self.loop = None
        self.event = None
        self.stopping = threading.Event()
        self._thread = None

    def start(self):
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self._thread = threading.Thread(target=self._watch, name="flowmetal-changes", daemon=True)
        self._thread.start()

    def _watch(self):
        while not self.stopping.is_set():
            try:
                changed = self.store.wait_for_change(self.poll, self.stopping)
            except Exception:  # a locked database: look again next time
                self.stopping.wait(self.poll)
                continue
            if changed and not self.stopping.is_set():
                self._fire()

    def _fire(self):
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _wake(self):
        event, self.event = self.event, asyncio.Event()
        event.set()

    def notify(self):
        """Something in this process changed the database (or is stopping): wake the waiters."""
        self._fire()

    def stop(self):
        """The server is stopping: waiters return at once and should answer now."""
        self.stopping.set()
        self._fire()

    async def wait(self, timeout):
        """Return after the next change, or after `timeout` seconds, or at once when stopping."""
        if self.stopping.is_set() or self.event is None:
            if self.event is None and not self.stopping.is_set():
                await asyncio.sleep(min(timeout, self.poll))
            return
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
