"""Object-storage event notifications parsed into one normalized record shape.

Every storage intake path (webhook, SQS, Kafka, bucket polling) hands what the store sent to
`parse_notification` (or builds the record with `object_created_message`) and gets `S3Record`
values whose `message` is the trigger message workflows see: a CloudEvents 1.0 envelope around the
S3 event record in AWS schema, with the fields that differ between stores normalized.

Stores disagree on details this module hides:
- MinIO and AWS (and moto) URL-encode object keys form-style (`+` is a space); Ceph RGW sends them
  raw. A key is decoded exactly once, chosen by the record's `eventSource`, so keys containing a
  literal `%` or `+` survive from every store.
- AWS and Ceph omit the `s3:` prefix of event names; MinIO includes it.
- ETags may arrive quoted; Ceph sends `size` as a string and an empty `versionId`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict

EVENT_NAME_PREFIX: Final = "s3:"
TEST_EVENT: Final = "s3:TestEvent"
OBJECT_CREATED_PUT: Final = "s3:ObjectCreated:Put"
POLL_SOURCE: Final = "sluice:poll"

# Sources that put keys into records exactly as stored. Every other source follows the AWS
# convention of form-encoded keys; decoding a raw key would corrupt one containing `%` or `+`.
RAW_KEY_SOURCES: Final = frozenset({"ceph:s3"})

# Version ids that do not identify a version: an empty string (Ceph, unversioned buckets) and
# "null", which every overwrite in an unversioned or suspended bucket shares. Treating them as
# absent lets the sequencer tell those writes apart.
_NON_VERSION_IDS: Final = frozenset({"", "null"})


class ParseError(ValueError):
    """A notification body that cannot be turned into S3 records; the message says why."""


class S3Record(BaseModel):
    """One object event, normalized across MinIO, AWS, Ceph RGW, moto and bucket polling.

    `key` is the decoded object key; `event_name` always carries the `s3:` prefix; `etag` has no
    quotes. `message` is the CloudEvents 1.0 trigger message whose `data` is the normalized record.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str
    key: str
    event_name: str
    etag: str | None
    size: int | None
    version_id: str | None
    sequencer: str | None
    event_time: str
    event_source: str
    message: dict[str, Any]


def parse_notification(body: bytes | str | Mapping[str, Any]) -> list[S3Record]:
    """Parse a storage notification body into normalized records, in body order.

    Accepts MinIO webhook/Kafka bodies (`EventName`, `Key`, `Records`), AWS and Ceph RGW
    `{"Records": [...]}` bodies, and either of those wrapped in an SNS `Notification` (S3 → SNS →
    SQS). An `s3:TestEvent` (sent by AWS when a notification is configured) yields `[]`.

    Raises `ParseError` naming the problem when the body is not JSON, not an object, has no
    `Records` list, or any record lacks a bucket name, key, event name or event time, has a
    field of the wrong type, or holds text PostgreSQL cannot store (NUL, unpaired surrogates).
    One bad record rejects the whole body, so a body is either admitted or recorded as invalid
    as a unit.
    """
    document = _load_document(body)
    if _is_sns_envelope(document):
        document = _unwrap_sns(document)
    if document.get("Event") == TEST_EVENT:
        return []
    if "Records" not in document:
        keys = ", ".join(sorted(str(k) for k in document)[:10]) or "none"
        raise ParseError(f"body has no Records (top-level keys: {keys})")
    records = document["Records"]
    if not isinstance(records, list | tuple):
        raise ParseError(f"Records must be a list, got {_json_type(records)}")
    return [_normalize(raw, f"Records[{i}]", decode_key=None) for i, raw in enumerate(records)]


def is_test_event(body: Mapping[str, Any]) -> bool:
    """Whether `body` is the `s3:TestEvent` AWS sends when notifications are configured.

    SNS-wrapped test events count too. Never raises: anything unparseable is not a test event.
    """
    if _is_sns_envelope(body):
        try:
            body = _unwrap_sns(body)
        except ParseError:
            return False
    return body.get("Event") == TEST_EVENT


def object_created_message(
    bucket: str,
    key: str,
    etag: str,
    size: int,
    last_modified: datetime,
    *,
    source: str = POLL_SOURCE,
) -> S3Record:
    """Build the `s3:ObjectCreated:Put` record for an object found by listing a bucket.

    `key` is taken as-is (ListObjectsV2 returns decoded keys), `etag` may be quoted as listings
    return it, and `last_modified` must be timezone-aware; it becomes the event time, so listing
    the same object again yields the same record and the same CloudEvents id.
    """
    if last_modified.utcoffset() is None:
        raise ValueError("last_modified must be timezone-aware")
    raw: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": source,
        "eventTime": _format_event_time(last_modified),
        "eventName": OBJECT_CREATED_PUT,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": size, "eTag": etag},
        },
    }
    return _normalize(raw, "object", decode_key=False)


def _load_document(body: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        return body
    if not isinstance(body, bytes | str):
        raise ParseError(f"body must be bytes, str or a mapping, got {type(body).__name__}")
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ParseError("body is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ParseError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ParseError(f"body must be a JSON object, got {_json_type(document)}")
    return document


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON and cannot be stored in a JSONB trigger message.
    raise ValueError(f"{name} is not allowed")


def _is_sns_envelope(document: Mapping[str, Any]) -> bool:
    return "Type" in document and "Message" in document and "Records" not in document


def _unwrap_sns(envelope: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = envelope.get("Type")
    if kind != "Notification":
        raise ParseError(f"SNS message of type {kind!r} carries no S3 event")
    message = envelope.get("Message")
    if isinstance(message, Mapping):
        return message
    if not isinstance(message, str):
        raise ParseError(f"SNS Message must be a string, got {_json_type(message)}")
    try:
        inner = json.loads(message, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"SNS Message is not valid JSON: {exc}") from exc
    if not isinstance(inner, dict):
        raise ParseError(f"SNS Message must be a JSON object, got {_json_type(inner)}")
    return inner


def _normalize(raw: Any, where: str, *, decode_key: bool | None) -> S3Record:
    """Validate one AWS-schema record and build its normalized form.

    `decode_key=None` decides by `eventSource`; the polling builder passes False because listed
    keys are already decoded whatever the source is called.
    """
    if not isinstance(raw, Mapping):
        raise ParseError(f"{where} must be an object, got {_json_type(raw)}")
    s3 = _object_field(raw, "s3", where)
    bucket_info = _object_field(s3, "bucket", f"{where}.s3")
    obj = _object_field(s3, "object", f"{where}.s3")

    bucket = bucket_info.get("name")
    if not isinstance(bucket, str) or not bucket:
        raise ParseError(f"{where} has no s3.bucket.name")
    raw_key = obj.get("key")
    if not isinstance(raw_key, str) or not raw_key:
        raise ParseError(f"{where} has no s3.object.key")

    event_source = _optional_str(raw, "eventSource", where) or ""
    if decode_key is None:
        decode_key = event_source not in RAW_KEY_SOURCES
    key = _decode_key(raw_key, where) if decode_key else raw_key
    event_name = _event_name(raw.get("eventName"), where)
    event_time = raw.get("eventTime")
    if not isinstance(event_time, str) or not event_time:
        raise ParseError(f"{where} has no eventTime")

    etag = _strip_quotes(_optional_str(obj, "eTag", f"{where}.s3.object") or "") or None
    size = _size(obj.get("size"), where)
    version_id = _optional_str(obj, "versionId", f"{where}.s3.object")
    if version_id in _NON_VERSION_IDS:
        version_id = None
    sequencer = _optional_str(obj, "sequencer", f"{where}.s3.object") or None

    data = _json_copy(raw, where)
    data["eventSource"] = event_source
    data["eventName"] = event_name
    data["eventTime"] = event_time
    data_s3 = data["s3"]
    data_s3["bucket"]["name"] = bucket
    data_s3["object"].update(
        key=key, size=size, eTag=etag, versionId=version_id, sequencer=sequencer
    )
    message = {
        "specversion": "1.0",
        "id": _event_id(bucket, key, event_name, etag, version_id, sequencer, event_time),
        "source": f"s3://{bucket}",
        "type": event_name,
        "subject": f"{bucket}/{key}",
        "time": event_time,
        "datacontenttype": "application/json",
        "data": data,
    }
    return S3Record(
        bucket=bucket,
        key=key,
        event_name=event_name,
        etag=etag,
        size=size,
        version_id=version_id,
        sequencer=sequencer,
        event_time=event_time,
        event_source=event_source,
        message=message,
    )


def _object_field(parent: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    # An absent object reads as empty so the error names the field that matters (bucket name, key).
    value = parent.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ParseError(f"{where}.{name} must be an object, got {_json_type(value)}")
    return value


def _optional_str(parent: Mapping[str, Any], name: str, where: str) -> str | None:
    value = parent.get(name)
    if value is not None and not isinstance(value, str):
        raise ParseError(f"{where}.{name} must be a string, got {_json_type(value)}")
    return value


def _decode_key(raw_key: str, where: str) -> str:
    try:
        key = unquote_plus(raw_key, errors="strict")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"{where} s3.object.key {raw_key!r} is not valid UTF-8 after URL decoding"
        ) from exc
    _check_text(key, where)
    return key


def _check_text(text: str, where: str) -> None:
    """Reject text a JSONB trigger message cannot hold, so one body cannot fail a transaction."""
    if "\x00" in text:
        raise ParseError(f"{where} holds a NUL character (\\u0000), which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError(
            f"{where} holds an unpaired UTF-16 surrogate, which is not valid Unicode"
        ) from None


def _event_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.removeprefix(EVENT_NAME_PREFIX):
        raise ParseError(f"{where} has no eventName")
    if value.startswith(EVENT_NAME_PREFIX):
        return value
    return EVENT_NAME_PREFIX + value


def _strip_quotes(etag: str) -> str:
    if len(etag) >= 2 and etag.startswith('"') and etag.endswith('"'):
        return etag[1:-1]
    return etag


def _size(value: Any, where: str) -> int | None:
    if value is None:
        return None
    # bool is an int subclass; `true` is never a size.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    # Ceph RGW sends the size as a decimal string.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise ParseError(f"{where}.s3.object.size must be a non-negative integer, got {value!r}")


def _json_copy(value: Any, where: str) -> Any:
    """Deep-copy JSON data into plain dicts and lists so the caller's body is never mutated.

    Every string is checked on the way (`_check_text`).
    """
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ParseError(f"{where} has a non-string object key {k!r}")
            _check_text(k, where)
            copied[k] = _json_copy(v, where)
        return copied
    if isinstance(value, list | tuple):
        return [_json_copy(v, where) for v in value]
    if isinstance(value, str):
        _check_text(value, where)
        return value
    if value is None or isinstance(value, int | float | bool):
        return value
    raise ParseError(f"{where} holds a {type(value).__name__}, which is not JSON data")


def _event_id(
    bucket: str,
    key: str,
    event_name: str,
    etag: str | None,
    version_id: str | None,
    sequencer: str | None,
    event_time: str,
) -> str:
    """A CloudEvents id that a redelivery of the same event reproduces.

    Built only from what identifies the object event, never from delivery details (SNS wrapper,
    configuration id, request ids). The event time separates two writes of identical content
    from stores that send no sequencer (moto, polling).
    """
    identity = [bucket, key, event_name, etag, version_id, sequencer, event_time]
    canonical = json.dumps(identity, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _format_event_time(moment: datetime) -> str:
    # The AWS event-time shape: UTC with millisecond precision and a Z suffix.
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
