"""One contract suite for every store backend (store/base.py says what each method promises).

To add a backend, add one entry to BACKENDS: a function (tmp_path, clock) -> store.
Every test in this directory then runs against it too.
"""

import pytest
from contract_helpers import ManualClock


def _sqlite(tmp_path, clock):
    from flowmetal.store.sqlite import SqliteStore

    return SqliteStore(tmp_path / "contract.db", clock=clock)


BACKENDS = {
    "sqlite": _sqlite,
}


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture(params=sorted(BACKENDS))
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
