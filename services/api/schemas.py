"""Request and response shapes of the HTTP API beyond the domain models in `shared/models`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from shared.backpressure import WorkflowBackpressure
from shared.db.connections import ConnectionOut
from shared.db.tokens import Role, TokenOut
from shared.db.workspaces import WorkspaceOut
from shared.models.common import Name, Record, Spec
from shared.models.instances import InstanceKind, InstanceOut, InstanceState, RunRequest
from shared.models.triggers import TriggerOut
from shared.models.workflows import WorkflowOut

T = TypeVar("T")


class ErrorDetail(BaseModel):
    field: str | None
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="machine-readable: not_found, conflict, invalid, forbidden, ...")
    message: str
    field: str | None = Field(default=None, description="dotted path of the offending field")
    errors: list[ErrorDetail] | None = Field(
        default=None, description="every validation error, when there is more than one"
    )


class ErrorBody(BaseModel):
    """What every non-2xx answer of the API carries."""

    error: ErrorInfo


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "malformed request: the body cannot be decoded",
    401: "missing, unknown or revoked token",
    403: "the token's workspace or role does not allow this",
    404: "no such object in this workspace",
    409: "conflicts with stored state",
    413: "request body too large",
    422: "invalid request; `field` names the offending field",
    503: "the database is unavailable",
}


def error_responses(*, by_reference: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses. `by_reference` spells the JSON content out,
    for routes whose own response class is not JSON (FastAPI would give errors that type)."""
    if not by_reference:
        return {s: {"model": ErrorBody, "description": d} for s, d in ERROR_DESCRIPTIONS.items()}
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {s: {"description": d, "content": content} for s, d in ERROR_DESCRIPTIONS.items()}


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` as `cursor` to get the next one."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_cursor: str | None = None


class WorkspaceCreate(Spec):
    name: Name
    parameters: dict[str, Any] = Field(default_factory=dict)


class WorkspaceParameters(Spec):
    parameters: dict[str, Any]


class TokenCreate(Spec):
    name: Name
    role: Role


class TokenCreated(TokenOut):
    """A new token; `secret` is shown this once and never again."""

    secret: str


class WorkspaceCreated(Record):
    workspace: WorkspaceOut
    token: TokenCreated = Field(description="an admin token for the new workspace")


class ConnectionSaved(Record):
    connection: ConnectionOut
    created: bool


class TriggerSaved(Record):
    trigger: TriggerOut
    created: bool
    changed: bool


class WorkflowDetail(WorkflowOut):
    spec: dict[str, Any] = Field(description="the spec of the latest saved version")


class WorkflowSaved(Record):
    workflow: WorkflowOut
    version: int = Field(description="the version the saved spec is stored as")
    created: bool = Field(description="the workflow did not exist before")
    new_version: bool = Field(description="the spec differed from the latest version")
    published: bool = Field(description="this request changed the published version")
    changed: bool = Field(description="anything changed at all")


class PublishRequest(Spec):
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class RevertRequest(Spec):
    version: int = Field(ge=1, le=2**31 - 1)
    publish: bool = False


class CloneRequest(Spec):
    name: Name


class RunBody(RunRequest):
    """POST .../runs. `kind` records who asked: a program (`api`) or a person (`manual`)."""

    kind: Literal["api", "manual"] = "api"


class RunAccepted(Record):
    instance_id: int
    state: InstanceState
    replaced: int | None = Field(
        default=None, description="the waiting instance cancelled by overflow=replace"
    )


class RerunRequest(Spec):
    mode: Literal["all", "failed"] = "all"


class InstanceSummary(Record):
    id: int
    workflow: str
    version: int
    kind: InstanceKind
    state: InstanceState
    priority: int | None
    cyctime: datetime
    bizdate: date | None
    event_id: int | None
    backfill_id: int | None
    rerun_of: int | None
    reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    node_states: dict[str, int] = Field(description="how many nodes are in each state")


class InstanceDetail(InstanceOut):
    reason: str | None = Field(default=None, description="why it was cancelled, if it was")
    rerun_of: int | None = None


class LastInstance(Record):
    id: int
    kind: InstanceKind
    state: InstanceState
    created_at: datetime
    finished_at: datetime | None


class WorkflowStatus(Record):
    """Aggregated O&M view of one workflow."""

    workflow: str
    frozen: bool
    current_version: int
    published_version: int | None
    instances: dict[str, int] = Field(description="instance count per state (waiting = queuing)")
    nodes: dict[str, int] = Field(description="ready and running nodes of unfinished instances")
    last_instance: LastInstance | None
    last_succeeded_at: datetime | None
    last_failed_at: datetime | None
    backpressure: WorkflowBackpressure | None = Field(
        default=None,
        description="waiting instances against policy.max_waiting of the published version "
        "(null without a bound); state holding: the sources hold its events back",
    )


class Change(Record):
    path: str = Field(description="where in the spec: nodes[load].code, policy.priority, ...")
    op: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None


class VersionDiff(Record):
    workflow: str
    from_version: int
    to_version: int
    changes: list[Change]
    unified: str = Field(description="unified diff of the pretty-printed specs")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
