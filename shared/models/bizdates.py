"""Business dates as people write them: `20260309` (DataWorks' `yyyymmdd`) or `2026-03-09`.

pydantic's own date parsing reads an 8-digit number as seconds since the epoch and answers
"Datetimes provided to dates should have zero time", which tells a DataWorks user nothing; this
type accepts both spellings and refuses everything else naming the two forms it takes.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
FORMS = "yyyymmdd (20260309) or yyyy-mm-dd (2026-03-09)"


def parse_bizdate(value: Any) -> date:
    """A date from `20260309`, `"20260309"` or `"2026-03-09"`; ValueError naming the forms."""
    if isinstance(value, datetime):
        raise ValueError(f"a business date is a day, not a time; write {FORMS}")
    if isinstance(value, date):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        text = value.strip()
        match = _COMPACT.fullmatch(text) or _ISO.fullmatch(text)
        if match:
            year, month, day = (int(part) for part in match.groups())
            try:
                return date(year, month, day)
            except ValueError as exc:
                raise ValueError(f"{text!r} is not a calendar day ({exc})") from None
    raise ValueError(f"expected a business date as {FORMS}")


def is_bizdate_text(value: Any) -> bool:
    """Whether `value` is spelled as a business date rather than as a time."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return isinstance(value, str) and bool(
        _COMPACT.fullmatch(value.strip()) or _ISO.fullmatch(value.strip())
    )


BizDate = Annotated[
    date,
    BeforeValidator(parse_bizdate),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d{4}-?\d{2}-?\d{2}$",
            "description": f"business date, {FORMS}",
            "examples": ["20260309", "2026-03-09"],
        }
    ),
]
