"""Cron semantics exactly as Vixie cron's (issue 12, items 16-18), one test per defect,
and explicit expected fire times on the DST days of zones with 30-minute shifts
(Australia/Lord_Howe) and odd offsets (Pacific/Chatham, America/St_Johns), where the
differential oracle (cronsim) cannot be trusted."""

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from flowmetal.schedule.cron import check_cron, fires_between, follows_real_time, next_fires, previous_fires

UTC = timezone.utc


def year_days(expr, tz="UTC", year=2026):
    """The local dates on which `expr` fires during `year` (in `tz`)."""
    zone = ZoneInfo(tz)
    start = datetime(year, 1, 1, tzinfo=zone).astimezone(UTC) - timedelta(microseconds=1)
    end = datetime(year + 1, 1, 1, tzinfo=zone).astimezone(UTC) - timedelta(microseconds=1)
    return sorted({f.astimezone(zone).date() for f in fires_between(expr, tz, start, end)})


def local_day(expr, tz, y, m, d):
    """Fires during one local calendar day [00:00, 24:00) of `tz`, as local 'HH:MM:SS+hhmm' strings."""
    zone = ZoneInfo(tz)
    day = datetime(y, m, d)
    start = day.replace(tzinfo=zone).astimezone(UTC) - timedelta(microseconds=1)
    end = (day + timedelta(days=1)).replace(tzinfo=zone).astimezone(UTC) - timedelta(microseconds=1)
    fires = fires_between(expr, tz, start, end)
    assert fires == sorted(set(fires))
    assert previous_fires(expr, tz, end, len(fires) + 3, after=start) == fires  # the backward walk agrees
    return [f.astimezone(zone).strftime("%H:%M:%S%z") for f in fires]


def all_days(year=2026):
    d = date(year, 1, 1)
    while d.year == year:
        yield d
        d += timedelta(days=1)


# ------------------------------------------------ item 16: day-of-month and day-of-week


def test_a_day_field_starting_with_star_makes_both_fields_required():
    # `*/4` in day-of-week is 0,4 (Sunday, Thursday): only the 1st of a month that is a Sunday or Thursday
    expected = [d for d in all_days() if d.day == 1 and d.isoweekday() % 7 in (0, 4)]
    assert year_days("* 3 1 * */4") == expected == [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1),
                                                    date(2026, 10, 1), date(2026, 11, 1)]
    # `*/10` in day-of-month (1, 11, 21, 31) with Monday: both again
    assert year_days("0 0 */10 * mon") == [d for d in all_days() if d.day in (1, 11, 21, 31) and d.isoweekday() == 1]
    # both restricted: either
    assert year_days("0 0 1 * mon") == [d for d in all_days() if d.day == 1 or d.isoweekday() == 1]


def test_last_and_nth_weekday_keep_the_day_of_month_side():
    # the last day of the month OR the last Saturday of the month
    days = year_days("58 * L * 6L")
    assert date(2026, 3, 28) in days and date(2026, 3, 31) in days  # last Saturday; last day (a Tuesday)
    expected = [d for d in all_days() if (d + timedelta(days=1)).month != d.month
                or (d.isoweekday() == 6 and (d + timedelta(days=7)).month != d.month)]
    assert days == expected
    # the 9th of February to April OR their third Monday
    assert year_days("4 * 9 2-4 1#3") == [date(2026, 2, 9), date(2026, 2, 16), date(2026, 3, 9), date(2026, 3, 16),
                                          date(2026, 4, 9), date(2026, 4, 20)]
    # with `*` in day-of-month it is AND, so "#" alone decides
    assert year_days("0 12 * 1 fri#2") == [date(2026, 1, 9)]


@pytest.mark.parametrize("expr, first", [
    ("0 0 31 2 1#5", datetime(2044, 2, 29, tzinfo=UTC)),  # Feb 31 never, but a fifth Monday of February does
    ("0 0 31 4 1#5", datetime(2029, 4, 30, tzinfo=UTC)),
    ("0 0 30 2 6L", datetime(2026, 2, 28, tzinfo=UTC)),
    ("0 0 31 6 0L", datetime(2026, 6, 28, tzinfo=UTC)),
])
def test_expressions_that_fire_are_not_refused_as_never_firing(expr, first):
    assert check_cron(expr) is None
    assert next_fires(expr, "UTC", datetime(2026, 1, 1, tzinfo=UTC), 1) == [first]


def test_expressions_that_never_fire_are_still_refused():
    for expr in ("0 0 31 2 *", "0 0 30 2 *", "0 0 30-31 2 *", "0 0 31 4,6,9,11 *"):
        assert "never fires" in check_cron(expr), expr
    assert check_cron("0 0 31 2 */3") is not None  # AND: February never has a 31st


# ------------------------------------------------------ item 17: ranges and steps


def test_a_one_value_range_is_one_value():
    assert {d.isoweekday() for d in year_days("0 0 * * SAT-SAT")} == {6}
    assert year_days("0 0 15-15 * *") == [date(2026, m, 15) for m in range(1, 13)]
    assert {d.month for d in year_days("0 0 1 jun-jun *")} == {6}
    # a step on a one-value range is still that one value
    assert year_days("0 0 1 9-9/3 *") == [date(2026, 9, 1)]


def test_a_day_of_week_step_runs_to_seven_which_is_sunday():
    assert {d.isoweekday() % 7 for d in year_days("0 0 * * 3/2")} == {3, 5, 0}  # Wed, Fri, Sun
    assert {d.isoweekday() % 7 for d in year_days("0 0 * * 5-7")} == {5, 6, 0}
    assert {d.isoweekday() % 7 for d in year_days("0 0 * * */2")} == {0, 2, 4, 6}
    assert {d.isoweekday() % 7 for d in year_days("0 0 * * 1-7/3")} == {1, 4, 0}


@pytest.mark.parametrize("expr, reason", [
    ("0 0 * * fri-mon", "runs backwards"),
    ("0 0 * * 8", "day-of-week field \"8\" is not acceptable, out of range"),
    ("0 0 * * 1#6", "#1 to #5"),
    ("0 0 * * L", "L"),
    ("0 0 * * */0", "above 0"),
    ("0 0 1,,2 * *", "empty list item"),
    ("0 0 * foo *", '"foo" is not a number (names: jan'),
    ("0 0 15W * *", "W (the weekday nearest a date) is not supported"),
    ("0 0 1-L * *", "L is the last day of the month"),
])
def test_bad_fields_name_the_field_and_the_reason(expr, reason):
    problem = check_cron(expr)
    assert problem is not None and reason in problem, problem


# ------------------------------------------------------- item 18: daylight saving


def test_a_star_in_the_minute_field_makes_a_wildcard_job():
    assert follows_real_time("* 1 * * *") and follows_real_time("*/15 2 * * *")
    assert follows_real_time("* 3 * * * 0")  # six fields: minute and hour are still fields 1 and 2
    assert not follows_real_time("0 3 * * * *")  # the seconds field does not count
    assert not follows_real_time("30 2 * * *") and not follows_real_time("0 0-23 * * *")
    # New York, 2026-11-01: 01:00-01:59 happens twice; every minute of it fires, twice
    fires = local_day("* 1 * * *", "America/New_York", 2026, 11, 1)
    assert len(fires) == 120
    assert fires[0] == "01:00:00-0400" and fires[59] == "01:59:00-0400"
    assert fires[60] == "01:00:00-0500" and fires[-1] == "01:59:00-0500"
    # Berlin, 2026-03-29: 02:00-02:59 does not exist, so a wildcard job at hour 2 does not fire
    assert local_day("*/15 2 * * *", "Europe/Berlin", 2026, 3, 29) == []
    assert local_day("*/15 2 * * *", "Europe/Berlin", 2026, 10, 25) == [
        "02:00:00+0200", "02:15:00+0200", "02:30:00+0200", "02:45:00+0200",
        "02:00:00+0100", "02:15:00+0100", "02:30:00+0100", "02:45:00+0100"]


def test_six_field_expressions_follow_the_same_rule():
    # wildcard minute, seconds given: real time, both passes of the repeated hour
    assert len(local_day("* 2 * * * 30", "Europe/Berlin", 2026, 10, 25)) == 120
    # fixed minute and hour, every tenth second: once, at the first pass; a skipped minute is one fire
    autumn = local_day("0 2 * * * */10", "Europe/Berlin", 2026, 10, 25)
    assert autumn == [f"02:00:{s:02d}+0200" for s in range(0, 60, 10)]
    assert local_day("0 2 * * * */10", "Europe/Berlin", 2026, 3, 29) == ["03:00:00+0200"]
    assert local_day("0 2 * * * 30", "Europe/Berlin", 2026, 3, 29) == ["03:00:00+0200"]


# Explicit expected values for zones where cronsim is not an oracle, and for St John's.
# 2026 transitions: Lord Howe 04-05 02:00+11 -> 01:30+10:30, 10-04 02:00+10:30 -> 02:30+11;
# Chatham 04-05 03:45+13:45 -> 02:45+12:45, 09-27 02:45+12:45 -> 03:45+13:45;
# St John's 03-08 02:00-03:30 -> 03:00-02:30, 11-01 02:00-02:30 -> 01:00-03:30.
@pytest.mark.parametrize("expr, tz, day, expected", [
    # Lord Howe, clocks back 30 minutes: 01:30-01:59 happens twice
    ("45 1 * * *", "Australia/Lord_Howe", (2026, 4, 5), ["01:45:00+1100"]),
    ("*/20 1 * * *", "Australia/Lord_Howe", (2026, 4, 5),
     ["01:00:00+1100", "01:20:00+1100", "01:40:00+1100", "01:40:00+1030"]),
    ("0 * * * *", "Australia/Lord_Howe", (2026, 4, 5), [f"{h:02d}:00:00+1100" for h in range(0, 2)]
     + [f"{h:02d}:00:00+1030" for h in range(2, 24)]),
    ("*/30 * * * *", "Australia/Lord_Howe", (2026, 4, 5), ["00:00:00+1100", "00:30:00+1100", "01:00:00+1100",
     "01:30:00+1100", "01:30:00+1030"] + [f"{h:02d}:{m:02d}:00+1030" for h in range(2, 24) for m in (0, 30)]),
    # Lord Howe, clocks forward 30 minutes: 02:00-02:29 does not exist
    ("15 2 * * *", "Australia/Lord_Howe", (2026, 10, 4), ["02:30:00+1100"]),
    ("0,15,45 2 * * *", "Australia/Lord_Howe", (2026, 10, 4), ["02:30:00+1100", "02:45:00+1100"]),
    ("*/15 2 * * *", "Australia/Lord_Howe", (2026, 10, 4), ["02:30:00+1100", "02:45:00+1100"]),
    ("0 2 * * * 30", "Australia/Lord_Howe", (2026, 10, 4), ["02:30:00+1100"]),
    # Chatham, clocks back at 03:45 to 02:45: 02:45-03:44 happens twice
    ("0,30 3 * * *", "Pacific/Chatham", (2026, 4, 5), ["03:00:00+1345", "03:30:00+1345"]),
    ("*/30 3 * * *", "Pacific/Chatham", (2026, 4, 5),
     ["03:00:00+1345", "03:30:00+1345", "03:00:00+1245", "03:30:00+1245"]),
    ("50 2 * * *", "Pacific/Chatham", (2026, 4, 5), ["02:50:00+1345"]),
    ("45 * * * *", "Pacific/Chatham", (2026, 4, 5), ["00:45:00+1345", "01:45:00+1345", "02:45:00+1345",
     "02:45:00+1245"] + [f"{h:02d}:45:00+1245" for h in range(3, 24)]),
    # Chatham, clocks forward at 02:45 to 03:45: 02:45-03:44 does not exist
    ("0 3 * * *", "Pacific/Chatham", (2026, 9, 27), ["03:45:00+1345"]),
    ("50 2,3 * * *", "Pacific/Chatham", (2026, 9, 27), ["03:45:00+1345", "03:50:00+1345"]),
    ("*/29 3 * * *", "Pacific/Chatham", (2026, 9, 27), ["03:58:00+1345"]),
    ("30 2 * * *", "Pacific/Chatham", (2026, 9, 27), ["02:30:00+1245"]),
    # St John's (UTC-3:30 / -2:30)
    ("30 2 * * *", "America/St_Johns", (2026, 3, 8), ["03:00:00-0230"]),
    ("*/30 2 * * *", "America/St_Johns", (2026, 3, 8), []),
    ("30 1 * * *", "America/St_Johns", (2026, 11, 1), ["01:30:00-0230"]),
    ("30 * * * *", "America/St_Johns", (2026, 11, 1), ["00:30:00-0230", "01:30:00-0230", "01:30:00-0330"]
     + [f"{h:02d}:30:00-0330" for h in range(2, 24)]),
])
def test_dst_days_in_zones_with_odd_offsets(expr, tz, day, expected):
    assert local_day(expr, tz, *day) == expected


@pytest.mark.parametrize("tz, spring, autumn", [
    ("Australia/Lord_Howe", (2026, 10, 4), (2026, 4, 5)),
    ("Pacific/Chatham", (2026, 9, 27), (2026, 4, 5)),
    ("America/St_Johns", (2026, 3, 8), (2026, 11, 1)),
])
def test_every_minute_follows_real_time_in_zones_with_odd_offsets(tz, spring, autumn):
    shift = 30 if tz == "Australia/Lord_Howe" else 60
    assert len(local_day("* * * * *", tz, *spring)) == 1440 - shift
    autumn_fires = local_day("* * * * *", tz, *autumn)
    assert len(autumn_fires) == 1440 + shift
    # and a fixed-time job at every minute of the day fires once per wall minute, the skipped ones collapsed
    every = ",".join(str(m) for m in range(60))
    assert len(local_day(f"{every} 0-23 * * *", tz, *autumn)) == 1440
    # the skipped minutes collapse into the transition instant, which is itself a fire (its wall minute exists)
    assert len(local_day(f"{every} 0-23 * * *", tz, *spring)) == 1440 - shift
