"""A run with 10,000 journal entries: its page (paginated journal) loads in under
a second; prints the page's time next to the API's for the same run (pytest -s)."""

import re
import time

import pytest

from serverutil import Served, workspace

pytestmark = pytest.mark.timeout(90)

FLOWS = """
def many(n = 10000):
    t = 0
    for i in range(n):
        t = now()
    return n
"""


def best_of(fn, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def test_a_10000_entry_run_page_loads_under_a_second(tmp_path):
    root, db = workspace(tmp_path, {"flows.star": FLOWS})
    s = Served(root, db, "flows.star", "--no-worker")
    token = s.token("perf", "read")
    out = s.cli("run", "flows.star:many")
    assert out.returncode == 0, out.stderr
    run_id = s.rows("SELECT id FROM runs")[0][0]
    assert s.rows("SELECT count(*) FROM journal")[0][0] == 10000
    s.start()
    try:
        with s.client() as web, s.client(token) as api:
            csrf = re.search(r'name="csrf" value="([^"]+)"', web.get("/login").text).group(1)
            assert web.post("/login", data={"csrf": csrf, "token": token, "next": "/"}).status_code == 303

            def page():
                r = web.get(f"/runs/{run_id}")
                assert r.status_code == 200 and "Journal (10000 entries)" in r.text
                assert r.text.count('class="entry ') == 200

            def later_page():
                r = web.get(f"/runs/{run_id}?after=9800")
                assert r.status_code == 200 and r.text.count('class="entry ') == 200 and 'data-seq="10000"' in r.text

            def api_show():
                assert len(api.get(f"/api/v1/runs/{run_id}").json()["journal"]) == 10000

            t_page, t_later, t_api = best_of(page), best_of(later_page), best_of(api_show)
        print(f"\n10,000-entry run: web page {t_page * 1000:.0f} ms (last page {t_later * 1000:.0f} ms), "
              f"API GET /api/v1/runs/ID {t_api * 1000:.0f} ms")
        assert t_page < 1.0 and t_later < 1.0
    finally:
        s.kill()
