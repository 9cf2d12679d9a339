"""The store contract suite's backends, fixtures and helpers (store/base.py says what each
method promises; the test_contract_*.py modules check it).

To add a backend, add one entry to BACKENDS: a function (tmp_path, clock) -> store.
Every contract test then runs against it too. (Fixtures live here, imported by the
test modules, not in a conftest.py: a second module named `conftest` would shadow
tests/conftest.py for the tests that import from it.)
"""

import threading

import pytest

from flowmetal.clock import Clock


class ManualClock(Clock):
    """A clock the test moves by hand: `advance(seconds)`. Waits return at once."""

    def __init__(self, start=1_800_000_000.0):
        self.t = start
        self.lock = threading.Lock()

    def now(self):
        return self.t

    def now_ns(self):
        return int(self.t * 1e9)

    def monotonic(self):
        return self.t

    def sleep(self, seconds):
        self.advance(max(0.0, seconds))

    def wait(self, event, timeout):
        if not event.is_set() and timeout:
            self.advance(timeout)
        return event.is_set()

    def random(self):
        return 0.5

    def uuid(self):
        return "00000000-0000-4000-8000-000000000000"

    def advance(self, seconds):
        with self.lock:
            self.t += seconds


def add_run(store, clock, run_id, state="pending", parent_id=None, root_id=None, **extra):
    store.insert_run({"id": run_id, "file": "w.star", "function": "main", "args": "{}", "state": state,
                      "created_at": clock.now(), "root_id": root_id or run_id, "parent_id": parent_id, **extra})


def entry(run_id, seq, status="completed", result="1"):
    return {"run_id": run_id, "seq": seq, "builtin": "now", "args": "{}", "digest": f"d{seq}", "status": status,
            "result": result, "error": None, "data": None, "started_at": 1.0, "ended_at": 1.0}

def _sqlite(tmp_path, clock):
    from flowmetal.store.sqlite import SqliteStore

    return SqliteStore(tmp_path / "contract.db", clock=clock)


_cluster = None
_databases = {}


def _postgres(tmp_path, clock):
    """A fresh database per test (CREATE DATABASE takes a few ms) on one cluster per session;
    a second store of the same test opens the same database."""
    global _cluster
    import atexit

    from pgcluster import Cluster

    from flowmetal.store.postgres import PostgresStore

    if _cluster is None:
        _cluster = Cluster().start()
        atexit.register(_cluster.stop)
    url = _databases.get(tmp_path)
    if url is None:
        url = _databases[tmp_path] = _cluster.create_database(f"contract_{len(_databases)}")
    return PostgresStore(url, clock=clock, pool_size=4)


BACKENDS = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.postgres) if name == "postgres" else name
                        for name in sorted(BACKENDS)])
def backend(request):
    return BACKENDS[request.param]


@pytest.fixture
def store(backend, tmp_path, clock):
    st = backend(tmp_path, clock)
    yield st
    st.close()


@pytest.fixture
def other(backend, tmp_path, clock, store):
    """A second store on the same database: another process, as far as the contract goes."""
    st = backend(tmp_path, clock)
    yield st
    st.close()
