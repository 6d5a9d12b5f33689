"""Parsing of MinIO, AWS, Ceph RGW, moto and SNS-wrapped storage notifications."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from services.storage_listener.formats import (
    ParseError,
    S3Record,
    is_test_event,
    object_created_message,
    parse_notification,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "s3"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(fixture_bytes(name))
    return document


def record(
    key: str,
    *,
    source: str = "aws:s3",
    event_name: str = "ObjectCreated:Put",
    bucket: str = "data",
    **object_fields: Any,
) -> dict[str, Any]:
    """A minimal AWS-schema record for building bodies inline."""
    return {
        "eventVersion": "2.1",
        "eventSource": source,
        "eventTime": "2024-05-14T08:31:07.412Z",
        "eventName": event_name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, **object_fields}},
    }


def body(*records: Any) -> dict[str, Any]:
    return {"Records": list(records)}


def only(parsed: list[S3Record]) -> S3Record:
    assert len(parsed) == 1
    return parsed[0]


# Fixture name -> the records it must parse to, in order:
# (bucket, key, event_name, etag, size, version_id, sequencer, event_source, event_time).
FIXTURE_CASES: list[tuple[str, list[tuple[Any, ...]]]] = [
    (
        "minio_put.json",
        [
            (
                "data",
                "input/daily report 2024.csv",
                "s3:ObjectCreated:Put",
                "5d41402abc4b2a76b9719d911017c592",
                48213,
                None,
                "17CF0A3A8B0D6F21",
                "minio:s3",
                "2024-05-14T08:31:07.412Z",
            )
        ],
    ),
    (
        "minio_unicode_versioned.json",
        [
            (
                "data",
                "input/文件 q1+q2.csv",
                "s3:ObjectCreated:CompleteMultipartUpload",
                "e2b9c7f0b1a64bd1a2f5c3d7e8f90a1b-14",
                73400320,
                "8b4e8f0e-6d2a-4f1c-9b7a-3c2d1e0f9a8b",
                "17CF0BF1C6A23B77",
                "minio:s3",
                "2024-05-14T09:02:44.108Z",
            )
        ],
    ),
    (
        "minio_delete.json",
        [
            (
                "data",
                "input/old.csv",
                "s3:ObjectRemoved:Delete",
                None,
                None,
                None,
                "17CF0FE1A1C5D6E7",
                "minio:s3",
                "2024-05-14T10:15:00.031Z",
            )
        ],
    ),
    (
        "aws_put_versioned.json",
        [
            (
                "analytics-landing",
                "exports/2024 Q1/summary+final.csv",
                "s3:ObjectCreated:Put",
                "9b2cf535f27731c974343645a3985328",
                1048576,
                "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                "0055AED6DCD90281E5",
                "aws:s3",
                "2024-05-14T08:31:07.412Z",
            )
        ],
    ),
    (
        "aws_multi.json",
        [
            (
                "analytics-landing",
                "logs/app 2024-05-14.log",
                "s3:ObjectCreated:Put",
                "0cc175b9c0f1b6a831c399e269772661",
                5120,
                None,
                "0066437A3B1C2D3E4F",
                "aws:s3",
                "2024-05-14T23:59:58.001Z",
            ),
            (
                "analytics-landing",
                "logs/app 2024-05-15.log",
                "s3:ObjectCreated:CompleteMultipartUpload",
                "d41d8cd98f00b204e9800998ecf8427e-10",
                52428800,
                None,
                "0066437A3B1C2D3E50",
                "aws:s3",
                "2024-05-15T00:00:03.250Z",
            ),
            (
                "analytics-landing",
                "logs/app 2024-05-13.log",
                "s3:ObjectRemoved:DeleteMarkerCreated",
                None,
                None,
                "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
                "0066437A3B1C2D3E51",
                "aws:s3",
                "2024-05-15T00:00:04.900Z",
            ),
        ],
    ),
    (
        "ceph_put.json",
        [
            (
                "raw",
                "input/100% done+final.csv",
                "s3:ObjectCreated:Put",
                "37b51d194a7513e45b56f6524f2d51f2",
                1024,
                None,
                "9B7B4366E2C4A12D",
                "ceph:s3",
                "2024-05-14T08:31:07.412718Z",
            )
        ],
    ),
    (
        "moto_put.json",
        [
            (
                "landing",
                "incoming/a b+c.csv",
                "s3:ObjectCreated:Put",
                "b1946ac92492d2347c6235b4d2611184",
                17,
                None,
                None,
                "aws:s3",
                "2024-05-14T08:31:07.000Z",
            )
        ],
    ),
    (
        "sns_wrapped.json",
        [
            (
                "analytics-landing",
                "exports/2024 Q1/summary+final.csv",
                "s3:ObjectCreated:Put",
                "9b2cf535f27731c974343645a3985328",
                1048576,
                "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                "0055AED6DCD90281E5",
                "aws:s3",
                "2024-05-14T08:31:07.412Z",
            )
        ],
    ),
    ("sqs_test_event.json", []),
    ("sns_test_event.json", []),
]


@pytest.mark.parametrize(("name", "expected"), FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES])
def test_fixture_bodies_parse_to_normalized_records(
    name: str, expected: list[tuple[Any, ...]]
) -> None:
    parsed = parse_notification(fixture_bytes(name))

    got = [
        (
            r.bucket,
            r.key,
            r.event_name,
            r.etag,
            r.size,
            r.version_id,
            r.sequencer,
            r.event_source,
            r.event_time,
        )
        for r in parsed
    ]
    assert got == expected


@pytest.mark.parametrize("name", [c[0] for c in FIXTURE_CASES])
def test_bytes_str_and_mapping_bodies_parse_identically(name: str) -> None:
    raw = fixture_bytes(name)

    as_bytes = parse_notification(raw)
    as_str = parse_notification(raw.decode("utf-8"))
    as_mapping = parse_notification(json.loads(raw))

    assert as_bytes == as_str == as_mapping


@pytest.mark.parametrize(
    ("source", "raw_key", "expected"),
    [
        ("aws:s3", "a+b.csv", "a b.csv"),
        ("aws:s3", "a%20b.csv", "a b.csv"),
        ("aws:s3", "a%2Bb.csv", "a+b.csv"),
        ("aws:s3", "dir/sub/file.csv", "dir/sub/file.csv"),
        ("aws:s3", "100%25.csv", "100%.csv"),
        ("aws:s3", "a%252B.csv", "a%2B.csv"),  # decoded exactly once, not twice
        ("aws:s3", "%E6%96%87%E4%BB%B6.csv", "文件.csv"),
        ("minio:s3", "dir%2Ffile.csv", "dir/file.csv"),
        ("minio:s3", "input%2F%E6%96%87%E4%BB%B6.csv", "input/文件.csv"),
        ("minio:s3", "x%2Bx+y", "x+x y"),
        ("minio:s3", "a%26b%3Dc%3F.csv", "a&b=c?.csv"),
        ("", "a+b.csv", "a b.csv"),  # no eventSource: the AWS schema's encoded-key convention
        ("ceph:s3", "a+b.csv", "a+b.csv"),
        ("ceph:s3", "100% done.csv", "100% done.csv"),
        ("ceph:s3", "a%2Fb%20c.csv", "a%2Fb%20c.csv"),
        ("ceph:s3", "a%2Bb.csv", "a%2Bb.csv"),
        ("ceph:s3", "文件 a.csv", "文件 a.csv"),
    ],
)
def test_keys_are_decoded_exactly_once_by_source(source: str, raw_key: str, expected: str) -> None:
    parsed = only(parse_notification(body(record(raw_key, source=source))))

    assert parsed.key == expected
    assert parsed.message["data"]["s3"]["object"]["key"] == expected
    assert parsed.message["subject"] == f"data/{expected}"


@pytest.mark.parametrize(
    ("raw_name", "expected"),
    [
        ("ObjectCreated:Put", "s3:ObjectCreated:Put"),
        ("s3:ObjectCreated:Put", "s3:ObjectCreated:Put"),
        ("ObjectCreated:CompleteMultipartUpload", "s3:ObjectCreated:CompleteMultipartUpload"),
        ("ObjectRemoved:Delete", "s3:ObjectRemoved:Delete"),
        ("s3:ObjectRemoved:DeleteMarkerCreated", "s3:ObjectRemoved:DeleteMarkerCreated"),
    ],
)
def test_event_names_carry_the_s3_prefix(raw_name: str, expected: str) -> None:
    parsed = only(parse_notification(body(record("k", event_name=raw_name))))

    assert parsed.event_name == expected
    assert parsed.message["type"] == expected
    assert parsed.message["data"]["eventName"] == expected


_ABSENT = object()


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("eTag", "0cc175b9c0f1b6a831c399e269772661", "0cc175b9c0f1b6a831c399e269772661"),
        ("eTag", '"0cc175b9c0f1b6a831c399e269772661"', "0cc175b9c0f1b6a831c399e269772661"),
        ("eTag", '"d41d8cd98f00b204e9800998ecf8427e-10"', "d41d8cd98f00b204e9800998ecf8427e-10"),
        ("eTag", '"', '"'),  # a lone quote is not a quoted value
        ("eTag", "", None),
        ("eTag", None, None),
        ("eTag", _ABSENT, None),
        ("size", 0, 0),
        ("size", 5120, 5120),
        ("size", "1024", 1024),  # Ceph RGW sends sizes as strings
        ("size", None, None),
        ("size", _ABSENT, None),
        ("versionId", "096fKKXTRTtl3on89fVO.nfljtsv6qko", "096fKKXTRTtl3on89fVO.nfljtsv6qko"),
        ("versionId", "", None),
        ("versionId", "null", None),
        ("versionId", _ABSENT, None),
        ("sequencer", "0055AED6DCD90281E5", "0055AED6DCD90281E5"),
        ("sequencer", "", None),
        ("sequencer", _ABSENT, None),
    ],
)
def test_object_fields_are_normalized(field: str, raw: Any, expected: Any) -> None:
    fields = {} if raw is _ABSENT else {field: raw}
    parsed = only(parse_notification(body(record("k", **fields))))

    attribute = {
        "eTag": "etag",
        "size": "size",
        "versionId": "version_id",
        "sequencer": "sequencer",
    }
    assert getattr(parsed, attribute[field]) == expected
    # The normalized record always carries the field, null when unknown, so filters see one shape.
    assert parsed.message["data"]["s3"]["object"][field] == expected


def test_envelope_is_cloudevents_around_the_normalized_record() -> None:
    parsed = only(parse_notification(fixture_bytes("minio_put.json")))
    message = parsed.message

    assert set(message) == {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "data",
    }
    assert message["specversion"] == "1.0"
    assert message["source"] == "s3://data"
    assert message["type"] == "s3:ObjectCreated:Put"
    assert message["subject"] == "data/input/daily report 2024.csv"
    assert message["time"] == "2024-05-14T08:31:07.412Z"
    assert message["datacontenttype"] == "application/json"
    assert isinstance(message["id"], str)
    assert len(message["id"]) == 32

    data = message["data"]
    assert data["eventSource"] == "minio:s3"
    assert data["eventName"] == "s3:ObjectCreated:Put"
    assert data["eventTime"] == "2024-05-14T08:31:07.412Z"
    assert data["s3"]["bucket"]["name"] == "data"
    assert data["s3"]["object"] == {
        "key": "input/daily report 2024.csv",
        "size": 48213,
        "eTag": "5d41402abc4b2a76b9719d911017c592",
        "contentType": "text/csv",
        "userMetadata": {"content-type": "text/csv"},
        "sequencer": "17CF0A3A8B0D6F21",
        "versionId": None,
    }
    # Everything the store sent besides the normalized fields reaches the workflow unchanged.
    original = fixture_json("minio_put.json")["Records"][0]
    for untouched in ("userIdentity", "requestParameters", "responseElements", "source"):
        assert data[untouched] == original[untouched]
    assert data["s3"]["bucket"]["arn"] == "arn:aws:s3:::data"
    assert data["s3"]["configurationId"] == "Config"
    assert json.loads(json.dumps(message)) == message


def test_ceph_record_is_normalized_to_the_aws_shape() -> None:
    data = only(parse_notification(fixture_bytes("ceph_put.json"))).message["data"]

    assert data["eventName"] == "s3:ObjectCreated:Put"
    assert data["s3"]["object"]["key"] == "input/100% done+final.csv"
    assert data["s3"]["object"]["size"] == 1024
    assert data["s3"]["object"]["versionId"] is None
    assert data["s3"]["object"]["metadata"] == [{"key": "x-amz-meta-origin", "val": "batch"}]
    assert data["opaqueData"] == ""


def test_parsing_never_mutates_the_callers_body() -> None:
    document = fixture_json("aws_multi.json")
    before = copy.deepcopy(document)

    parsed = parse_notification(document)
    parsed[0].message["data"]["s3"]["object"]["key"] = "changed"

    assert document == before


def test_redelivered_body_gets_the_same_ids() -> None:
    first = parse_notification(fixture_bytes("aws_multi.json"))
    second = parse_notification(fixture_bytes("aws_multi.json"))

    assert [r.message["id"] for r in first] == [r.message["id"] for r in second]
    assert len({r.message["id"] for r in first}) == 3


def test_sns_wrapped_and_direct_delivery_of_one_event_share_the_id() -> None:
    wrapped = only(parse_notification(fixture_bytes("sns_wrapped.json")))
    direct = only(parse_notification(fixture_bytes("aws_put_versioned.json")))

    assert wrapped == direct


def _set_request_id(r: dict[str, Any]) -> None:
    r["responseElements"] = {"x-amz-request-id": "OTHER"}


def _set_configuration(r: dict[str, Any]) -> None:
    r["s3"]["configurationId"] = "second-notification"


def _quote_etag(r: dict[str, Any]) -> None:
    r["s3"]["object"]["eTag"] = f'"{r["s3"]["object"]["eTag"]}"'


def _prefix_event_name(r: dict[str, Any]) -> None:
    r["eventName"] = "s3:" + r["eventName"]


def _object_field(name: str, value: Any) -> Any:
    def change(r: dict[str, Any]) -> None:
        r["s3"]["object"][name] = value

    return change


def _top_field(name: str, value: Any) -> Any:
    def change(r: dict[str, Any]) -> None:
        r[name] = value

    return change


@pytest.mark.parametrize(
    ("change", "same_id"),
    [
        pytest.param(_set_request_id, True, id="request-id"),
        pytest.param(_set_configuration, True, id="configuration-id"),
        pytest.param(_quote_etag, True, id="quoted-etag"),
        pytest.param(_prefix_event_name, True, id="prefixed-event-name"),
        pytest.param(_object_field("key", "exports/other.csv"), False, id="key"),
        pytest.param(_object_field("eTag", "ffffffffffffffffffffffffffffffff"), False, id="etag"),
        pytest.param(_object_field("sequencer", "0055AED6DCD90281FF"), False, id="sequencer"),
        pytest.param(_object_field("versionId", "other-version"), False, id="version"),
        pytest.param(_top_field("eventName", "ObjectCreated:Copy"), False, id="event-name"),
        pytest.param(_top_field("eventTime", "2024-05-14T08:31:08.000Z"), False, id="time"),
    ],
)
def test_id_depends_only_on_what_identifies_the_event(change: Any, same_id: bool) -> None:
    original = fixture_json("aws_put_versioned.json")
    changed = copy.deepcopy(original)
    change(changed["Records"][0])

    before = only(parse_notification(original)).message["id"]
    after = only(parse_notification(changed)).message["id"]

    assert (before == after) is same_id


def test_bucket_is_part_of_the_id() -> None:
    a = only(parse_notification(body(record("k", bucket="one", eTag="e"))))
    b = only(parse_notification(body(record("k", bucket="two", eTag="e"))))

    assert a.message["id"] != b.message["id"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sqs_test_event.json", True),
        ("sns_test_event.json", True),
        ("aws_put_versioned.json", False),
        ("sns_wrapped.json", False),
        ("minio_put.json", False),
    ],
)
def test_is_test_event(name: str, expected: bool) -> None:
    assert is_test_event(fixture_json(name)) is expected


@pytest.mark.parametrize(
    "document",
    [
        {"Type": "Notification", "Message": "not json"},
        {"Type": "SubscriptionConfirmation", "Message": "You have chosen to subscribe"},
        {"Type": "Notification", "Message": 5},
    ],
)
def test_is_test_event_is_false_for_unparseable_envelopes(document: dict[str, Any]) -> None:
    assert is_test_event(document) is False


def test_empty_records_list_is_no_records() -> None:
    assert parse_notification(b'{"Records": []}') == []


def test_sns_message_given_as_an_object_is_accepted() -> None:
    inner = fixture_json("aws_put_versioned.json")
    wrapped = {"Type": "Notification", "MessageId": "m-1", "Message": inner}

    assert parse_notification(wrapped) == parse_notification(inner)


def _record_without(*path: str) -> dict[str, Any]:
    r = record("k", eTag="e")
    target: dict[str, Any] = r
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return r


def _record_with(value: Any, *path: str) -> dict[str, Any]:
    r = record("k", eTag="e")
    target: dict[str, Any] = r
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return r


MALFORMED: list[tuple[str, bytes | str | dict[str, Any], str]] = [
    ("empty", b"", "not valid JSON"),
    ("text", b"hello", "not valid JSON"),
    ("truncated", b'{"Records": [', "not valid JSON"),
    ("invalid-utf8", b'{"Records": "\xff\xfe"}', "not valid JSON"),
    ("nan", '{"Records": NaN}', "not valid JSON"),
    ("deeply-nested", "[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ("array", "[1, 2]", "must be a JSON object, got array"),
    ("string", '"Records"', "must be a JSON object, got string"),
    ("null", "null", "must be a JSON object, got null"),
    ("number", "42", "must be a JSON object, got number"),
    ("no-records", "{}", "has no Records"),
    (
        "minio-without-records",
        {"EventName": "s3:ObjectCreated:Put", "Key": "b/k"},
        "has no Records",
    ),
    ("records-object", '{"Records": {}}', "Records must be a list, got object"),
    ("records-null", '{"Records": null}', "Records must be a list, got null"),
    ("records-string", '{"Records": "x"}', "Records must be a list, got string"),
    ("record-not-object", '{"Records": ["x"]}', r"Records\[0\] must be an object, got string"),
    ("record-null", '{"Records": [null]}', r"Records\[0\] must be an object, got null"),
    ("no-s3", body(_record_without("s3")), r"Records\[0\] has no s3.bucket.name"),
    ("no-bucket", body(_record_without("s3", "bucket")), "has no s3.bucket.name"),
    ("no-bucket-name", body(_record_without("s3", "bucket", "name")), "has no s3.bucket.name"),
    ("empty-bucket-name", body(_record_with("", "s3", "bucket", "name")), "s3.bucket.name"),
    ("bucket-name-number", body(_record_with(7, "s3", "bucket", "name")), "s3.bucket.name"),
    ("no-object", body(_record_without("s3", "object")), "has no s3.object.key"),
    ("no-key", body(_record_without("s3", "object", "key")), "has no s3.object.key"),
    ("null-key", body(_record_with(None, "s3", "object", "key")), "has no s3.object.key"),
    ("empty-key", body(_record_with("", "s3", "object", "key")), "has no s3.object.key"),
    ("s3-string", body(_record_with("x", "s3")), r"Records\[0\].s3 must be an object"),
    ("bucket-list", body(_record_with([], "s3", "bucket")), r"s3.bucket must be an object"),
    ("object-string", body(_record_with("k", "s3", "object")), r"s3.object must be an object"),
    ("no-event-name", body(_record_without("eventName")), "has no eventName"),
    ("event-name-number", body(_record_with(42, "eventName")), "has no eventName"),
    ("bare-prefix", body(_record_with("s3:", "eventName")), "has no eventName"),
    ("no-event-time", body(_record_without("eventTime")), "has no eventTime"),
    ("event-source-number", body(_record_with(1, "eventSource")), "eventSource must be a string"),
    ("etag-number", body(_record_with(123, "s3", "object", "eTag")), "eTag must be a string"),
    ("size-text", body(_record_with("big", "s3", "object", "size")), "size must be"),
    ("size-negative", body(_record_with(-1, "s3", "object", "size")), "size must be"),
    ("size-bool", body(_record_with(True, "s3", "object", "size")), "size must be"),
    ("size-float", body(_record_with(1.5, "s3", "object", "size")), "size must be"),
    ("version-number", body(_record_with(3, "s3", "object", "versionId")), "versionId must be"),
    ("bad-utf8-key", body(record("%FF%FE.csv")), "not valid UTF-8 after URL decoding"),
    (
        "nul-in-key",
        '{"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": "a\\u0000"}}, '
        '"eventName": "ObjectCreated:Put", "eventTime": "t"}]}',
        "NUL character",
    ),
    ("encoded-nul-key", body(record("a%00b")), "NUL character"),
    ("raw-nul-key", body(record("a\x00b", source="ceph:s3")), "NUL character"),
    ("nul-elsewhere", body(_record_with("x\x00", "userIdentity")), "NUL character"),
    ("nul-in-field-name", body(_record_with("v", "a\x00")), "NUL character"),
    (
        "surrogate-key",
        '{"Records": [{"s3": {"bucket": {"name": "b"}, "object": {"key": "\\ud800"}}, '
        '"eventName": "ObjectCreated:Put", "eventTime": "t"}]}',
        "unpaired UTF-16 surrogate",
    ),
    ("surrogate-elsewhere", body(_record_with("\udc00", "opaqueData")), "unpaired UTF-16"),
    (
        "second-record-bad",
        body(record("ok", eTag="e"), _record_without("s3", "object", "key")),
        r"Records\[1\] has no s3.object.key",
    ),
    (
        "not-json-data",
        body(_record_with(object(), "userIdentity")),
        "not JSON data",
    ),
    ("sns-message-text", {"Type": "Notification", "Message": "hello"}, "SNS Message is not valid"),
    ("sns-message-array", {"Type": "Notification", "Message": "[]"}, "must be a JSON object"),
    ("sns-message-number", {"Type": "Notification", "Message": 5}, "must be a string, got number"),
    (
        "sns-subscription",
        {"Type": "SubscriptionConfirmation", "Message": "You have chosen to subscribe"},
        "SubscriptionConfirmation",
    ),
    (
        "sns-without-records",
        {"Type": "Notification", "Message": '{"hello": "world"}'},
        "has no Records",
    ),
]


@pytest.mark.parametrize(
    ("document", "reason"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_bodies_raise_parse_error_with_reason(
    document: bytes | str | dict[str, Any], reason: str
) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_notification(document)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(ParseError, ValueError)


def test_polled_object_builds_the_same_record_shape() -> None:
    parsed = object_created_message(
        "data",
        "input/a+b 100%.csv",
        '"5d41402abc4b2a76b9719d911017c592"',
        48213,
        datetime(2024, 5, 14, 10, 31, 7, 412999, tzinfo=timezone(timedelta(hours=2))),
    )

    # Listed keys are already decoded: `+` and `%` stay literal.
    assert parsed.key == "input/a+b 100%.csv"
    assert parsed.bucket == "data"
    assert parsed.event_name == "s3:ObjectCreated:Put"
    assert parsed.etag == "5d41402abc4b2a76b9719d911017c592"
    assert parsed.size == 48213
    assert parsed.version_id is None
    assert parsed.sequencer is None
    assert parsed.event_source == "sluice:poll"
    assert parsed.event_time == "2024-05-14T08:31:07.412Z"
    message = parsed.message
    assert message["source"] == "s3://data"
    assert message["type"] == "s3:ObjectCreated:Put"
    assert message["subject"] == "data/input/a+b 100%.csv"
    assert message["time"] == "2024-05-14T08:31:07.412Z"
    assert message["data"]["eventSource"] == "sluice:poll"
    assert message["data"]["s3"]["bucket"] == {"name": "data", "arn": "arn:aws:s3:::data"}
    assert message["data"]["s3"]["object"] == {
        "key": "input/a+b 100%.csv",
        "size": 48213,
        "eTag": "5d41402abc4b2a76b9719d911017c592",
        "versionId": None,
        "sequencer": None,
    }


@pytest.mark.parametrize(
    ("first", "second", "same_id"),
    [
        (
            ("k", "e1", datetime(2024, 5, 14, tzinfo=UTC)),
            ("k", '"e1"', datetime(2024, 5, 14, tzinfo=UTC)),
            True,
        ),
        (
            ("k", "e1", datetime(2024, 5, 14, tzinfo=UTC)),
            ("k", "e2", datetime(2024, 5, 14, tzinfo=UTC)),
            False,
        ),
        (
            ("k", "e1", datetime(2024, 5, 14, tzinfo=UTC)),
            ("j", "e1", datetime(2024, 5, 14, tzinfo=UTC)),
            False,
        ),
        (
            ("k", "e1", datetime(2024, 5, 14, tzinfo=UTC)),
            ("k", "e1", datetime(2024, 5, 15, tzinfo=UTC)),
            False,
        ),
    ],
)
def test_polled_object_id_is_stable_across_listings(
    first: tuple[str, str, datetime], second: tuple[str, str, datetime], same_id: bool
) -> None:
    a = object_created_message("data", first[0], first[1], 1, first[2])
    b = object_created_message("data", second[0], second[1], 1, second[2])

    assert (a.message["id"] == b.message["id"]) is same_id


def test_polled_object_needs_an_aware_timestamp() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        object_created_message("data", "k", "e", 1, datetime(2024, 5, 14, 8, 31))


def test_polled_object_source_can_be_named() -> None:
    parsed = object_created_message(
        "data", "k", "e", 1, datetime(2024, 5, 14, tzinfo=UTC), source="sluice:poll:nightly"
    )

    assert parsed.event_source == "sluice:poll:nightly"
    assert parsed.message["data"]["eventSource"] == "sluice:poll:nightly"


def test_records_are_immutable() -> None:
    parsed = only(parse_notification(fixture_bytes("minio_put.json")))

    with pytest.raises(ValueError, match="frozen"):
        # Assigning to a frozen model on purpose: the test is that it is refused.
        parsed.key = "other"  # type: ignore[misc]
