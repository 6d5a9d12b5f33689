"""Trigger specs: named event matchers bound to triggered workflows."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import jmespath
import jmespath.exceptions
from pydantic import Field, field_validator, model_validator

from shared.models.common import Name, Record, Spec

S3DedupMode = Literal["etag", "key", "version", "none"]
_TEMPLATE_RE = re.compile(r"\$\{[^}]+\}")


def _check_filter(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip():
        raise ValueError("filter must not be empty (use null for no filter)")
    try:
        jmespath.compile(value)
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"invalid JMESPath expression: {exc}") from None
    return value


class Coalesce(Spec):
    """Trigger option `coalesce`: the events admitted for a workflow within one window become
    one instance. The window opens with the first event and closes `window_s` seconds later, or
    as soon as it holds `max_events` events."""

    window_s: float = Field(gt=0, le=86400)
    max_events: int = Field(default=1000, ge=1, le=100_000)


class KafkaTriggerSpec(Spec):
    """A Kafka topic watcher with an optional exact key match and JMESPath filter."""

    name: Name
    type: Literal["kafka"]
    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    key: str | None = None
    connection: Name | None = None
    dedup: str = "offset"
    filter: str | None = None
    enabled: bool = True
    description: str | None = None
    coalesce: Coalesce | None = None

    _v_filter = field_validator("filter")(_check_filter)

    @field_validator("dedup")
    @classmethod
    def _check_dedup(cls, value: str) -> str:
        if value == "offset":
            return value
        if _TEMPLATE_RE.search(value):
            from shared.params.paths import MissingPath, render_template

            # Render against an empty message: only syntax errors matter here, not missing paths.
            try:
                render_template(value, {})
            except MissingPath:
                pass
            return value
        raise ValueError(
            "kafka dedup must be 'offset' or a template such as "
            "'${workflow.triggerMessage.headers.message-id}'"
        )


class S3TriggerSpec(Spec):
    """An object-storage notification matcher: bucket, event names and a key glob."""

    name: Name
    type: Literal["s3"]
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    events: list[str] = Field(default_factory=lambda: ["s3:ObjectCreated:*"], min_length=1)
    key_pattern: str = "**"
    dedup: S3DedupMode = "etag"
    filter: str | None = None
    enabled: bool = True
    description: str | None = None
    coalesce: Coalesce | None = None

    _v_filter = field_validator("filter")(_check_filter)

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: list[str]) -> list[str]:
        out = []
        for name in value:
            bare = name.removeprefix("s3:")
            if not re.fullmatch(r"[A-Za-z]+(:[A-Za-z]+)?(:\*|\*)?|\*", bare):
                raise ValueError(f"invalid S3 event name {name!r}")
            out.append(name)
        return out

    @model_validator(mode="after")
    def _check_pattern(self) -> S3TriggerSpec:
        if not self.key_pattern:
            raise ValueError("key_pattern must not be empty")
        return self


WorkflowFinalState = Literal["succeeded", "failed", "terminated", "cancelled"]


def _on_success() -> list[WorkflowFinalState]:
    return ["succeeded"]


class WorkflowTriggerSpec(Spec):
    """Fires once per finished instance of another workflow of the workspace (DESIGN.md 8).

    The message is ``{"workflow", "instance_id", "state", "bizdate", "outputs", "generation"}``.
    Admissions are deduplicated by the upstream instance id and its final state; with
    `refire_on_rerun` by the instance id and its generation (every ending of a rerun fires).
    """

    name: Name
    type: Literal["workflow"]
    workflow: Name
    states: list[WorkflowFinalState] = Field(default_factory=_on_success, min_length=1)
    refire_on_rerun: bool = False
    filter: str | None = None
    enabled: bool = True
    description: str | None = None

    _v_filter = field_validator("filter")(_check_filter)

    @field_validator("states")
    @classmethod
    def _unique_states(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("states: a state is listed twice")
        return value


AnyTriggerSpec = KafkaTriggerSpec | S3TriggerSpec | WorkflowTriggerSpec
TriggerSpec = Annotated[AnyTriggerSpec, Field(discriminator="type")]
# Every `type` a trigger spec can have: what tells a trigger from a workflow in a spec file.
TRIGGER_TYPES: tuple[str, ...] = tuple(
    value
    for model in get_args(AnyTriggerSpec)
    for value in get_args(model.model_fields["type"].annotation)
)


class TriggerOut(Record):
    """A stored trigger as the API returns it."""

    id: int
    workspace: str
    name: str
    type: Literal["kafka", "s3", "workflow"]
    enabled: bool
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
