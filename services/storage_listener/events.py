"""Storage notifications turned into intake events, the same way for every source.

A body that parses becomes one `IncomingEvent` per record, routed by bucket. A body that does
not becomes ONE event with `error` set, its subject the bucket when the body names one (so the
audit trail of that bucket's triggers shows it) and `unknown` otherwise: malformed
notifications are recorded `invalid` rather than rejected, because a store that is refused
retries the same body forever.

Pure: no I/O; the receive time is an argument.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from services.storage_listener.formats import ParseError, S3Record, parse_notification
from shared.models.events import IncomingEvent

UNKNOWN_SUBJECT: Final = "unknown"
# Enough of a rejected body to diagnose it; the audit row is not an archive.
RAW_LIMIT_CHARS: Final = 64 * 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def record_ref(record: S3Record) -> str:
    """Where the event points: `bucket/key`, then `@etag` and `#versionId` when known."""
    ref = f"{record.bucket}/{record.key}"
    if record.etag:
        ref += f"@{record.etag}"
    if record.version_id:
        ref += f"#{record.version_id}"
    return ref


def record_event(record: S3Record, received_at: datetime) -> IncomingEvent:
    """The intake event of one normalized record."""
    return IncomingEvent(
        source="s3",
        subject=record.bucket,
        ref=record_ref(record),
        message=record.message,
        received_at=received_at,
    )


def body_events(
    body: bytes | str | Mapping[str, Any], received_at: datetime, *, origin: str
) -> list[IncomingEvent]:
    """The events of one notification body, in body order.

    `origin` names where the body came from (`webhook`, `sqs:<queue>/<message id>`,
    `kafka:<topic>/<partition>/<offset>`) and becomes the `ref` of an invalid event. An
    `s3:TestEvent` and an empty `Records` list give no event at all.
    """
    try:
        records = parse_notification(body)
    except ParseError as exc:
        return [invalid_event(body, str(exc), received_at, origin=origin)]
    return [record_event(r, received_at) for r in records]


def invalid_event(
    body: bytes | str | Mapping[str, Any], error: str, received_at: datetime, *, origin: str
) -> IncomingEvent:
    """An event recording a body that could not be admitted, with the reason."""
    return IncomingEvent(
        source="s3",
        subject=guess_bucket(body) or UNKNOWN_SUBJECT,
        ref=origin,
        error=error,
        raw=raw_text(body),
        received_at=received_at,
    )


def guess_bucket(body: bytes | str | Mapping[str, Any]) -> str | None:
    """The bucket a (possibly malformed) body is about, if it says so plainly; never raises.

    Looks at `Records[0].s3.bucket.name`, then MinIO's top-level `Key` (`bucket/object`), also
    inside an SNS envelope. Anything that is not a valid bucket name is ignored, so garbage never
    becomes a subject.
    """
    try:
        document: Any = body if isinstance(body, Mapping) else json.loads(body)
        if isinstance(document, Mapping) and isinstance(document.get("Message"), str):
            inner = json.loads(document["Message"])
            if isinstance(inner, Mapping):
                document = inner
        if not isinstance(document, Mapping):
            return None
        candidates: list[Any] = []
        records = document.get("Records")
        if isinstance(records, list) and records and isinstance(records[0], Mapping):
            s3 = records[0].get("s3")
            if isinstance(s3, Mapping) and isinstance(s3.get("bucket"), Mapping):
                candidates.append(s3["bucket"].get("name"))
        key = document.get("Key")
        if isinstance(key, str):
            candidates.append(key.partition("/")[0])
    except (ValueError, TypeError, RecursionError):
        return None
    for candidate in candidates:
        if isinstance(candidate, str) and _BUCKET_RE.fullmatch(candidate):
            return candidate
    return None


def raw_text(body: bytes | str | Mapping[str, Any]) -> str:
    """A body as storable text: invalid UTF-8 and NUL replaced, cut at `RAW_LIMIT_CHARS`."""
    if isinstance(body, Mapping):
        try:
            text = json.dumps(body, ensure_ascii=False, default=repr)
        except (ValueError, TypeError, RecursionError):
            text = repr(body)
    elif isinstance(body, bytes):
        text = body[: RAW_LIMIT_CHARS * 4].decode("utf-8", "replace")
    else:
        text = body
    text = text[:RAW_LIMIT_CHARS]
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded for the wire.
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
