"""The trigger message of a Kafka record and the view filters evaluate. Pure.

Shape::

    {"topic": "user-behavior-topic", "partition": 0, "offset": 42,
     "timestamp": "2026-01-01T00:00:00.123Z", "timestamp_ms": 1767225600123,
     "key": "some-key", "value": "{\\"action_type\\": \\"login\\"}",
     "headers": {"message-id": "m-1"}}

- ``key`` and ``value`` are the UTF-8 decoded bytes, or null when the record has none (a tombstone
  has a null value). Bytes that are not valid UTF-8 are given in base64 and flagged with
  ``"key_encoding": "base64"`` / ``"value_encoding": "base64"``; the flags are absent otherwise.
- ``headers`` maps each header name to its UTF-8 value. Kafka allows a name to repeat: the last
  value wins, as with Kafka's own ``Headers.lastHeader``. A value that is not valid UTF-8 is given
  in base64 and its name is listed in ``"header_encodings": {"<name>": "base64"}`` (absent when no
  header needed it); a header without a value maps to null.
- ``timestamp`` is the record timestamp as ISO-8601 UTC with milliseconds; ``timestamp_ms`` keeps
  the exact epoch milliseconds for numeric comparisons. Both are null when the record has no
  timestamp; ``timestamp`` alone is null when the milliseconds fall outside years 1-9999.
- ``value`` stays a string, as in DataWorks; ``shared.matching.filter_view`` gives filters the
  parsed JSON instead.
- With ``nul_as_binary`` (what the listener uses), text holding U+0000 is treated like bytes that
  are not UTF-8 (base64 and flagged): PostgreSQL's jsonb cannot store that character, and the
  message is stored with the event and the instance. A header *name* holding it cannot be
  encoded that way and raises ``UnstorableMessage``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

BASE64 = "base64"
_NUL = "\x00"


class UnstorableMessage(ValueError):
    """The record cannot be represented as a storable trigger message."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def trigger_message(
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    *,
    nul_as_binary: bool = False,
) -> dict[str, Any]:
    """Build the trigger message of one Kafka record (see the module docstring for the shape).

    A negative ``timestamp_ms`` (Kafka's "no timestamp") is treated as absent.
    """
    text = _storable_text if nul_as_binary else _text
    if timestamp_ms is not None and timestamp_ms < 0:
        timestamp_ms = None
    message: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": _iso_utc(timestamp_ms),
        "timestamp_ms": timestamp_ms,
    }
    message["key"], key_encoding = text(key)
    if key_encoding:
        message["key_encoding"] = key_encoding
    message["value"], value_encoding = text(value)
    if value_encoding:
        message["value_encoding"] = value_encoding
    texts: dict[str, str | None] = {}
    encodings: dict[str, str] = {}
    for name, raw in headers:
        if nul_as_binary and _NUL in name:
            raise UnstorableMessage(f"header name {name!r} contains U+0000")
        texts[name], encoding = text(raw)
        if encoding:
            encodings[name] = encoding
        else:
            # A later UTF-8 value replaces an earlier base64 one: the flag must go with it.
            encodings.pop(name, None)
    message["headers"] = texts
    if encodings:
        message["header_encodings"] = encodings
    return message


def _text(raw: bytes | None) -> tuple[str | None, str | None]:
    """The UTF-8 text of ``raw`` and no encoding, else its base64 and ``"base64"``."""
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), BASE64


def _storable_text(raw: bytes | None) -> tuple[str | None, str | None]:
    """Like ``_text``, with text holding U+0000 given in base64 too."""
    decoded, encoding = _text(raw)
    if encoding is None and decoded is not None and _NUL in decoded:
        assert raw is not None
        return base64.b64encode(raw).decode("ascii"), BASE64
    return decoded, encoding


def _iso_utc(timestamp_ms: int | None) -> str | None:
    if timestamp_ms is None:
        return None
    try:
        # Integer arithmetic: a float of epoch seconds cannot hold every millisecond exactly.
        moment = _EPOCH + timedelta(milliseconds=timestamp_ms)
    except OverflowError:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
