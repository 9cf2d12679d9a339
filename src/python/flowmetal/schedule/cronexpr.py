"""Cron expressions as Vixie cron reads them: parsing, matching, and the next or
previous matching *naive wall time*. No time zones here (see `cron.py`).

The fields are ``minute hour day-of-month month day-of-week [second]``: an
optional sixth field is seconds (Flowmetal's convention, seconds LAST).

Each field is a comma-separated list of terms:

- ``*`` (also ``?``) for every value; ``N``; a range ``A-B`` (``SAT-SAT`` is
  one value; a range that runs backwards, ``fri-mon``, is refused: write
  ``fri-sat,sun-mon``); a step ``*/S``, ``A-B/S`` or ``A/S`` (from A to the
  end of the field). Names (``jan``..``dec``, ``sun``..``sat``) in any case.
- Day-of-week runs 0-7, ``0`` and ``7`` both Sunday, so a step runs to 7:
  ``3/2`` is Wednesday, Friday and Sunday; ``*/2`` is 0,2,4,6.
- Day-of-month ``L`` is the last day of the month, ``LW`` its last weekday
  (Monday to Friday). Quartz's ``15W`` (the weekday nearest the 15th) is refused.
- Day-of-week ``5L`` (also ``L5``, ``friL``) is the month's last Friday;
  ``5#3`` (``fri#3``) its third Friday (``#`` from 1 to 5).

Day-of-month and day-of-week, as Vixie cron: when either field *starts with*
``*`` (``*``, ``*/4``), a day must match BOTH; when both are restricted, a day
matching EITHER fires. ``L`` and ``#`` terms take part in this like any other.
"""

import calendar
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week", "second")
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7), (0, 59))
_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_NAMES = {3: _MONTHS, 4: _DAYS}
_MINUTE, _HOUR, _DOM, _MONTH, _DOW, _SECOND = range(6)
_DAY = timedelta(days=1)
_SEARCH_YEARS = 401  # the Gregorian calendar repeats every 400 years


class CronSyntaxError(ValueError):
    """A field that is not valid: the message names the field and the reason."""


@dataclass(frozen=True)
class CronExpr:
    """A parsed expression. Sets are of ints; `dows` uses 0-6 (0 = Sunday)."""

    seconds: tuple
    minutes: tuple
    hours: tuple
    doms: frozenset
    dom_last: bool  # L
    dom_last_weekday: bool  # LW
    months: frozenset
    dows: frozenset
    dow_last: frozenset  # weekdays W in "WL": the last W of the month
    dow_nth: frozenset  # (weekday, n) in "W#n"
    day_and: bool  # a day field starts with "*": both must match
    real_time: bool  # the minute or the hour field starts with "*" (see cron.py)

    # ------------------------------------------------------------ matching

    def matches_day(self, d):
        days_in = calendar.monthrange(d.year, d.month)[1]
        dom = (d.day in self.doms or (self.dom_last and d.day == days_in)
               or (self.dom_last_weekday and d.day == _last_weekday(d.year, d.month, days_in)))
        if self.day_and and not dom:
            return False
        wd = (d.weekday() + 1) % 7
        dow = (wd in self.dows or (wd in self.dow_last and d.day + 7 > days_in)
               or (wd, (d.day + 6) // 7) in self.dow_nth)
        return dom and dow if self.day_and else dom or dow

    def matches(self, wall):
        return (wall.month in self.months and wall.hour in self.hours and wall.minute in self.minutes
                and wall.second in self.seconds and self.matches_day(wall.date()))

    # ------------------------------------------------------------ searching

    def next_after(self, wall):
        """The first matching whole-second wall time strictly after `wall` (naive), or None."""
        t = wall.replace(microsecond=0) + timedelta(seconds=1)
        day, tod = t.date(), (t.hour, t.minute, t.second)
        for d in self._days(day, forward=True):
            found = _next_tod(self.hours, self.minutes, self.seconds, *tod) if d == day else \
                (self.hours[0], self.minutes[0], self.seconds[0])
            if found is not None:
                return datetime(d.year, d.month, d.day, *found)
        return None

    def at_or_before(self, wall):
        """The last matching whole-second wall time at or before `wall` (naive), or None."""
        day, tod = wall.date(), (wall.hour, wall.minute, wall.second)
        for d in self._days(day, forward=False):
            found = _prev_tod(self.hours, self.minutes, self.seconds, *tod) if d == day else \
                (self.hours[-1], self.minutes[-1], self.seconds[-1])
            if found is not None:
                return datetime(d.year, d.month, d.day, *found)
        return None

    def _days(self, start, *, forward):
        """Matching days from `start` on (or back), for at most one Gregorian cycle."""
        d, limit = start, _SEARCH_YEARS
        first_year = start.year
        try:
            while abs(d.year - first_year) <= limit:
                if d.month not in self.months:
                    if forward:
                        d = (d.replace(day=28) + 4 * _DAY).replace(day=1)
                    else:
                        d = d.replace(day=1) - _DAY
                    continue
                if self.matches_day(d):
                    yield d
                d = d + _DAY if forward else d - _DAY
        except OverflowError:  # past year 9999 or before year 1
            return

    def ever_fires(self):
        """True if some date matches. Exact: every (month, first weekday, leap year)
        combination occurs in the Gregorian calendar."""
        for month in self.months:
            for year in _YEAR_OF_EACH_KIND:
                if any(self.matches_day(date(year, month, day))
                       for day in range(1, calendar.monthrange(year, month)[1] + 1)):
                    return True
        return False


# years 2000-2027 hold every weekday for January 1st in both leap and common years
_YEAR_OF_EACH_KIND = tuple(range(2000, 2028))


def _last_weekday(year, month, days_in):
    wd = calendar.weekday(year, month, days_in)  # Monday = 0
    return days_in - max(0, wd - 4)


def _next_tod(hours, minutes, seconds, h, m, s):
    """The smallest (hour, minute, second) >= (h, m, s) from the sorted tuples, or None."""
    i = bisect_left(hours, h)
    if i < len(hours) and hours[i] == h:
        j = bisect_left(minutes, m)
        if j < len(minutes) and minutes[j] == m:
            k = bisect_left(seconds, s)
            if k < len(seconds):
                return h, m, seconds[k]
            j += 1
        if j < len(minutes):
            return h, minutes[j], seconds[0]
        i += 1
    if i < len(hours):
        return hours[i], minutes[0], seconds[0]
    return None


def _prev_tod(hours, minutes, seconds, h, m, s):
    """The largest (hour, minute, second) <= (h, m, s) from the sorted tuples, or None."""
    i = bisect_right(hours, h) - 1
    if i >= 0 and hours[i] == h:
        j = bisect_right(minutes, m) - 1
        if j >= 0 and minutes[j] == m:
            k = bisect_right(seconds, s) - 1
            if k >= 0:
                return h, m, seconds[k]
            j -= 1
        if j >= 0:
            return h, minutes[j], seconds[-1]
        i -= 1
    if i >= 0:
        return hours[i], minutes[-1], seconds[-1]
    return None


# -------------------------------------------------------------------- parsing


def starts_with_star(field):
    return field[:1] in ("*", "?")


@lru_cache(maxsize=4096)
def parse(text):
    """A CronExpr for 5 or 6 space-separated fields (seconds last). Raises
    CronSyntaxError naming the first bad field."""
    fields = text.split(" ")
    if len(fields) == 5:
        fields.append("0")
    if len(fields) != 6:
        raise CronSyntaxError(f"expected 5 or 6 fields, got {len(fields)}")
    values = {}
    specials = {"dom_last": False, "dom_last_weekday": False, "dow_last": set(), "dow_nth": set()}
    for index, value in enumerate(fields):
        try:
            values[index] = _field(index, value, specials)
        except CronSyntaxError as exc:
            raise CronSyntaxError(f'{FIELD_NAMES[index]} field "{value}" {exc}') from None
    dows = {0 if v == 7 else v for v in values[_DOW]}
    return CronExpr(
        seconds=tuple(sorted(values[_SECOND])),
        minutes=tuple(sorted(values[_MINUTE])),
        hours=tuple(sorted(values[_HOUR])),
        doms=frozenset(values[_DOM]),
        dom_last=specials["dom_last"],
        dom_last_weekday=specials["dom_last_weekday"],
        months=frozenset(values[_MONTH]),
        dows=frozenset(dows),
        dow_last=frozenset(specials["dow_last"]),
        dow_nth=frozenset(specials["dow_nth"]),
        day_and=starts_with_star(fields[_DOM]) or starts_with_star(fields[_DOW]),
        real_time=starts_with_star(fields[_MINUTE]) or starts_with_star(fields[_HOUR]),
    )


def _field(index, text, specials):
    if not text:
        raise CronSyntaxError("is empty")
    out = set()
    for term in text.split(","):
        if not term:
            raise CronSyntaxError("has an empty list item")
        out |= _term(index, term, specials)
    return out


def _term(index, term, specials):
    low, high = _BOUNDS[index]
    upper = term.upper()
    if index == _DOM and upper in ("L", "LW"):
        specials["dom_last" if upper == "L" else "dom_last_weekday"] = True
        return set()
    if index == _DOW and "#" in term:
        day, _, nth = term.partition("#")
        if not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise CronSyntaxError(f'is not acceptable: "#{nth}" must be #1 to #5 (the nth weekday of the month)')
        specials["dow_nth"].add((_value(index, day) % 7, int(nth)))
        return set()
    if index == _DOW and len(term) > 1 and (upper.endswith("L") or upper.startswith("L")):
        day = term[:-1] if upper.endswith("L") else term[1:]
        specials["dow_last"].add(_value(index, day) % 7)
        return set()
    if index in (_DOM, _DOW) and upper.endswith("W"):
        raise CronSyntaxError("is not acceptable: W (the weekday nearest a date) is not supported; "
                              "LW (the month's last weekday) is")
    if "L" in upper and index in (_DOM, _DOW):
        raise CronSyntaxError("is not acceptable: L is the last day of the month in day-of-month (L, LW), "
                              "or follows a weekday in day-of-week (5L: the last Friday)")
    base, slash, step_text = term.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronSyntaxError(f'is not acceptable: the step "/{step_text}" must be a whole number above 0')
        step = int(step_text)
    if base in ("*", "?"):
        start, end = low, high
    elif "-" in base:
        a, _, b = base.partition("-")
        start, end = _value(index, a), _value(index, b)
        if end < start:
            raise CronSyntaxError(f"is not acceptable: the range {base} runs backwards "
                                  f"(a range goes from low to high; use a list of two ranges)")
    else:
        start = _value(index, base)
        end = high if slash else start
    return set(range(start, end + 1, step))


def _value(index, text):
    low, high = _BOUNDS[index]
    names = _NAMES.get(index, {})
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        hint = f" (names: {', '.join(names)})" if names else ""
        raise CronSyntaxError(f'is not acceptable: "{text}" is not a number{hint}')
    value = int(text)
    if not low <= value <= high:
        # "is not acceptable, out of range" is the wording users (and croniter) know
        raise CronSyntaxError("is not acceptable, out of range")
    return value
