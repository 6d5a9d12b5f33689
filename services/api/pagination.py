"""Opaque cursors for list endpoints.

A cursor is the sort key of the last item of a page (an id, or a name), base64url-encoded so
clients treat it as a token rather than something to construct. Lists ordered by id newest-first
page in SQL (`id < cursor`); small name-ordered collections page over the repository's list.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Final, TypeVar

from fastapi import Query

from services.api.errors import ApiError

T = TypeVar("T")
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page")
]


def encode(key: str | int) -> str:
    kind = "i" if isinstance(key, int) else "s"
    raw = f"{kind}:{key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(422, "cursor: not a cursor this API issued", field="cursor") from None
    kind, sep, value = raw.partition(":")
    if not sep or kind not in ("i", "s"):
        raise ApiError(422, "cursor: not a cursor this API issued", field="cursor")
    return kind, value


def decode_id(cursor: str | None) -> int | None:
    """The id a cursor of an id-ordered list carries."""
    if not cursor:  # absent or empty (`cursor=`): the first page
        return None
    kind, value = _decode(cursor)
    if kind != "i" or not value.isdigit() or int(value) >= 2**63:
        raise ApiError(422, "cursor: not a cursor of this list", field="cursor")
    return int(value)


def decode_name(cursor: str | None) -> str | None:
    if not cursor:  # absent or empty (`cursor=`): the first page
        return None
    kind, value = _decode(cursor)
    if kind != "s":
        raise ApiError(422, "cursor: not a cursor of this list", field="cursor")
    return value


def page_sorted(
    items: Sequence[T], key: Callable[[T], str], cursor: str | None, limit: int
) -> tuple[list[T], str | None]:
    """One page of `items` in ascending `key` order.

    Sorted here, not in SQL: the database collation may order names differently from the plain
    code-point comparison the cursor relies on.
    """
    after = decode_name(cursor)
    rest = sorted((i for i in items if after is None or key(i) > after), key=key)
    page = rest[:limit]
    more = len(rest) > limit
    return page, (encode(key(page[-1])) if more and page else None)


def page_by_id(
    rows: Sequence[T], key: Callable[[T], int], limit: int
) -> tuple[list[T], str | None]:
    """Trim rows fetched with LIMIT limit+1 to a page and the cursor of the next one."""
    page = list(rows[:limit])
    more = len(rows) > limit
    return page, (encode(key(page[-1])) if more and page else None)
