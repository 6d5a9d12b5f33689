"""Workflow instances, node instances and attempts as stored."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from shared.models.bizdates import BizDate
from shared.models.common import Priority, Record, Spec
from shared.models.workflows import check_parameter_names

InstanceKind = Literal["scheduled", "triggered", "manual", "api", "backfill", "rerun", "replay"]
InstanceState = Literal["waiting", "running", "succeeded", "failed", "terminated", "cancelled"]
NodeState = Literal[
    "pending",
    "ready",
    "running",
    "succeeded",
    "failed",
    "upstream_failed",
    "terminated",
    "skipped",
]
FINAL_INSTANCE_STATES: frozenset[str] = frozenset(
    {"succeeded", "failed", "terminated", "cancelled"}
)
FINAL_NODE_STATES: frozenset[str] = frozenset(
    {"succeeded", "failed", "upstream_failed", "terminated", "skipped"}
)


class RunRequest(Spec):
    """A manual/API run request."""

    trigger_message: Any = None
    parameters: Annotated[dict[str, Any], AfterValidator(check_parameter_names)] = Field(
        default_factory=dict
    )
    priority: Priority | None = None
    bizdate: BizDate | None = None
    version: int | None = Field(default=None, ge=1)
    draft: bool = False


class AttemptOut(Record):
    id: int
    attempt: int
    state: str
    reason: str | None
    exit_code: int | None
    executor: str | None
    started_at: datetime | None
    finished_at: datetime | None
    parameters: dict[str, Any] | None


class NodeInstanceOut(Record):
    id: int
    name: str
    type: str
    state: NodeState
    priority: int
    weight: int
    resource_group: str
    upstream: list[str]
    attempts: list[AttemptOut] = Field(default_factory=list)
    # Priority after aging (policy.aging_s) while the node is ready; else its priority.
    effective_priority: int | None = None


class UpstreamWait(Record):
    """One upstream cycle an instance waits (or waited) for (dependencies between workflows)."""

    workflow: str
    cycle: str
    bizdate: date
    cyctime: datetime | None
    satisfied: bool
    satisfied_by: int | None
    upstream_instance_id: int | None
    upstream_state: str | None
    reason: str | None


class InstanceOut(Record):
    id: int
    workspace: str
    workflow: str
    version: int
    kind: InstanceKind
    state: InstanceState
    priority: int | None
    cyctime: datetime
    bizdate: date | None
    parameters: dict[str, Any]
    trigger_message: Any
    event_id: int | None
    backfill_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    nodes: list[NodeInstanceOut] = Field(default_factory=list)
    waiting_for: list[UpstreamWait] = Field(default_factory=list)
    # Seconds per aging level (policy.aging_s at creation) and the queue priority it has reached
    # while waiting (its queue priority once promoted).
    aging_s: float | None = None
    effective_priority: int | None = None
    # policy.lane resolved at admission ("" when the template did not resolve).
    lane: str | None = None
    # Kind `replay`: the replay job and the original event its record was first admitted by.
    replay_id: int | None = None
    replay_of: int | None = None
    # Trigger option `coalesce`: how many events, and which, the instance's window gathered.
    coalesced_events: int | None = None
    coalesced_event_ids: list[int] = Field(default_factory=list)


RequestAction = Literal["terminate", "rerun"]
RequestState = Literal["pending", "done", "failed"]


class InstanceRequestOut(Record):
    """A terminate or rerun request: recorded by the API, carried out by an executor.

    `instance_state`: the instance's state right after the request was carried out; while it is
    pending, the instance's state now.
    """

    id: int
    instance_id: int
    action: RequestAction
    mode: Literal["all", "failed"] | None
    state: RequestState
    reason: str | None
    requested_by: str | None
    requested_at: datetime
    finished_at: datetime | None
    instance_state: InstanceState
