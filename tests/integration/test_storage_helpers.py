"""Pure pieces of the storage listener: settings, event building, token checks, client options.

No I/O (kept next to the listener's integration tests so the whole feature is in one place).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.storage_listener import aws
from services.storage_listener.commands import parse_destination, upload_options
from services.storage_listener.config import (
    PollTarget,
    StorageSettings,
    load_storage_settings,
    parse_poll_targets,
)
from services.storage_listener.events import (
    RAW_LIMIT_CHARS,
    UNKNOWN_SUBJECT,
    body_events,
    guess_bucket,
    raw_text,
)
from services.storage_listener.webhook import presented_token, token_accepted, token_digests
from shared.settings import SettingsError, load_settings

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "s3"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("data", [PollTarget("data", "")]),
        ("data/", [PollTarget("data", "")]),
        ("data/input/", [PollTarget("data", "input/")]),
        (" s3://data/in , logs ", [PollTarget("data", "in"), PollTarget("logs", "")]),
        ("data/a,data/a,data/b", [PollTarget("data", "a"), PollTarget("data", "b")]),
        ("my.bucket-1/x y/", [PollTarget("my.bucket-1", "x y/")]),
        (",,", []),
    ],
)
def test_poll_targets(value: str, expected: list[PollTarget]) -> None:
    assert parse_poll_targets(value) == expected


@pytest.mark.parametrize("value", ["Data/x", "ab", "a_b/x", "/prefix", "s3:///x"])
def test_poll_targets_reject_invalid_buckets(value: str) -> None:
    with pytest.raises(ValueError, match="valid bucket name"):
        parse_poll_targets(value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SLUICE_STORAGE_POLL": "Bad/x"}, "SLUICE_STORAGE_POLL"),
        ({"SLUICE_STORAGE_POLL_INTERVAL_S": "0"}, "SLUICE_STORAGE_POLL_INTERVAL_S"),
        ({"SLUICE_STORAGE_POLL_INTERVAL_S": "soon"}, "SLUICE_STORAGE_POLL_INTERVAL_S"),
        ({"SLUICE_STORAGE_SQS_WAIT_S": "21"}, "SLUICE_STORAGE_SQS_WAIT_S"),
        ({"SLUICE_STORAGE_KAFKA_GROUP_ID": ""}, "SLUICE_STORAGE_KAFKA_GROUP_ID"),
    ],
)
def test_bad_storage_settings_fail_with_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_storage_settings()
    message = str(caught.value)
    assert message.startswith(f"invalid configuration: {variable}: ")
    assert "\n" not in message


def test_storage_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_STORAGE_POLL", "data/input/,logs")
    monkeypatch.setenv("SLUICE_STORAGE_POLL_INTERVAL_S", "5")
    monkeypatch.setenv("SLUICE_STORAGE_KAFKA_TOPICS", "minio-events, other ,minio-events")

    settings = load_storage_settings()

    assert settings.poll_targets == [PollTarget("data", "input/"), PollTarget("logs", "")]
    assert settings.poll_interval_s == 5
    assert settings.kafka_topic_list == ["minio-events", "other"]
    assert StorageSettings(poll="", kafka_topics="").kafka_topic_list == []


def test_body_events_routes_each_record_by_bucket() -> None:
    events = body_events((FIXTURES / "aws_multi.json").read_bytes(), NOW, origin="webhook")

    assert [e.subject for e in events] == ["analytics-landing"] * 3
    assert [e.source for e in events] == ["s3"] * 3
    assert {e.received_at for e in events} == {NOW}
    assert all(e.error is None and e.message is not None for e in events)
    assert (
        events[0].ref
        == "analytics-landing/logs/app 2024-05-14.log@0cc175b9c0f1b6a831c399e269772661"
    )


@pytest.mark.parametrize(
    ("fixture", "ref"),
    [
        ("aws_put_versioned.json", "#"),
        ("minio_put.json", "@5d41402abc4b2a76b9719d911017c592"),
    ],
)
def test_refs_name_the_object_version_when_known(fixture: str, ref: str) -> None:
    [event] = body_events((FIXTURES / fixture).read_bytes(), NOW, origin="webhook")

    assert ref in event.ref


@pytest.mark.parametrize("fixture", ["sqs_test_event.json", "sns_test_event.json"])
def test_test_events_give_no_event(fixture: str) -> None:
    assert body_events((FIXTURES / fixture).read_bytes(), NOW, origin="sqs:q/1") == []


def test_an_unparseable_body_is_one_invalid_event() -> None:
    [event] = body_events(b'{"Records": 5, "Key": "data/a.csv"}', NOW, origin="sqs:q/m-1")

    assert event.error == "Records must be a list, got number"
    assert event.subject == "data"
    assert event.ref == "sqs:q/m-1"
    assert event.message is None
    assert event.raw == '{"Records": 5, "Key": "data/a.csv"}'


@pytest.mark.parametrize(
    ("body", "bucket"),
    [
        (b"not json", None),
        (b'{"Records": [{"s3": {"bucket": {"name": "data"}}}]}', "data"),
        (b'{"Records": [{"s3": {"bucket": {"name": "Not A Bucket"}}}]}', None),
        (b'{"Records": [{"s3": {"bucket": "data"}}]}', None),
        (b'{"Records": [], "Key": "raw/x/y.csv"}', "raw"),
        (b'{"Key": 5}', None),
        (b'{"Key": "' + b"a" * 70 + b'/x"}', None),
        (
            json.dumps(
                {"Type": "Notification", "Message": json.dumps({"Key": "logs/a", "Records": 1})}
            ).encode(),
            "logs",
        ),
        (b"[1]", None),
        ({"Records": [{"s3": {"bucket": {"name": "mapped"}}}]}, "mapped"),
        (b"[" * 10_000 + b"]" * 10_000, None),
    ],
)
def test_guess_bucket(body: Any, bucket: str | None) -> None:
    assert guess_bucket(body) == bucket


def test_invalid_events_without_a_bucket_use_the_unknown_subject() -> None:
    [event] = body_events(b"\xff\xfe", NOW, origin="webhook")

    assert event.subject == UNKNOWN_SUBJECT


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"plain", "plain"),
        (b"\xff ok", "\ufffd ok"),
        ("nul\x00here", "nul\ufffdhere"),
        ("lone \ud800", "lone ?"),
        ({"a": 1}, '{"a": 1}'),
    ],
)
def test_raw_text_is_always_storable(body: Any, expected: str) -> None:
    assert raw_text(body) == expected


def test_raw_text_is_capped() -> None:
    assert len(raw_text(b"x" * (RAW_LIMIT_CHARS * 2))) == RAW_LIMIT_CHARS


@pytest.mark.parametrize(
    ("authorization", "query", "expected"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer  abc ", None, "abc"),
        ("BEARER abc", "other", "abc"),
        ("Basic abc", "abc", None),
        ("abc", None, None),
        ("Bearer", None, None),
        (None, "abc", "abc"),
        (None, "", None),
        (None, None, None),
    ],
)
def test_presented_token(
    authorization: str | None, query: str | None, expected: str | None
) -> None:
    assert presented_token(authorization, query) == expected


@pytest.mark.parametrize(
    ("configured", "presented", "accepted"),
    [
        (["t1"], "t1", True),
        (["t1"], "t2", False),
        (["t1"], "t1 ", False),
        (["old", "new"], "old", True),
        (["old", "new"], "new", True),
        ([], "t1", False),
        (["t1"], None, False),
        (["t1"], "", False),
        (["ünï"], "ünï", True),
        (["t1"], "\udcff", False),
    ],
)
def test_token_accepted(configured: list[str], presented: str | None, accepted: bool) -> None:
    assert token_accepted(presented, token_digests(configured)) is accepted


@pytest.mark.parametrize(
    ("queue_url", "endpoint", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/uploads", None, "eu-west-1"),
        ("https://sqs.cn-north-1.amazonaws.com.cn/123/q", None, "cn-north-1"),
        ("http://127.0.0.1:19000/123456789012/sluice-dev", "http://127.0.0.1:19000", "us-west-2"),
        ("http://elasticmq:9324/000000000000/q", "http://elasticmq:9324", "us-west-2"),
    ],
)
def test_sqs_endpoint_follows_the_queue_url(
    queue_url: str, endpoint: str | None, region: str
) -> None:
    settings = load_settings(s3_region="us-west-2", s3_endpoint="http://minio:9000")

    options = aws.sqs_options(settings, queue_url)

    assert options.get("endpoint_url") == endpoint
    assert options["region_name"] == region


def test_s3_options_use_path_style_for_custom_endpoints() -> None:
    custom = aws.s3_options(
        load_settings(
            s3_endpoint="http://minio:9000", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s"
        )
    )
    default = aws.s3_options(load_settings(s3_endpoint=None))

    assert custom["endpoint_url"] == "http://minio:9000"
    assert custom["config"].s3 == {"addressing_style": "path"}
    assert (custom["aws_access_key_id"], custom["aws_secret_access_key"]) == ("k", "s")
    assert "endpoint_url" not in default


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        ("s3://data/input/a.csv", ("data", "input/a.csv")),
        ("data/input/a.csv", ("data", "input/a.csv")),
        ("data/input/", ("data", "input/local.csv")),
        ("data", ("data", "local.csv")),
        ("s3://data/", ("data", "local.csv")),
        ("data/dir with space/", ("data", "dir with space/local.csv")),
    ],
)
def test_upload_destination(destination: str, expected: tuple[str, str]) -> None:
    assert parse_destination(destination, "local.csv") == expected


@pytest.mark.parametrize("destination", ["", "/key", "s3:///key"])
def test_upload_destination_needs_a_bucket(destination: str) -> None:
    with pytest.raises(ValueError, match="names no bucket"):
        parse_destination(destination, "local.csv")


@pytest.mark.parametrize(
    ("endpoint", "credentials", "dev_credentials"),
    [
        ("http://127.0.0.1:19000", {}, True),
        ("http://localhost:19000", {}, True),
        ("http://[::1]:19000", {}, True),
        ("https://minio.example.com", {}, False),
        ("http://127.0.0.1:19000", {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}, False),
        (None, {}, False),
    ],
)
def test_upload_uses_dev_credentials_only_for_a_local_endpoint_without_credentials(
    endpoint: str | None, credentials: dict[str, str], dev_credentials: bool
) -> None:
    values: dict[str, Any] = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
    settings = load_settings(s3_endpoint=None, **{**values, **credentials})

    options = upload_options(settings, endpoint)

    assert (options.get("aws_access_key_id") == "sluice") is dev_credentials
    assert options.get("endpoint_url") == endpoint
