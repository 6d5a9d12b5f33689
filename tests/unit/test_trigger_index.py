"""The trigger index returns every trigger that can match an event, and leaves the rest out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.matching import TriggerIndex, literal_prefix, match
from tests.factories import kafka_message, kafka_trigger, s3_message, s3_trigger


def test_literal_prefix_stops_at_the_first_wildcard() -> None:
    assert literal_prefix("input/*.csv") == "input/"
    assert literal_prefix("in?ut/a") == "in"
    assert literal_prefix("logs/[ab]/x") == "logs/"
    assert literal_prefix("**") == ""
    assert literal_prefix("exact/key.csv") == "exact/key.csv"


def test_kafka_triggers_are_found_by_topic_and_key() -> None:
    index = TriggerIndex(
        [
            (kafka_trigger(topic="orders"), "any-key"),
            (kafka_trigger(topic="orders", key="k1"), "k1"),
            (kafka_trigger(topic="orders", key="k2"), "k2"),
            (kafka_trigger(topic="payments"), "payments"),
        ]
    )
    assert sorted(index.candidates("kafka", kafka_message(key="k1"))) == ["any-key", "k1"]
    assert index.candidates("kafka", kafka_message()) == ["any-key"]
    assert index.candidates("kafka", kafka_message(topic="audit")) == []


def test_s3_triggers_are_found_by_bucket_and_key_prefix() -> None:
    index = TriggerIndex(
        [
            (s3_trigger(key_pattern="input/*.csv"), "input"),
            (s3_trigger(key_pattern="input/2026/**"), "input-2026"),
            (s3_trigger(key_pattern="**"), "all"),
            (s3_trigger(key_pattern="other/*"), "other"),
            (s3_trigger(bucket="logs", key_pattern="input/*"), "logs"),
        ]
    )
    found = index.candidates("s3", s3_message(key="input/2026/a.csv"))
    assert sorted(found) == ["all", "input", "input-2026"]
    assert sorted(index.candidates("s3", s3_message(key="in"))) == ["all"]
    assert index.candidates("s3", s3_message(bucket="nowhere")) == []


def test_ten_thousand_triggers_on_one_bucket_give_only_the_prefix_candidates() -> None:
    index = TriggerIndex([(s3_trigger(key_pattern=f"tenant-{i}/*.csv"), i) for i in range(10_000)])
    assert index.candidates("s3", s3_message(key="tenant-42/a.csv")) == [42]


_SEGMENT = st.text(alphabet="ab/*?.", min_size=0, max_size=8)


@given(
    patterns=st.lists(_SEGMENT, min_size=1, max_size=6),
    key=st.text(alphabet="ab/.", max_size=8),
    buckets=st.lists(st.sampled_from(["data", "logs"]), min_size=6, max_size=6),
)
def test_no_s3_trigger_that_matches_is_left_out(
    patterns: list[str], key: str, buckets: list[str]
) -> None:
    triggers = [
        s3_trigger(bucket=buckets[i], key_pattern=p or "**") for i, p in enumerate(patterns)
    ]
    index = TriggerIndex([(t, i) for i, t in enumerate(triggers)])
    message = s3_message(key=key)
    found = set(index.candidates("s3", message))
    for i, t in enumerate(triggers):
        if match(t, message).matched:
            assert i in found
        if i in found:
            assert t.bucket == "data" and key.startswith(literal_prefix(t.key_pattern))


@given(
    keys=st.lists(st.one_of(st.none(), st.sampled_from(["k1", "k2"])), min_size=1, max_size=5),
    topics=st.lists(st.sampled_from(["orders", "audit"]), min_size=5, max_size=5),
    message_key=st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])),
)
def test_no_kafka_trigger_that_matches_is_left_out(
    keys: list[str | None], topics: list[str], message_key: str | None
) -> None:
    triggers = [kafka_trigger(topic=topics[i], key=k) for i, k in enumerate(keys)]
    index = TriggerIndex([(t, i) for i, t in enumerate(triggers)])
    message = kafka_message(key=message_key)
    found = set(index.candidates("kafka", message))
    assert found == {i for i, t in enumerate(triggers) if match(t, message).matched}
