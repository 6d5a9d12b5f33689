"""DataWorks-style date expressions `$[...]`, evaluated relative to cyctime.

An expression is a format built from the tokens `yyyy`, `yy`, `mm`, `dd`, `hh24`, `mi`, `ss` and the
separators `- / : . _` and space, optionally followed by an offset:

- `$[yyyymmdd-1]`: N days. Calendar arithmetic on the wall-clock date in the workflow's zone, so
  the day after a DST change still gives yesterday's date (24 elapsed hours would not).
- `$[hh24-1/24]`, `$[mi-30/24/60]`, `$[ss-10/24/60/60]`: N hours, minutes or seconds of real
  elapsed time, so an hour before 03:30 on a spring-forward day is 01:30.
- `$[add_months(yyyymmdd,-1)]`: N months; the day clamps to the target month's end
  (March 31 minus one month is February 28 or 29).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, timedelta

__all__ = [
    "DATE_EXPRESSION_PATTERN",
    "DateExpressionError",
    "add_months",
    "evaluate_date_expression",
    "expand_date_expressions",
]

DATE_EXPRESSION_PATTERN = r"\$\[(?P<expr>[^\[\]]*)\]"
_DATE_EXPRESSION_RE = re.compile(DATE_EXPRESSION_PATTERN)

_OFFSET_RE = re.compile(
    r"(?P<format>.*?[a-z0-9])\s*(?P<sign>[+-])\s*(?P<amount>\d+)(?P<unit>(?:/24(?:/60(?:/60)?)?)?)\s*"
)
_ADD_MONTHS_RE = re.compile(
    r"add_months\(\s*(?P<format>[^,()]*?)\s*,\s*(?P<months>[+-]?\s*\d+)\s*\)", re.IGNORECASE
)
# Longest tokens first, so that "yyyy" never reads as "yy" "yy".
_TOKENS = ("yyyy", "hh24", "yy", "mm", "dd", "mi", "ss")
_SEPARATORS = frozenset("-/:._ ")
_UNIT_SECONDS = {"/24": 3600, "/24/60": 60, "/24/60/60": 1}


class DateExpressionError(ValueError):
    """A `$[...]` expression that is not understood; the message names the expression."""


def _format(moment: datetime, tokens: list[str]) -> str:
    parts: list[str] = []
    for token in tokens:
        if token == "yyyy":
            parts.append(f"{moment.year:04d}")
        elif token == "yy":
            parts.append(f"{moment.year % 100:02d}")
        elif token == "mm":
            parts.append(f"{moment.month:02d}")
        elif token == "dd":
            parts.append(f"{moment.day:02d}")
        elif token == "hh24":
            parts.append(f"{moment.hour:02d}")
        elif token == "mi":
            parts.append(f"{moment.minute:02d}")
        elif token == "ss":
            parts.append(f"{moment.second:02d}")
        else:
            parts.append(token)
    return "".join(parts)


def _tokenize_format(text: str, expression: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while position < len(text):
        for token in _TOKENS:
            if text.startswith(token, position):
                tokens.append(token)
                position += len(token)
                break
        else:
            char = text[position]
            if char not in _SEPARATORS:
                raise DateExpressionError(
                    f"unknown date expression {expression!r}: unexpected {char!r} in format "
                    f"{text!r} (tokens: yyyy, yy, mm, dd, hh24, mi, ss)"
                )
            tokens.append(char)
            position += 1
    if not any(token in _TOKENS for token in tokens):
        raise DateExpressionError(f"unknown date expression {expression!r}: no date or time token")
    return tokens


def add_months(moment: datetime, months: int) -> datetime:
    """Shift the wall-clock date by `months`, clamping the day to the target month's length."""
    total = moment.year * 12 + (moment.month - 1) + months
    year, month = divmod(total, 12)
    if not 1 <= year <= 9999:
        raise OverflowError(f"year {year} is out of range")
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _shift_days(moment: datetime, days: int) -> datetime:
    # Only the date changes; the wall-clock time and tzinfo are kept as they are.
    shifted: date = moment.date() + timedelta(days=days)
    return moment.replace(year=shifted.year, month=shifted.month, day=shifted.day)


def _shift_elapsed(moment: datetime, seconds: int) -> datetime:
    # Real elapsed time: step in UTC, then read the wall clock of the zone again.
    return (moment.astimezone(UTC) + timedelta(seconds=seconds)).astimezone(moment.tzinfo)


def evaluate_date_expression(expression: str, cyctime: datetime) -> str:
    """Evaluate the inside of one `$[...]` (e.g. "yyyymmdd-1") against `cyctime`.

    `cyctime` must be timezone-aware and in the workflow's zone. Raises DateExpressionError for
    an expression that is not understood.
    """
    if cyctime.tzinfo is None or cyctime.utcoffset() is None:
        raise ValueError("cyctime must be timezone-aware")
    display = f"$[{expression}]"
    text = expression.strip().lower()
    try:
        months_match = _ADD_MONTHS_RE.fullmatch(text)
        if months_match is not None:
            tokens = _tokenize_format(months_match.group("format"), display)
            months = int(months_match.group("months").replace(" ", ""))
            return _format(add_months(cyctime, months), tokens)
        offset_match = _OFFSET_RE.fullmatch(text)
        if offset_match is None:
            return _format(cyctime, _tokenize_format(text, display))
        tokens = _tokenize_format(offset_match.group("format"), display)
        amount = int(offset_match.group("amount"))
        if offset_match.group("sign") == "-":
            amount = -amount
        unit = offset_match.group("unit")
        if unit:
            return _format(_shift_elapsed(cyctime, amount * _UNIT_SECONDS[unit]), tokens)
        return _format(_shift_days(cyctime, amount), tokens)
    except (OverflowError, ValueError) as error:
        if isinstance(error, DateExpressionError):
            raise
        raise DateExpressionError(f"date expression {display!r} is out of range") from error


def expand_date_expressions(text: str, cyctime: datetime) -> str:
    """Replace every `$[...]` in `text` with its value relative to `cyctime`."""
    return _DATE_EXPRESSION_RE.sub(
        lambda match: evaluate_date_expression(match.group("expr"), cyctime), text
    )
