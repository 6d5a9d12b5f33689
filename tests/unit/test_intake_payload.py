"""The audit copy of an event's payload: JSON text encoded once, truncated over 1 MiB."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from shared.intake import _payload
from shared.models.events import MAX_PAYLOAD_BYTES, IncomingEvent

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def event(message: dict[str, Any] | None = None, raw: str | None = None) -> IncomingEvent:
    return IncomingEvent(
        source="kafka", subject="t", ref="t/0/1", message=message, raw=raw, received_at=NOW
    )


def test_small_message_is_its_json_text() -> None:
    message = {"value": "zürich", "n": [1, 2.5, None], "nested": {"ok": True}}
    text, truncated = _payload(event(message))
    assert truncated is False
    assert text is not None
    assert json.loads(text) == message
    assert "zürich" in text  # not escaped: stored as the jsonb codec stores it


def test_no_message_and_no_raw_is_null() -> None:
    assert _payload(event()) == (None, False)


def test_raw_text_of_an_invalid_event_is_kept() -> None:
    text, truncated = _payload(event(raw="not json {"))
    assert truncated is False
    assert text is not None and json.loads(text) == "not json {"


def test_message_just_under_the_limit_is_kept_whole() -> None:
    # Multi-byte characters: the character count alone would not tell.
    message = {"v": "é" * ((MAX_PAYLOAD_BYTES - 64) // 2)}
    text, truncated = _payload(event(message))
    assert truncated is False
    assert text is not None and json.loads(text) == message


def test_oversize_message_is_a_truncated_string_within_the_limit() -> None:
    message = {"v": "é" * MAX_PAYLOAD_BYTES}
    text, truncated = _payload(event(message))
    assert truncated is True
    assert text is not None
    head = json.loads(text)
    assert isinstance(head, str)
    assert head.startswith('{"v":"éé')
    assert len(head.encode()) <= MAX_PAYLOAD_BYTES
