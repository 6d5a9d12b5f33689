"""Builders for specs, events and stored objects used across test tiers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from shared.db import triggers as trigger_repo
from shared.db import workflows as workflow_repo
from shared.db.pool import Connection
from shared.models.events import IncomingEvent
from shared.models.triggers import KafkaTriggerSpec, S3TriggerSpec, TriggerSpec
from shared.models.workflows import WorkflowSpec

DEFAULT_WS = 1
_TRIGGER = TypeAdapter(TriggerSpec)
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def kafka_trigger(name: str = "kt", topic: str = "orders", **kw: Any) -> KafkaTriggerSpec:
    spec = _TRIGGER.validate_python({"name": name, "type": "kafka", "topic": topic, **kw})
    assert isinstance(spec, KafkaTriggerSpec)
    return spec


def s3_trigger(name: str = "st", bucket: str = "data", **kw: Any) -> S3TriggerSpec:
    spec = _TRIGGER.validate_python({"name": name, "type": "s3", "bucket": bucket, **kw})
    assert isinstance(spec, S3TriggerSpec)
    return spec


def shell_node(name: str, upstream: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "shell", "code": "true", "upstream": upstream or [], **kw}


def workflow(
    name: str = "wf",
    *,
    type: str = "triggered",
    trigger: str | None = None,
    nodes: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> WorkflowSpec:
    data: dict[str, Any] = {
        "name": name,
        "type": type,
        "trigger": trigger,
        "nodes": nodes or [shell_node("a")],
        **kw,
    }
    return WorkflowSpec.model_validate(data)


def kafka_message(
    topic: str = "orders",
    partition: int = 0,
    offset: int = 0,
    key: str | None = None,
    value: str = '{"action_type": "login"}',
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": "2026-11-21T12:00:00Z",
        "key": key,
        "value": value,
        "headers": headers or {},
    }


def kafka_event(**kw: Any) -> IncomingEvent:
    msg = kafka_message(**kw)
    return IncomingEvent(
        source="kafka",
        subject=msg["topic"],
        ref=f"{msg['topic']}/{msg['partition']}/{msg['offset']}",
        message=msg,
        received_at=NOW,
    )


def s3_message(
    bucket: str = "data",
    key: str = "input/a.csv",
    etag: str = "e1",
    event_name: str = "s3:ObjectCreated:Put",
    size: int = 10,
    version_id: str | None = None,
    sequencer: str | None = None,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{bucket}/{key}@{etag}",
        "source": f"s3://{bucket}",
        "type": event_name,
        "subject": f"{bucket}/{key}",
        "time": "2026-11-21T12:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "eventName": event_name,
            "eventTime": "2026-11-21T12:00:00Z",
            "eventSource": "aws:s3",
            "s3": {
                "bucket": {"name": bucket},
                "object": {
                    "key": key,
                    "eTag": etag,
                    "size": size,
                    "versionId": version_id,
                    "sequencer": sequencer,
                },
            },
        },
    }


def s3_event(**kw: Any) -> IncomingEvent:
    msg = s3_message(**kw)
    obj = msg["data"]["s3"]["object"]
    return IncomingEvent(
        source="s3",
        subject=msg["data"]["s3"]["bucket"]["name"],
        ref=f"{msg['subject']}@{obj['eTag']}",
        message=msg,
        received_at=NOW,
    )


async def add_trigger(
    conn: Connection, spec: KafkaTriggerSpec | S3TriggerSpec, workspace_id: int = DEFAULT_WS
) -> int:
    out, _ = await trigger_repo.upsert(conn, "default", workspace_id, spec)
    return out.id


async def add_workflow(
    conn: Connection, spec: WorkflowSpec, *, publish: bool = True, workspace_id: int = DEFAULT_WS
) -> int:
    result = await workflow_repo.save(conn, workspace_id, spec, publish=publish)
    return result.workflow.id
