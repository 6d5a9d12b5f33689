"""Pure dedup keys: what makes two deliveries the same event for a trigger."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.models.triggers import AnyTriggerSpec, KafkaTriggerSpec, WorkflowTriggerSpec


class DedupError(ValueError):
    """The dedup key cannot be computed from this message (e.g. a template path is missing)."""


def dedup_key(trigger: AnyTriggerSpec, message: dict[str, Any]) -> str | None:
    """The key admissions are unique on, or None when the trigger does not deduplicate."""
    if isinstance(trigger, WorkflowTriggerSpec):
        return workflow_dedup_key(trigger, message)
    if isinstance(trigger, KafkaTriggerSpec):
        if trigger.dedup == "offset":
            return kafka_record_key(message)
        from shared.params.paths import MissingPath, render_template

        try:
            rendered = render_template(trigger.dedup, {"workflow": {"triggerMessage": message}})
        except MissingPath as exc:
            raise DedupError(f"dedup template: {exc}") from None
        except ValueError as exc:
            raise DedupError(f"dedup template {trigger.dedup!r}: {exc}") from None
        return f"tpl:{rendered}"
    if trigger.dedup == "none":
        return None
    data = message.get("data") or {}
    s3 = data.get("s3") or {}
    bucket = (s3.get("bucket") or {}).get("name")
    obj = s3.get("object") or {}
    key = obj.get("key")
    if not bucket or not isinstance(key, str):
        raise DedupError("message has no data.s3.bucket.name / data.s3.object.key")
    if trigger.dedup == "key":
        return f"{bucket}/{key}"
    if trigger.dedup == "etag":
        etag = obj.get("eTag")
        if not etag:
            raise DedupError("dedup 'etag': message has no data.s3.object.eTag")
        return f"{bucket}/{key}@{etag}"
    marker = obj.get("versionId") or obj.get("sequencer")
    if not marker:
        raise DedupError("dedup 'version': message has neither versionId nor sequencer")
    return f"{bucket}/{key}#{marker}"


def workflow_dedup_key(trigger: WorkflowTriggerSpec, message: dict[str, Any]) -> str:
    """Once per upstream instance and final state; with `refire_on_rerun`, once per ending.

    A failed instance rerun to success fires a `succeeded` trigger either way (a new state);
    a rerun that succeeds *again* fires again only with `refire_on_rerun`.
    """
    instance_id = message.get("instance_id")
    if not isinstance(instance_id, int):
        raise DedupError("message has no upstream instance_id")
    if trigger.refire_on_rerun:
        return f"instance:{instance_id}#{message.get('generation')}"
    return f"instance:{instance_id}:{message.get('state')}"


_CONTENT_FIELDS = ("key", "value", "headers", "key_encoding", "value_encoding", "header_encodings")
_COMPARED_FIELDS = ("timestamp", "key", "value", "headers")


def kafka_position(message: dict[str, Any]) -> str:
    """``topic/partition/offset``: where a record sits. Also the whole key of the `offset` mode
    before it identified records, which is why ``legacy_kafka_key`` returns it."""
    return f"{message['topic']}/{message['partition']}/{message['offset']}"


def kafka_record_key(message: dict[str, Any]) -> str:
    """The `offset` dedup key: the record's position plus what tells records at one position apart.

    A position alone is reused when a topic is recreated or a broker with memory storage restarts,
    and every new record there would be taken for one already admitted. A redelivery keeps the
    record's timestamp, a new record at the reused offset almost never has the same one:
    ``topic/partition/offset@timestamp_ms``. Without a timestamp the record's content is hashed
    instead: ``topic/partition/offset#<sha256 of key, value and headers>``.
    """
    position = kafka_position(message)
    timestamp_ms = message.get("timestamp_ms")
    if isinstance(timestamp_ms, int) and not isinstance(timestamp_ms, bool) and timestamp_ms >= 0:
        return f"{position}@{timestamp_ms}"
    content = {name: message.get(name) for name in _CONTENT_FIELDS}
    digest = hashlib.sha256(
        json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    ).hexdigest()
    return f"{position}#{digest[:32]}"


def legacy_kafka_key(trigger: AnyTriggerSpec, message: dict[str, Any]) -> str | None:
    """The key older versions admitted this record under (`offset` mode only), else None.

    Such a key names a position, not a record: intake counts a hit on it as a duplicate only when
    ``same_record`` says the stored message is this one.
    """
    if isinstance(trigger, KafkaTriggerSpec) and trigger.dedup == "offset":
        return kafka_position(message)
    return None


def same_record(stored: Any, message: dict[str, Any]) -> bool:
    """Whether a stored trigger message is a delivery of the same record as ``message``: same
    position is given (it was found by it), so timestamp, key, value and headers decide."""
    if not isinstance(stored, dict):
        # A payload stored truncated cannot be compared: the record counts as new.
        return False
    return all(stored.get(name) == message.get(name) for name in _COMPARED_FIELDS)
