"""`since`/`until` of service.list_runs (the runs page and GET /api/v1/runs), on a real
SQLite store: runs created at chosen times by a virtual clock, listed in pages of every
size, must be exactly the runs created in [since, until), newest first, whatever the
page boundaries; also ids stamped a moment before created_at (a spawned child's)."""

import datetime

import pytest

from flowmetal.engine.lifecycle import create
from flowmetal.errors import UserError
from flowmetal.ids import new_run_id
from flowmetal.server import service
from flowmetal.store.sqlite import SqliteStore
from flowmetal.testing.clock import VirtualClock

T0 = 1_796_117_400.0  # 2026-12-01T09:30:00Z


@pytest.fixture
def made(tmp_path):
    store = SqliteStore(tmp_path / "fm.db")
    clock = VirtualClock(start=T0)
    created = {}
    for i in range(40):
        clock.set(T0 + i * 0.5)  # every half second for 20 s
        run_id = None
        if i % 7 == 3:  # an id stamped 2 s before its created_at, as a child's can be
            run_id = new_run_id(clock.now() - 2.0, clock)
        rid = create(store, clock, file="f.star", function="main", args={}, texts={"f.star": "def main(): pass"},
                     run_id=run_id)
        created[rid] = clock.now()
    yield store, created
    store.close()


def every_page(store, limit, **kw):
    out, cursor = [], None
    while True:
        page = service.list_runs(store, limit=limit, cursor=cursor, now=T0 + 3600, **kw)
        assert len(page["runs"]) <= limit
        out += [r["id"] for r in page["runs"]]
        if page["next"] is None:
            return out
        cursor = page["next"]


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
@pytest.mark.parametrize("since,until", [(T0 + 5, T0 + 12.5), (T0 + 5.25, None), (None, T0 + 1), (T0 - 10, T0 + 99),
                                         (T0 + 7, T0 + 7), (T0 + 6.5, T0 + 7.0)])
def test_pages_hold_exactly_the_runs_in_the_range(made, limit, since, until):
    store, created = made
    want = sorted((r for r, t in created.items() if (since is None or t >= since) and (until is None or t < until)),
                  reverse=True)
    assert every_page(store, limit, since=since, until=until) == want


def test_the_forms_of_a_time(made):
    store, created = made
    iso = datetime.datetime.fromtimestamp(T0 + 5, datetime.timezone.utc)
    want = every_page(store, 50, since=T0 + 5)
    assert len(want) == 30
    for text in (str(T0 + 5), iso.strftime("%Y-%m-%dT%H:%M:%SZ"), iso.strftime("%Y-%m-%dT%H:%M:%S"),
                 iso.astimezone(datetime.timezone(datetime.timedelta(hours=1))).isoformat()):
        assert every_page(store, 50, since=text) == want, text
    # a duration is that long before now (now = T0 + 3600 here)
    assert every_page(store, 50, since="3595s") == want
    assert every_page(store, 50, since="2026-12-01", until="2026-12-02") == every_page(store, 50)
    for bad in ("soon", "2026-02-30", "-5", "1e30", "inf"):
        with pytest.raises(UserError, match="since="):
            service.list_runs(store, since=bad, now=T0)
