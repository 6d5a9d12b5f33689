"""Trigger matching: key globs, event names, Kafka keys, JMESPath filters."""

from __future__ import annotations

from typing import Any

import pytest

from shared.matching import event_name_matches, filter_view, glob_match, match
from tests.factories import kafka_message, kafka_trigger, s3_message, s3_trigger


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("input/*.csv", "input/a.csv", True),
        ("input/*.csv", "input/x/a.csv", False),
        ("input/*.csv", "input/a.csv.gz", False),
        ("input/*.csv", "other/a.csv", False),
        ("input/**.csv", "input/x/y/a.csv", True),
        ("input/**/a.csv", "input/a.csv", True),
        ("input/**/a.csv", "input/x/y/a.csv", True),
        ("**", "anything/at/all", True),
        ("input/?.csv", "input/a.csv", True),
        ("input/?.csv", "input/ab.csv", False),
        ("input/?.csv", "input//.csv", False),
        ("input/[abc].csv", "input/b.csv", True),
        ("input/[abc].csv", "input/d.csv", False),
        ("input/[!abc].csv", "input/d.csv", True),
        ("input/[!abc].csv", "input/a.csv", False),
        ("input/[!abc].csv", "input//.csv", False),
        ("input/a+b (1).csv", "input/a+b (1).csv", True),
        ("input/*.csv", "input/文件.csv", True),
        ("a.b", "axb", False),
        ("data/*", "data/", True),
        ("data/*", "data/x\ny", True),
    ],
)
def test_glob(pattern: str, key: str, expected: bool) -> None:
    assert glob_match(pattern, key) is expected


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        (["s3:ObjectCreated:*"], "s3:ObjectCreated:Put", True),
        (["s3:ObjectCreated:*"], "ObjectCreated:Put", True),
        (["ObjectCreated:Put"], "s3:ObjectCreated:Put", True),
        (["s3:ObjectCreated:Put"], "s3:ObjectCreated:Copy", False),
        (["s3:ObjectCreated:*"], "s3:ObjectRemoved:Delete", False),
        (["s3:ObjectRemoved:*", "s3:ObjectCreated:Post"], "s3:ObjectCreated:Post", True),
        (["*"], "s3:ObjectRemoved:Delete", True),
    ],
)
def test_event_names(patterns: list[str], name: str, expected: bool) -> None:
    assert event_name_matches(patterns, name) is expected


@pytest.mark.parametrize(
    ("trigger_kw", "message_kw", "matched", "reason_part"),
    [
        ({}, {}, True, None),
        ({"key": "k1"}, {"key": "k1"}, True, None),
        ({"key": "k1"}, {"key": "k2"}, False, "key"),
        ({"key": "k1"}, {"key": None}, False, "key"),
        ({"filter": "value.action_type == 'login'"}, {}, True, None),
        (
            {"filter": "value.action_type == 'login'"},
            {"value": '{"action_type": "purchase"}'},
            False,
            "filter",
        ),
        ({"filter": "value.action_type == 'login'"}, {"value": "not json"}, False, "filter"),
        ({"filter": "headers.source == 'web'"}, {"headers": {"source": "web"}}, True, None),
        ({"filter": "value.n > `3`"}, {"value": '{"n": 5}'}, True, None),
        ({"filter": "value.n > `3`"}, {"value": '{"n": 2}'}, False, "filter"),
        # JMESPath truthiness: 0 is true, empty list is false.
        ({"filter": "value.n"}, {"value": '{"n": 0}'}, True, None),
        ({"filter": "value.items"}, {"value": '{"items": []}'}, False, "filter"),
        ({"topic": "other"}, {}, False, "topic"),
    ],
)
def test_kafka_match(
    trigger_kw: dict[str, str],
    message_kw: dict[str, Any],
    matched: bool,
    reason_part: str | None,
) -> None:
    verdict = match(kafka_trigger(**trigger_kw), kafka_message(**message_kw))
    assert verdict.matched is matched
    if reason_part:
        assert verdict.reason is not None and reason_part in verdict.reason


def test_filter_evaluation_error_is_reported_not_raised() -> None:
    trigger = kafka_trigger(filter="abs(value)")
    verdict = match(trigger, kafka_message(value='{"a": 1}'))
    assert not verdict.matched and verdict.error
    assert verdict.reason is not None and "filter error" in verdict.reason


@pytest.mark.parametrize(
    ("trigger_kw", "message_kw", "matched", "reason_part"),
    [
        ({"key_pattern": "input/*.csv"}, {"key": "input/a.csv"}, True, None),
        ({"key_pattern": "input/*.csv"}, {"key": "input/x/a.csv"}, False, "key"),
        ({"key_pattern": "input/*.csv"}, {"key": "other/b.txt"}, False, "key"),
        ({}, {"bucket": "other"}, False, "bucket"),
        ({}, {"event_name": "s3:ObjectRemoved:Delete"}, False, "event"),
        ({"events": ["ObjectRemoved:*"]}, {"event_name": "s3:ObjectRemoved:Delete"}, True, None),
        ({"filter": "data.s3.object.size > `0`"}, {"size": 5}, True, None),
        ({"filter": "data.s3.object.size > `0`"}, {"size": 0}, False, "filter"),
    ],
)
def test_s3_match(
    trigger_kw: dict[str, Any],
    message_kw: dict[str, Any],
    matched: bool,
    reason_part: str | None,
) -> None:
    verdict = match(s3_trigger(**trigger_kw), s3_message(**message_kw))
    assert verdict.matched is matched
    if reason_part:
        assert verdict.reason is not None and reason_part in verdict.reason


def test_filter_view_parses_json_values_only() -> None:
    assert filter_view({"value": '{"a": 1}'})["value"] == {"a": 1}
    assert filter_view({"value": "[1, 2]"})["value"] == [1, 2]
    assert filter_view({"value": "plain"})["value"] == "plain"
    assert filter_view({"value": "e30=", "value_encoding": "base64"})["value"] == "e30="


def test_filter_on_incompatible_types_is_filtered_not_raised() -> None:
    # By the JMESPath spec, ordering a string against a number yields null: a non-match.
    verdict = match(
        kafka_trigger(filter="value.amount > `100`"), kafka_message(value='{"amount": "x"}')
    )
    assert not verdict.matched and not verdict.error
    assert verdict.reason is not None and "null" in verdict.reason
