"""Cron schedules: validation and fire times in a time zone.

Pure: no clock is read and nothing but the time-zone database is loaded; every function takes the
instants it works on as aware datetimes and returns aware UTC datetimes.

Syntax
------
* 5 fields, Unix: ``minute hour day-of-month month day-of-week``. Day-of-week 0-7 with 0 and 7 =
  Sunday. When both day fields are restricted a day matches either of them (classic cron OR).
  ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight`` and ``@hourly``
  are accepted as shorthands.
* 6 or 7 fields, Quartz: ``second minute hour day-of-month month day-of-week [year]``.
  Day-of-week 1-7 with 1 = Sunday. ``?`` means "no value" and is allowed in one day field only.
  Restricting both day fields is rejected, as Quartz does; ``*`` in a day field is accepted as
  "every day" (what Spring-style expressions such as ``0 0 12 * * MON`` mean). Years 1970-2099.
  (Unix expressions accept ``?`` in a day field as ``*``.)

Both syntaxes accept lists (``5,17``), ranges (``MON-FRI``, wrapping ones such as ``22-2`` or
``FRI-MON``), steps (``*/4``, ``10/15``, ``1-20/3``), the names ``JAN``-``DEC`` and ``SUN``-``SAT``
(any case), and the day specials, each standing alone in its field:

* day-of-month ``L`` (last day), ``L-3`` (third-to-last day), ``LW`` (last weekday), ``15W``
  (weekday nearest the 15th without leaving the month; no fire in months without that day);
* day-of-week ``nL`` (last weekday n of the month: Quartz ``6L``, Unix ``5L`` = last Friday) and
  ``n#k`` (k-th weekday n: Quartz ``6#3``, Unix ``5#3`` = third Friday); Quartz ``L`` alone is
  Saturday.

An expression whose fields can never meet (``0 0 0 30 2 ?``) is rejected.

Time zones and DST
------------------
Expressions are evaluated on the wall clock of the schedule's IANA time zone.

* A wall time skipped by a spring-forward gap fires once, at the first instant after the gap (a
  daily ``30 2 * * *`` in America/New_York fires at 03:00 EDT on 2026-03-08). Several skipped
  wall times, and a fire time right at the end of the gap, collapse into that one fire.
* A wall time repeated by a fall-back fires once, at its first occurrence (``30 1 * * *`` fires at
  01:30 EDT on 2026-11-01, not again at 01:30 EST) -- unless the hour field is ``*`` (every hour,
  e.g. ``0 * * * *``, ``*/15 * * * *``, ``0 0 * ? * *``). Such schedules are intervals, not
  appointments, so they fire at both occurrences and keep firing every real hour (or minute).

Fire times are found by croniter on the naive wall clock; this module translates Quartz into
croniter's form, applies what croniter lacks or handles differently (years, ``LW``, ``L-n``,
``nW`` beyond the end of a month, OR with day specials), and maps wall times to instants.
"""

from __future__ import annotations

import bisect
import calendar
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

__all__ = [
    "CronError",
    "fires_between",
    "latest_fire_at_or_before",
    "next_fire",
    "validate_cron",
]

_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_NO_OFFSET = timedelta(0)
# Years croniter and datetime can step through safely; schedules run out there.
_FIRST_YEAR = 2
_LAST_YEAR = 9998
_QUARTZ_YEARS = (1970, 2099)

_MACROS: Mapping[str, str] = {
    "@YEARLY": "0 0 1 1 *",
    "@ANNUALLY": "0 0 1 1 *",
    "@MONTHLY": "0 0 1 * *",
    "@WEEKLY": "0 0 * * 0",
    "@DAILY": "0 0 * * *",
    "@MIDNIGHT": "0 0 * * *",
    "@HOURLY": "0 * * * *",
}
# English names whatever the locale (calendar.month_abbr follows it).
_MONTH_NAMES: Mapping[str, int] = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


class CronError(ValueError):
    """An invalid cron expression or time zone.

    The message names the field and the reason, e.g.
    ``day-of-month field '32': value 32 is outside 1-31``; `field` holds the field's name
    (``"time zone"`` for the zone, None when the expression as a whole is wrong).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _field_error(name: str, text: str, reason: str) -> CronError:
    return CronError(f"{name} field {text!r}: {reason}", field=name)


# --- parsed form ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LastDay:
    """``L`` (offset 0) or ``L-n``."""

    offset: int


@dataclass(frozen=True, slots=True)
class _LastWeekday:
    """``LW``: the last Monday-Friday of the month."""


@dataclass(frozen=True, slots=True)
class _NearestWeekday:
    """``nW``: the Monday-Friday nearest day n, never leaving the month."""

    day: int


@dataclass(frozen=True, slots=True)
class _LastDow:
    """``nL`` in day-of-week; weekday 0 = Sunday."""

    weekday: int


@dataclass(frozen=True, slots=True)
class _NthDow:
    """``n#k`` in day-of-week; weekday 0 = Sunday."""

    weekday: int
    nth: int


# None means "every day" for both day fields.
_DomSpec = frozenset[int] | _LastDay | _LastWeekday | _NearestWeekday | None
_DowSpec = frozenset[int] | _LastDow | _NthDow | None


@dataclass(frozen=True, slots=True)
class _Schedule:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    months: frozenset[int]
    dom: _DomSpec
    dow: _DowSpec
    # Unix OR of two restricted day fields; otherwise a day must satisfy both (one is None).
    day_or: bool
    years: tuple[int, ...] | None
    croniter_expression: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "croniter_expression", _croniter_expression(self))

    @property
    def every_hour(self) -> bool:
        return len(self.hours) == 24


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int] = field(default_factory=dict)
    wraps: bool = True


_SECONDS = _Field("second", 0, 59)
_MINUTES = _Field("minute", 0, 59)
_HOURS = _Field("hour", 0, 23)
_DAYS_OF_MONTH = _Field("day-of-month", 1, 31)
_MONTHS = _Field("month", 1, 12, _MONTH_NAMES)
_UNIX_DOW = _Field("day-of-week", 0, 7, {name: i for i, name in enumerate(_DAY_NAMES)})
_QUARTZ_DOW = _Field("day-of-week", 1, 7, {name: i + 1 for i, name in enumerate(_DAY_NAMES)})
_YEARS = _Field("year", *_QUARTZ_YEARS, wraps=False)


# --- parsing -------------------------------------------------------------------------------------


def _is_number(token: str) -> bool:
    return token.isascii() and token.isdecimal()


def _value(token: str, spec: _Field, text: str) -> int:
    if token == "?":
        raise _field_error(spec.name, text, "'?' is only allowed in day-of-month or day-of-week")
    if _is_number(token):
        number = int(token)
    elif token in spec.names:
        number = spec.names[token]
    elif not token:
        raise _field_error(spec.name, text, "empty value")
    else:
        raise _field_error(spec.name, text, f"{token!r} is not a number or a known name")
    if not spec.low <= number <= spec.high:
        raise _field_error(spec.name, text, f"value {number} is outside {spec.low}-{spec.high}")
    return number


def _parse_set(text: str, spec: _Field) -> frozenset[int]:
    """A list of values, ranges and steps, as the set of numbers it names."""
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _field_error(spec.name, text, "empty item in list")
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _is_number(step_text) or int(step_text) == 0:
                raise _field_error(spec.name, text, f"step {step_text!r} is not a positive number")
            step = int(step_text)
            if step > spec.high - spec.low:
                raise _field_error(
                    spec.name, text, f"step {step} is too large for {spec.low}-{spec.high}"
                )
        if base == "*":
            first, last = spec.low, spec.high
        elif "-" in base:
            start, _, end = base.partition("-")
            first, last = _value(start, spec, text), _value(end, spec, text)
        else:
            first = _value(base, spec, text)
            last = spec.high if slash else first
        if first <= last:
            sequence = list(range(first, last + 1))
        elif spec.wraps:
            sequence = [*range(first, spec.high + 1), *range(spec.low, last + 1)]
        else:
            raise _field_error(spec.name, text, f"range {first}-{last} runs backwards")
        values.update(sequence[::step])
    return frozenset(values)


def _parse_dom(text: str) -> _DomSpec:
    spec = _DAYS_OF_MONTH
    if text in ("*", "?"):
        return None
    if text == "L":
        return _LastDay(0)
    if text == "LW":
        return _LastWeekday()
    if text.startswith("L-"):
        offset = text[2:]
        if not _is_number(offset) or not 1 <= int(offset) <= 30:
            raise _field_error(spec.name, text, "'L-n' needs n between 1 and 30")
        return _LastDay(int(offset))
    if text.endswith("W") and "," not in text:
        day = text[:-1]
        if not _is_number(day) or not 1 <= int(day) <= 31:
            raise _field_error(spec.name, text, "'nW' needs a single day n between 1 and 31")
        return _NearestWeekday(int(day))
    if "L" in text or "W" in text:
        raise _field_error(
            spec.name, text, "'L' and 'W' stand alone (e.g. 'L', 'L-3', 'LW', '15W')"
        )
    days = _parse_set(text, spec)
    return None if len(days) == 31 else days


def _parse_dow(text: str, quartz: bool) -> _DowSpec:
    spec = _QUARTZ_DOW if quartz else _UNIX_DOW

    def weekday(number: int) -> int:
        # Internally 0 = Sunday, as croniter counts; Quartz counts from 1 = Sunday.
        return number - 1 if quartz else number % 7

    if text in ("*", "?"):
        return None
    if text == "L":
        if quartz:
            return frozenset({6})
        raise _field_error(spec.name, text, "'L' alone is Quartz syntax; use 'nL' or 6 for Sat")
    if text.endswith("L") and "," not in text:
        return _LastDow(weekday(_value(text[:-1], spec, text)))
    if "#" in text:
        day, _, nth = text.partition("#")
        if "," in text or not _is_number(nth) or not 1 <= int(nth) <= 5:
            raise _field_error(spec.name, text, "'n#k' needs one weekday n and k between 1 and 5")
        return _NthDow(weekday(_value(day, spec, text)), int(nth))
    if "L" in text:  # no day name contains an L
        raise _field_error(spec.name, text, "'L' stands alone or after one weekday ('6L')")
    days = frozenset(weekday(number) for number in _parse_set(text, spec))
    return None if len(days) == 7 else days


@lru_cache(maxsize=1024)
def _parse(expression: str) -> _Schedule:
    text = expression.strip().upper()
    if text.startswith("@"):
        if text not in _MACROS:
            raise CronError(f"unknown shorthand {expression.strip()!r}; use e.g. '@daily'")
        text = _MACROS[text]
    fields = text.split()
    if len(fields) == 5:
        quartz = False
        second, (minute, hour, dom_text, month, dow_text), year = "0", fields, "*"
    elif len(fields) in (6, 7):
        quartz = True
        second, minute, hour, dom_text, month, dow_text = fields[:6]
        year = fields[6] if len(fields) == 7 else "*"
    else:
        raise CronError(
            f"expected 5 fields (Unix: minute hour day-of-month month day-of-week) or 6-7 fields "
            f"(Quartz: second minute hour day-of-month month day-of-week [year]), "
            f"got {len(fields)}"
        )

    dom = _parse_dom(dom_text)
    dow = _parse_dow(dow_text, quartz)
    if quartz and dom_text == "?" and dow_text == "?":
        raise _field_error(
            "day-of-week", dow_text, "'?' may stand in only one of day-of-month and day-of-week"
        )
    if quartz and dom is not None and dow is not None:
        raise _field_error(
            "day-of-week",
            dow_text,
            f"day-of-month is already restricted ({dom_text!r}); Quartz does not support "
            f"restricting both day fields, put '?' in one of them",
        )
    years: tuple[int, ...] | None = None
    if year != "*":
        chosen = _parse_set(year, _YEARS)
        if len(chosen) < _YEARS.high - _YEARS.low + 1:
            years = tuple(sorted(chosen))

    schedule = _Schedule(
        seconds=_parse_set(second, _SECONDS),
        minutes=_parse_set(minute, _MINUTES),
        hours=_parse_set(hour, _HOURS),
        months=_parse_set(month, _MONTHS),
        dom=dom,
        dow=dow,
        day_or=dom is not None and dow is not None,
        years=years,
    )
    _check_can_fire(schedule, expression)
    return schedule


def _check_can_fire(schedule: _Schedule, expression: str) -> None:
    # 28 consecutive years (without a skipped century leap day) hold every calendar layout.
    years = schedule.years if schedule.years is not None else range(2000, 2028)
    for year in years:
        for month in schedule.months:
            if _matching_days(schedule.dom, schedule.dow, schedule.day_or, year, month):
                return
    raise CronError(
        f"{expression.strip()!r} never fires: no date satisfies its day-of-month, day-of-week, "
        f"month and year fields together"
    )


# --- calendar ------------------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _matching_days(
    dom: _DomSpec, dow: _DowSpec, day_or: bool, year: int, month: int
) -> frozenset[int]:
    """The days of one month that the day fields select."""
    last = calendar.monthrange(year, month)[1]
    first_weekday = (calendar.weekday(year, month, 1) + 1) % 7  # 0 = Sunday

    def weekday(day: int) -> int:
        return (first_weekday + day - 1) % 7

    by_dom: frozenset[int] | None
    if dom is None:
        by_dom = None
    elif isinstance(dom, frozenset):
        by_dom = frozenset(day for day in dom if day <= last)
    elif isinstance(dom, _LastDay):
        by_dom = frozenset({last - dom.offset}) if last - dom.offset >= 1 else frozenset()
    elif isinstance(dom, _LastWeekday):
        by_dom = frozenset({last - {6: 1, 0: 2}.get(weekday(last), 0)})
    else:
        by_dom = frozenset({_nearest_weekday(dom.day, last, weekday(dom.day))})
        if dom.day > last:
            by_dom = frozenset()

    by_dow: frozenset[int] | None
    if dow is None:
        by_dow = None
    elif isinstance(dow, frozenset):
        by_dow = frozenset(day for day in range(1, last + 1) if weekday(day) in dow)
    elif isinstance(dow, _LastDow):
        by_dow = frozenset({last - (weekday(last) - dow.weekday) % 7})
    else:
        day = 1 + (dow.weekday - first_weekday) % 7 + 7 * (dow.nth - 1)
        by_dow = frozenset({day}) if day <= last else frozenset()

    if by_dom is None:
        return frozenset(range(1, last + 1)) if by_dow is None else by_dow
    if by_dow is None:
        return by_dom
    return by_dom | by_dow if day_or else by_dom & by_dow


def _nearest_weekday(day: int, last: int, weekday: int) -> int:
    if weekday == 6:  # Saturday: the Friday before, unless that leaves the month
        return day - 1 if day > 1 else day + 2
    if weekday == 0:  # Sunday: the Monday after, unless that leaves the month
        return day + 1 if day < last else day - 2
    return day


def _render(values: frozenset[int], spec: _Field) -> str:
    if len(values) == spec.high - spec.low + 1:
        return "*"
    return ",".join(str(value) for value in sorted(values))


def _croniter_days(schedule: _Schedule) -> tuple[str, str]:
    """Day fields in croniter's syntax; ``* *`` where only this module's day rules are exact."""
    dom, dow = schedule.dom, schedule.dow
    dom_text = dow_text = "*"
    if isinstance(dom, frozenset) and (dow is None or isinstance(dow, frozenset)):
        dom_text = _render(dom, _DAYS_OF_MONTH)
    elif dow is None and dom == _LastDay(0):
        dom_text = "L"
    elif dow is None and isinstance(dom, _NearestWeekday) and dom.day <= 28:
        # croniter clamps larger days to the month's end instead of skipping the month.
        dom_text = f"{dom.day}W"
    if isinstance(dow, frozenset) and (dom is None or isinstance(dom, frozenset)):
        dow_text = ",".join(str(day) for day in sorted(dow))
    elif dom is None and isinstance(dow, _NthDow):
        dow_text = f"{dow.weekday}#{dow.nth}"
    elif dom is None and isinstance(dow, _LastDow):
        dow_text = f"L{dow.weekday}"
    return dom_text, dow_text


def _croniter_expression(schedule: _Schedule) -> str:
    dom_text, dow_text = _croniter_days(schedule)
    return " ".join(
        (
            _render(schedule.seconds, _SECONDS),
            _render(schedule.minutes, _MINUTES),
            _render(schedule.hours, _HOURS),
            dom_text,
            _render(schedule.months, _MONTHS),
            dow_text,
        )
    )


class _WallClock:
    """Matching wall-clock times (naive, second resolution) of one schedule.

    croniter searches the second/minute/hour/month fields and whatever day rules it shares with
    this module; the year and the exact day rules are checked here, skipping whole days or years
    that fail them.
    """

    def __init__(self, schedule: _Schedule) -> None:
        self._schedule = schedule
        self._croniter = croniter(
            schedule.croniter_expression,
            datetime(2000, 1, 1),
            ret_type=datetime,
            second_at_beginning=True,
        )

    def _accept(self, wall: datetime) -> bool:
        s = self._schedule
        return wall.day in _matching_days(s.dom, s.dow, s.day_or, wall.year, wall.month)

    def after(self, cursor: datetime) -> datetime | None:
        """The first matching wall time strictly after `cursor`."""
        years = self._schedule.years
        while cursor.year < _LAST_YEAR:
            try:
                wall = self._croniter.get_next(ret_type=datetime, start_time=cursor)
            except ValueError:
                # croniter gives up after decades without a match or at datetime's limits.
                return None
            if years is not None and wall.year not in years:
                index = bisect.bisect_right(years, wall.year)
                if index == len(years):
                    return None
                cursor = datetime(years[index], 1, 1) - _SECOND
            elif not self._accept(wall):
                cursor = datetime.combine(wall.date() + _DAY, time()) - _SECOND
            else:
                return wall
        return None

    def before(self, cursor: datetime) -> datetime | None:
        """The last matching wall time strictly before `cursor`."""
        years = self._schedule.years
        while cursor.year > _FIRST_YEAR:
            try:
                wall = self._croniter.get_prev(ret_type=datetime, start_time=cursor)
            except ValueError:
                return None
            if years is not None and wall.year not in years:
                index = bisect.bisect_left(years, wall.year)
                if index == 0:
                    return None
                cursor = datetime(years[index - 1] + 1, 1, 1)
            elif not self._accept(wall):
                cursor = datetime.combine(wall.date(), time())
            else:
                return wall
        return None


# --- wall clock to instants ----------------------------------------------------------------------


def _offsets(wall: datetime, zone: ZoneInfo) -> tuple[timedelta, timedelta]:
    """UTC offsets of `wall` read as its earlier (fold=0) and later (fold=1) occurrence."""
    early = wall.replace(tzinfo=zone, fold=0).utcoffset()
    late = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert early is not None and late is not None  # ZoneInfo always knows the offset
    return early, late


def _instants(wall: datetime, zone: ZoneInfo) -> tuple[datetime, datetime | None]:
    """When `wall` happens: (instant, None), or (first, second) for a wall time seen twice.

    A wall time inside a gap maps to the gap's end, the first instant after it.
    """
    early, late = _offsets(wall, zone)
    first = (wall - early).replace(tzinfo=UTC)
    if early == late:
        return first, None
    if early > late:
        return first, (wall - late).replace(tzinfo=UTC)
    return _gap_end(zone, (wall - late).replace(tzinfo=UTC), first, early), None


def _gap_end(zone: ZoneInfo, low: datetime, high: datetime, before: timedelta) -> datetime:
    """The transition instant in (low, high]: the first second whose offset is not `before`."""
    while high - low > _SECOND:
        middle = low + timedelta(seconds=(high - low) // _SECOND // 2)
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high


def _repeat_span(local: datetime) -> timedelta:
    """How far the wall clock at `local` is seen twice (0 unless inside a fall-back)."""
    assert isinstance(local.tzinfo, ZoneInfo)
    early, late = _offsets(local.replace(tzinfo=None), local.tzinfo)
    return max(early - late, _NO_OFFSET)


def _ascending(schedule: _Schedule, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Fire instants strictly after `after`, ascending, each once."""
    local = after.astimezone(zone)
    # Inside a fall-back the clock will show earlier wall times again.
    cursor = local.replace(tzinfo=None, fold=0) - _repeat_span(local)
    clock = _WallClock(schedule)
    last = after
    # Second occurrences of repeated wall times; they come after every first occurrence.
    pending: list[datetime] = []
    while (wall := clock.after(cursor)) is not None:
        cursor = wall
        instant, second = _instants(wall, zone)
        while pending and pending[0] <= instant:
            candidate = pending.pop(0)
            if candidate > last:
                last = candidate
                yield candidate
        if instant > last:
            last = instant
            yield instant
        if second is not None and schedule.every_hour:
            bisect.insort(pending, second)
    for candidate in pending:
        if candidate > last:
            last = candidate
            yield candidate


def _descending(schedule: _Schedule, zone: ZoneInfo, at: datetime) -> Iterator[datetime]:
    """Fire instants at or before `at`, descending, each once."""
    local = at.astimezone(zone)
    cursor = local.replace(tzinfo=None, fold=0) + _repeat_span(local) + _MICROSECOND
    clock = _WallClock(schedule)
    bound = at + _MICROSECOND
    # First occurrences of repeated wall times; they come before every second occurrence.
    pending: list[datetime] = []

    def emit(instant: datetime) -> Iterator[datetime]:
        nonlocal bound
        while pending and pending[-1] >= instant:
            candidate = pending.pop()
            if candidate < bound:
                bound = candidate
                yield candidate
        if instant < bound:
            bound = instant
            yield instant

    while (wall := clock.before(cursor)) is not None:
        cursor = wall
        instant, second = _instants(wall, zone)
        if second is None:
            yield from emit(instant)
            continue
        if schedule.every_hour:
            yield from emit(second)
        bisect.insort(pending, instant)
    for candidate in reversed(pending):
        if candidate < bound:
            bound = candidate
            yield candidate


# --- public API ----------------------------------------------------------------------------------


def _zone(timezone: str) -> ZoneInfo:
    # "localtime" follows the host's setting and "right/" zones count leap seconds: neither is
    # a fixed civil time zone.
    if timezone == "localtime" or timezone.startswith("right/"):
        raise CronError(f"time zone {timezone!r}: not an IANA time zone", field="time zone")
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(
            f"time zone {timezone!r}: unknown IANA time zone (e.g. 'Asia/Shanghai', 'UTC')",
            field="time zone",
        ) from None


def _load(expression: str, timezone: str) -> tuple[_Schedule, ZoneInfo]:
    return _parse(expression), _zone(timezone)


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def validate_cron(expression: str, timezone: str) -> None:
    """Raise CronError if `expression` is not a usable cron expression or `timezone` is unknown.

    The message names the field (or the time zone) and what is wrong with it.
    """
    _load(expression, timezone)


def fires_between(
    expression: str,
    timezone: str,
    since: datetime,
    until: datetime,
    *,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    limit: int | None = None,
) -> list[datetime]:
    """Every fire time t with ``since < t <= until`` and ``start_at <= t <= end_at``.

    Returns aware UTC datetimes, ascending, at most `limit` of them (the earliest). Raises
    CronError for an invalid expression or time zone, ValueError for naive datetimes or a
    negative limit. DST handling is described in the module docstring.
    """
    schedule, zone = _load(expression, timezone)
    lower, upper = _aware(since, "since"), _aware(until, "until")
    if start_at is not None:
        lower = max(lower, _aware(start_at, "start_at") - _MICROSECOND)
    if end_at is not None:
        upper = min(upper, _aware(end_at, "end_at"))
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    fires: list[datetime] = []
    if upper <= lower or limit == 0:
        return fires
    for instant in _ascending(schedule, zone, lower):
        if instant > upper:
            break
        fires.append(instant)
        if len(fires) == limit:
            break
    return fires


def next_fire(
    expression: str,
    timezone: str,
    after: datetime,
    *,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> datetime | None:
    """The first fire time strictly after `after` (not before `start_at`), as aware UTC.

    None when the schedule has no such fire time, or only ones after `end_at`.
    """
    schedule, zone = _load(expression, timezone)
    lower = _aware(after, "after")
    if start_at is not None:
        lower = max(lower, _aware(start_at, "start_at") - _MICROSECOND)
    upper = None if end_at is None else _aware(end_at, "end_at")
    instant = next(_ascending(schedule, zone, lower), None)
    if instant is None or (upper is not None and instant > upper):
        return None
    return instant


def latest_fire_at_or_before(
    expression: str,
    timezone: str,
    at: datetime,
    *,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> datetime | None:
    """The last fire time at or before `at` (and not after `end_at`), as aware UTC.

    None when there is none or it lies before `start_at`. The scheduler's ``run_once`` misfire
    policy uses it to pick the one missed fire time to run after downtime.
    """
    schedule, zone = _load(expression, timezone)
    upper = _aware(at, "at")
    if end_at is not None:
        upper = min(upper, _aware(end_at, "end_at"))
    lower = None if start_at is None else _aware(start_at, "start_at")
    instant = next(_descending(schedule, zone, upper), None)
    if instant is None or (lower is not None and instant < lower):
        return None
    return instant
