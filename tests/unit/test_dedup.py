"""Dedup keys per trigger mode."""

from __future__ import annotations

from typing import Any

import pytest

from shared.dedup import DedupError, dedup_key, legacy_kafka_key, same_record
from tests.factories import kafka_message, kafka_trigger, s3_message, s3_trigger


@pytest.mark.parametrize(
    ("mode", "message_kw", "expected"),
    [
        ("etag", {}, "data/input/a.csv@e1"),
        ("etag", {"etag": "e2"}, "data/input/a.csv@e2"),
        ("key", {"etag": "e2"}, "data/input/a.csv"),
        ("version", {"version_id": "v7"}, "data/input/a.csv#v7"),
        ("version", {"sequencer": "0055"}, "data/input/a.csv#0055"),
        ("none", {}, None),
    ],
)
def test_s3_modes(mode: str, message_kw: dict[str, Any], expected: str | None) -> None:
    assert dedup_key(s3_trigger(dedup=mode), s3_message(**message_kw)) == expected


def test_s3_version_without_marker_is_an_error() -> None:
    with pytest.raises(DedupError, match="versionId"):
        dedup_key(s3_trigger(dedup="version"), s3_message())


def test_kafka_offset_identifies_the_record_by_timestamp() -> None:
    message = {**kafka_message(partition=3, offset=42), "timestamp_ms": 1767225600123}
    assert dedup_key(kafka_trigger(), message) == "orders/3/42@1767225600123"
    # a redelivery of the same record: same key
    assert dedup_key(kafka_trigger(), dict(message)) == "orders/3/42@1767225600123"
    # a new record at the reused offset (topic recreated, broker restarted): another key
    assert dedup_key(kafka_trigger(), {**message, "timestamp_ms": 1767225699999}) != (
        "orders/3/42@1767225600123"
    )


@pytest.mark.parametrize("timestamp_ms", [None, -1])
def test_kafka_offset_without_timestamp_hashes_the_content(timestamp_ms: int | None) -> None:
    message = {**kafka_message(offset=7, value="a"), "timestamp_ms": timestamp_ms}
    key = dedup_key(kafka_trigger(), message)
    assert key is not None and key.startswith("orders/0/7#") and len(key) == len("orders/0/7#") + 32
    assert dedup_key(kafka_trigger(), dict(message)) == key
    assert dedup_key(kafka_trigger(), {**message, "value": "b"}) != key
    assert dedup_key(kafka_trigger(), {**message, "headers": {"h": "1"}}) != key


def test_kafka_legacy_key_is_the_position_for_offset_mode_only() -> None:
    message = kafka_message(partition=3, offset=42)
    assert legacy_kafka_key(kafka_trigger(), message) == "orders/3/42"
    assert (
        legacy_kafka_key(kafka_trigger(dedup="${workflow.triggerMessage.offset}"), message) is None
    )
    assert legacy_kafka_key(s3_trigger(), s3_message()) is None


def test_same_record_compares_timestamp_key_value_and_headers() -> None:
    message = kafka_message(offset=1, key="k", headers={"h": "1"})
    assert same_record(dict(message), message)
    assert not same_record({**message, "timestamp": "2026-11-21T12:00:01Z"}, message)
    assert not same_record({**message, "value": "other"}, message)
    assert not same_record({**message, "key": None}, message)
    assert not same_record({**message, "headers": {}}, message)
    # a payload stored truncated (a string) cannot be compared: not the same record
    assert not same_record('{"topic": ...', message)


def test_kafka_template_business_key() -> None:
    trigger = kafka_trigger(dedup="${workflow.triggerMessage.headers.message-id}")
    one = dedup_key(trigger, kafka_message(offset=1, headers={"message-id": "m-1"}))
    two = dedup_key(trigger, kafka_message(offset=2, headers={"message-id": "m-1"}))
    assert one == two == "tpl:m-1"


def test_kafka_template_from_json_value() -> None:
    trigger = kafka_trigger(dedup="${workflow.triggerMessage.value.order_id}")
    assert dedup_key(trigger, kafka_message(value='{"order_id": 77}')) == "tpl:77"


def test_kafka_template_missing_path_names_it() -> None:
    trigger = kafka_trigger(dedup="${workflow.triggerMessage.headers.message-id}")
    with pytest.raises(DedupError, match="message-id"):
        dedup_key(trigger, kafka_message())
