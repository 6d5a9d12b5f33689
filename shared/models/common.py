"""Building blocks shared by the spec models: names, priorities, strict base classes."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

PRIORITIES: tuple[int, ...] = (1, 3, 5, 7, 8)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def _check_name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            "must start with a letter or '_' and hold only letters, digits, '_', '.', '-' "
            "(at most 128 characters)"
        )
    return value


def _check_priority(value: int) -> int:
    if value not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(map(str, PRIORITIES))}, got {value}")
    return value


Name = Annotated[str, AfterValidator(_check_name)]
Priority = Annotated[int, AfterValidator(_check_priority)]
Weighting = Literal["none", "downward"]


class Spec(BaseModel):
    """Input shape: unknown fields are errors so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Record(BaseModel):
    """Internal/output shape read from the database."""

    model_config = ConfigDict(extra="forbid", frozen=True)
