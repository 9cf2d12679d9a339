"""Fire-time arithmetic: syntax, time zones, the DST rule of SPEC section 5, jitter."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from flowmetal.schedule.cron import (
    check_cron,
    fires_between,
    follows_real_time,
    iter_fires,
    next_fires,
    normalize_cron,
    previous_fires,
    resolve_timezone,
    stable_jitter,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def local_day(expr, tz, y, m, d):
    """Fires during one local calendar day [00:00, 24:00) of `tz`."""
    zone = ZoneInfo(tz)
    day = datetime(y, m, d)
    start = day.replace(tzinfo=zone).astimezone(UTC) - timedelta(microseconds=1)
    end = (day + timedelta(days=1)).replace(tzinfo=zone).astimezone(UTC) - timedelta(microseconds=1)
    return fires_between(expr, tz, start, end)


def walls(fires, zone=BERLIN):
    return [f.astimezone(zone).strftime("%H:%M%z") for f in fires]


# ----------------------------------------------------------------- syntax


@pytest.mark.parametrize(
    "expr",
    ["0 3 * * *", "*/5 * * * *", "0 9 * * mon-fri", "15 4 1 jan,jul *", "* * * * * *", "0 3 * * * 30",
     "@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually", "@DAILY", "0 0 L * *"],
)
def test_valid_expressions(expr):
    assert check_cron(expr) is None


@pytest.mark.parametrize(
    "expr, reason",
    [
        ("61 * * * *", 'minute field "61"'),
        ("0 25 * * *", 'hour field "25"'),
        ("* * * * * 61", 'second field "61"'),
        ("* * *", "expected 5 fields"),
        ("0 0 1 1 * 2030 x", "expected 5 fields"),
        ("0 0 1 1 * 2030", None),  # 6 fields: the 6th is seconds, and 2030 is out of range
        ("0 0 31 2 *", "never fires"),
        ("@reboot", "@reboot is not a time"),
        ("@fortnightly", "unknown macro"),
        ("H * * * *", "H and R"),
        ("R 2 * * *", "H and R"),
        ("", "empty"),
    ],
)
def test_invalid_expressions_give_a_reason(expr, reason):
    problem = check_cron(expr)
    assert problem is not None
    if reason:
        assert reason in problem
    with pytest.raises(ValueError):
        normalize_cron(expr)


def test_day_names_are_not_mistaken_for_random_fields():
    assert check_cron("0 0 * mar thu") is None


def test_six_fields_put_seconds_last():
    after = datetime(2026, 6, 1, tzinfo=UTC)
    assert next_fires("0 3 * * * 30", "UTC", after, 2) == [
        datetime(2026, 6, 1, 3, 0, 30, tzinfo=UTC),
        datetime(2026, 6, 2, 3, 0, 30, tzinfo=UTC),
    ]


def test_every_second():
    after = datetime(2026, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)
    fires = next_fires("* * * * * *", "UTC", after, 10)
    assert fires[0] == datetime(2026, 6, 1, 12, 0, 1, tzinfo=UTC)
    assert [(b - a).total_seconds() for a, b in zip(fires, fires[1:])] == [1.0] * 9


def test_daily_macro_and_spec_objects():
    spec = SimpleNamespace(cron="@daily", timezone="Europe/Berlin")
    after = datetime(2026, 6, 1, 12, tzinfo=UTC)
    fires = next_fires(spec, None, after, 3)
    assert [f.astimezone(BERLIN).strftime("%m-%d %H:%M") for f in fires] == ["06-02 00:00", "06-03 00:00", "06-04 00:00"]
    assert fires[0] == datetime(2026, 6, 1, 22, tzinfo=UTC)
    assert all(f.tzinfo is UTC for f in fires)
    assert next_fires(spec, "UTC", after, 1) == [datetime(2026, 6, 2, tzinfo=UTC)]  # tz overrides


def test_start_is_exclusive_and_end_inclusive():
    start = datetime(2026, 6, 1, 10, tzinfo=UTC)
    end = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert fires_between("0 * * * *", "UTC", start, end) == [datetime(2026, 6, 1, 11, tzinfo=UTC), end]
    assert fires_between("0 * * * *", "UTC", start, end, limit=1) == [datetime(2026, 6, 1, 11, tzinfo=UTC)]


# ------------------------------------------------------------- time zones


def test_unknown_timezone():
    with pytest.raises(ValueError, match='unknown timezone "Mars/Base"'):
        resolve_timezone("Mars/Base")
    assert resolve_timezone("UTC") is UTC


def test_local_timezone_follows_TZ(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert str(resolve_timezone("local")) == "Europe/Berlin"
    after = datetime(2026, 1, 10, tzinfo=UTC)
    assert next_fires("0 9 * * *", "local", after, 2) == next_fires("0 9 * * *", "Europe/Berlin", after, 2)
    assert next_fires("0 9 * * *", "local", after, 1) == [datetime(2026, 1, 10, 8, tzinfo=UTC)]


def test_local_timezone_without_TZ_uses_the_system_zone(monkeypatch):
    monkeypatch.delenv("TZ", raising=False)
    zone = resolve_timezone("local")
    assert datetime(2026, 1, 1, tzinfo=zone).utcoffset() is not None


# ------------------------------------------------------- daylight saving


@pytest.mark.parametrize("days", [(2026, 3, (28, 29, 30)), (2026, 10, (24, 25, 26))])
def test_fixed_hour_job_runs_once_each_day_around_dst(days):
    y, m, ds = days
    for d in ds:
        assert len(local_day("30 2 * * *", "Europe/Berlin", y, m, d)) == 1, (m, d)


def test_fixed_hour_job_times_on_dst_days():
    # clocks go forward 02:00 -> 03:00: the skipped 02:30 runs at the first valid instant, 03:00
    assert local_day("30 2 * * *", "Europe/Berlin", 2026, 3, 29) == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]
    # clocks go back 03:00 -> 02:00: 02:30 happens twice, the job runs at the first one only
    assert local_day("30 2 * * *", "Europe/Berlin", 2026, 10, 25) == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC)]


def test_skipped_wall_times_collapse_into_one_fire():
    assert local_day("0,15,30,45 2 * * *", "Europe/Berlin", 2026, 3, 29) == [datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]
    assert walls(local_day("0,15,30,45 2 * * *", "Europe/Berlin", 2026, 10, 25)) == [
        "02:00+0200", "02:15+0200", "02:30+0200", "02:45+0200"]
    # 02:00 is skipped and maps onto 03:00, which is also a fire: one fire, not two
    assert walls(local_day("0 2,3 * * *", "Europe/Berlin", 2026, 3, 29)) == ["03:00+0200"]


def test_wildcard_hour_follows_real_hours():
    spring = local_day("0 * * * *", "Europe/Berlin", 2026, 3, 29)
    autumn = local_day("0 * * * *", "Europe/Berlin", 2026, 10, 25)
    assert len(spring) == 23
    assert len(autumn) == 25
    assert "02:00+0100" not in walls(spring)
    assert walls(autumn)[2:4] == ["02:00+0200", "02:00+0100"]
    assert len(set(autumn)) == 25 and autumn == sorted(autumn)
    assert [(b - a) for a, b in zip(autumn, autumn[1:])] == [timedelta(hours=1)] * 24


def test_stepped_hour_counts_as_wildcard():
    assert follows_real_time("30 */2 * * *") and follows_real_time("@hourly") and follows_real_time("*/5 3 * * *")
    assert not follows_real_time("30 0-23 * * *") and not follows_real_time("@daily")
    autumn = walls(local_day("30 */2 * * *", "Europe/Berlin", 2026, 10, 25))
    assert autumn[:4] == ["00:30+0200", "02:30+0200", "02:30+0100", "04:30+0100"]


def test_every_second_across_the_autumn_fold_is_strictly_increasing():
    start = datetime(2026, 10, 25, 0, 59, 58, tzinfo=UTC)  # 02:59:58+02:00
    fires = next_fires("* * * * * *", "Europe/Berlin", start, 4)
    assert fires == [start + timedelta(seconds=s) for s in range(1, 5)]


def test_next_fires_from_inside_the_fold():
    start = datetime(2026, 10, 25, 0, 15, tzinfo=UTC)  # 02:15, first pass
    assert walls(next_fires("*/30 * * * *", "Europe/Berlin", start, 4)) == [
        "02:30+0200", "02:00+0100", "02:30+0100", "03:00+0100"]


def test_agrees_with_croniter_away_from_dst():
    start = datetime(2026, 6, 1, tzinfo=UTC)
    end = start + timedelta(days=7)
    for expr in ("0 3 * * *", "*/7 9-17 * * mon-fri", "15 4 1,15 * *", "0 0 * * 0", "0 */3 * * *"):
        it = croniter(expr, start.astimezone(BERLIN))
        expected = []
        while True:
            f = it.get_next(datetime).astimezone(UTC)
            if f > end:
                break
            expected.append(f)
        assert fires_between(expr, "Europe/Berlin", start, end) == expected, expr


@pytest.mark.parametrize("expr", ["*/20 * * * *", "20 2 * * *", "*/20 1-3 * * *", "0 * * * *", "@hourly"])
@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"])
def test_backward_walk_matches_forward_walk(expr, tz):
    # covers the 2026 transitions of Berlin (3-29, 10-25), New York (3-8, 11-1), Lord Howe (4-5, 10-4)
    for start in (datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 10, 23, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC),
                  datetime(2026, 10, 31, tzinfo=UTC), datetime(2026, 4, 3, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)):
        end = start + timedelta(days=4)
        forward = fires_between(expr, tz, start, end)
        assert forward == sorted(set(forward))
        assert previous_fires(expr, tz, end, len(forward) + 5, after=start) == forward
        backward = []
        for f in iter_fires(expr, tz, end, reverse=True):
            if f <= start:
                break
            backward.append(f)
        assert backward[::-1] == forward


# ----------------------------------------------------------------- jitter


def test_stable_jitter_is_stable_bounded_and_spread():
    fire = datetime(2026, 6, 1, 3, tzinfo=UTC)
    assert stable_jitter("nightly", fire, 300) == stable_jitter("nightly", fire, 300)
    assert stable_jitter("nightly", fire, 300) == stable_jitter("nightly", fire.astimezone(BERLIN), 300)
    values = [stable_jitter("nightly", fire + timedelta(days=i), 300) for i in range(1000)]
    assert all(0 <= v < 300 for v in values)
    assert len(set(values)) > 900
    assert min(values) < 30 and max(values) > 270  # spread over the range
    assert stable_jitter("other", fire, 300) != stable_jitter("nightly", fire, 300)
    assert stable_jitter("nightly", fire, 0) == 0.0
    assert all(0 <= stable_jitter(str(i), fire, 0.002) < 0.002 for i in range(100))
