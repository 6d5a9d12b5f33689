"""Events as they enter intake, and the audit outcomes recorded for them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from shared.models.common import Record

EventSource = Literal["kafka", "s3", "workflow"]
Outcome = Literal[
    "admitted",  # instances created (instance_ids)
    "duplicate",  # dedup key already admitted for this trigger (instance_ids of the first run)
    "filtered",  # trigger matched the source but key / event name / pattern / filter said no
    "frozen",  # bound workflow is frozen
    "unpublished",  # bound workflow has no published version
    "overflow",  # instance created `cancelled` by the overflow policy cancel_new
    "invalid",  # the event could not be parsed, or a trigger could not evaluate it
    "no_trigger",  # no enabled trigger watches this source
    "no_workflow",  # the trigger matched but no workflow is bound to it
    "disabled",  # the trigger watching this source is disabled
    "coalesced",  # joined a coalescing window (instance_ids: the instance it closes into)
]
MAX_PAYLOAD_BYTES = 1 << 20


class ReplayOrigin(Record):
    """Marks an event re-read by a replay job: it is admitted for `trigger_id` alone, and its
    instances are of kind `replay`. With mode `all` its admission key is the replay's own, so a
    record admitted before runs again (linked to that first event in the audit)."""

    replay_id: int
    trigger_id: int
    mode: Literal["missing", "all"]


class IncomingEvent(Record):
    """A normalized event handed to `admit`.

    `subject` routes the event to candidate triggers even when it is invalid: the Kafka topic or
    the S3 bucket. `message` is the trigger message (None when `error` is set).
    """

    source: EventSource
    subject: str
    ref: str = Field(description="source position, e.g. topic/partition/offset or bucket/key@etag")
    message: dict[str, Any] | None = None
    error: str | None = None
    raw: str | None = None
    received_at: datetime
    cluster: str | None = Field(
        default=None,
        description="Kafka: the cluster read from, `<workspace id>/<connection>` (None: default)",
    )
    replay: ReplayOrigin | None = None


class OutcomeOut(Record):
    trigger: str | None
    workflow: str | None
    outcome: Outcome
    instance_ids: list[int]
    detail: str | None


class EventOut(Record):
    id: int
    workspace: str
    source: str
    subject: str
    ref: str
    received_at: datetime
    payload: Any
    payload_truncated: bool
    error: str | None
    outcomes: list[OutcomeOut]
    # Set on events re-read by a replay: the job, and the event that first admitted the record.
    replay_id: int | None = None
    replay_of: int | None = None


class AdmitResult(Record):
    """What `admit` did with one event in one workspace."""

    event_id: int
    workspace_id: int
    outcomes: list[OutcomeOut]

    @property
    def instance_ids(self) -> list[int]:
        return [i for o in self.outcomes if o.outcome == "admitted" for i in o.instance_ids]
