"""Dedup keys per trigger mode."""

from __future__ import annotations

import pytest

from shared.dedup import DedupError, dedup_key
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
def test_s3_modes(mode: str, message_kw: dict[str, object], expected: str | None) -> None:
    assert dedup_key(s3_trigger(dedup=mode), s3_message(**message_kw)) == expected  # type: ignore[arg-type]


def test_s3_version_without_marker_is_an_error() -> None:
    with pytest.raises(DedupError, match="versionId"):
        dedup_key(s3_trigger(dedup="version"), s3_message())


def test_kafka_offset() -> None:
    assert dedup_key(kafka_trigger(), kafka_message(partition=3, offset=42)) == "orders/3/42"


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
