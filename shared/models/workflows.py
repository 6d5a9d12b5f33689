"""Workflow specs: nodes, policy, schedule, and whole-graph validation."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, StrictInt, field_validator, model_validator

from shared.models.common import Name, Priority, Record, Spec, Weighting
from shared.models.notifications import NotifyRule, node_rules
from shared.params.binding.reparsed import find_reparsed
from shared.params.outputs import invalid_references, output_references
from shared.params.resolution import BUILTIN_NAMESPACES

MAX_NODES = 400
JsonValue = Any
_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
_RESERVED_PARAMS = frozenset({"workflow", "system", "node", "nodes"})


def check_parameter_names(value: dict[str, Any]) -> dict[str, Any]:
    for name in value:
        if not _PARAM_NAME_RE.fullmatch(name):
            raise ValueError(
                f"parameter name {name!r} must start with a letter or '_' and hold only "
                "letters, digits, '_' and '-'"
            )
        if name in _RESERVED_PARAMS:
            raise ValueError(f"parameter name {name!r} is reserved for built-in variables")
    return value


class NodeBase(Spec):
    """Fields every node type has; `None` means 'inherit from the workflow policy'."""

    name: Name
    upstream: list[Name] = Field(default_factory=list)
    parameters: Annotated[dict[str, JsonValue], AfterValidator(check_parameter_names)] = Field(
        default_factory=dict
    )
    priority: Priority | None = None
    retries: int | None = Field(default=None, ge=0, le=100)
    retry_delay_s: float | None = Field(default=None, ge=0, le=86400)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    resource_group: Name | None = None
    description: str | None = None
    # Adds to the workflow's rules for this node's own events (status subscription).
    notify: Annotated[list[NotifyRule], AfterValidator(node_rules)] = Field(default_factory=list)

    @field_validator("upstream")
    @classmethod
    def _unique_upstream(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in value:
            if name in seen:
                raise ValueError(f"upstream {name!r} is listed twice")
            seen.add(name)
        return value


class ShellNode(NodeBase):
    type: Literal["shell"]
    code: str


class PythonNode(NodeBase):
    type: Literal["python"]
    code: str


class SqlNode(NodeBase):
    type: Literal["sql"]
    code: str
    connection: Name


class S3ObjectCheck(Spec):
    kind: Literal["s3_object"]
    connection: Name | None = None
    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)


class SqlCheck(Spec):
    kind: Literal["sql"]
    connection: Name
    query: str = Field(min_length=1)


class CheckNode(NodeBase):
    type: Literal["check"]
    check: Annotated[S3ObjectCheck | SqlCheck, Field(discriminator="kind")]
    interval_s: float = Field(default=30, gt=0, le=3600)


class S3ToPostgres(Spec):
    kind: Literal["s3_to_postgres"]
    s3_connection: Name | None = None
    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)
    connection: Name
    table: str = Field(min_length=1)
    header: bool = True
    truncate: bool = False


class PostgresToS3(Spec):
    kind: Literal["postgres_to_s3"]
    connection: Name
    query: str = Field(min_length=1)
    s3_connection: Name | None = None
    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)
    header: bool = True


class SyncNode(NodeBase):
    type: Literal["sync"]
    sync: Annotated[S3ToPostgres | PostgresToS3, Field(discriminator="kind")]


NodeSpec = Annotated[
    ShellNode | PythonNode | SqlNode | CheckNode | SyncNode, Field(discriminator="type")
]


class Policy(Spec):
    """Workflow-wide scheduling policy."""

    priority: Priority = 1
    weighting: Weighting = "none"
    max_parallel_instances: int | None = Field(default=None, ge=1, le=100_000)
    overflow: Literal["queue", "cancel_new", "replace"] = "queue"
    retries: int = Field(default=0, ge=0, le=100)
    retry_delay_s: float = Field(default=60, ge=0, le=86400)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    resource_group: Name = "default"
    notify: list[NotifyRule] = Field(default_factory=list)
    # An instance unfinished this long after its creation raises `sla_miss` once.
    sla_s: float | None = Field(default=None, gt=0, le=365 * 86400)
    # A waiting instance or ready node gains one priority level per `aging_s` seconds waited, so
    # sustained high-priority load cannot starve lower levels forever.
    aging_s: float | None = Field(default=None, ge=1, le=7 * 86400)
    # Ordered lane, a template resolved at admission (e.g. `${workflow.triggerMessage.key}`):
    # instances with the same value run one at a time in admission order.
    lane: str | None = Field(default=None, min_length=1, max_length=1000)
    # Backpressure: at this many waiting instances the sources feeding the workflow hold their
    # events back (Kafka pauses, the webhook answers 503, SQS leaves them queued) until the count
    # is below 80 % of it. Strict: a bound given as "50" or 50.5 is a mistake worth naming.
    max_waiting: StrictInt | None = Field(default=None, ge=1, le=10_000_000)


class Schedule(Spec):
    """When a scheduled workflow fires; `misfire` decides what happens after downtime."""

    cron: str = Field(min_length=1)
    timezone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    misfire: Literal["run_once", "run_all", "skip"] = "run_once"

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {self.timezone!r}") from None
        from shared.cron import CronError, validate_cron

        try:
            validate_cron(self.cron, self.timezone)
        except CronError as exc:
            raise ValueError(f"cron: {exc}") from None
        for field in ("start_at", "end_at"):
            value = getattr(self, field)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{field}: must carry a UTC offset")
        if self.start_at and self.end_at and self.end_at < self.start_at:
            raise ValueError("end_at: must not be before start_at")
        return self


class Dependency(Spec):
    """An upstream workflow whose cycle must have succeeded before an instance of this one runs.

    `same`: the upstream's instance for the same bizdate; `previous`: its cycle before this
    one (with `workflow: "self"`, this workflow's own previous cycle).
    """

    workflow: Name
    cycle: Literal["same", "previous"] = "same"


class WorkflowSpec(Spec):
    """A whole workflow definition; invalid specs are rejected whole."""

    name: Name
    type: Literal["scheduled", "triggered", "manual"]
    trigger: Name | None = None
    schedule: Schedule | None = None
    timezone: str | None = None
    parameters: Annotated[dict[str, JsonValue], AfterValidator(check_parameter_names)] = Field(
        default_factory=dict
    )
    policy: Policy = Field(default_factory=Policy)
    nodes: list[NodeSpec] = Field(min_length=1, max_length=MAX_NODES)
    description: str | None = None
    depends_on: list[Dependency] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _check_graph(self) -> WorkflowSpec:
        self._check_dependencies()
        if self.type == "scheduled" and self.schedule is None:
            raise ValueError("schedule: a scheduled workflow needs a schedule")
        if self.type != "scheduled" and self.schedule is not None:
            raise ValueError(f"schedule: only scheduled workflows have one (type is {self.type})")
        if self.type != "triggered" and self.trigger is not None:
            raise ValueError(f"trigger: only triggered workflows bind one (type is {self.type})")
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"timezone: unknown time zone {self.timezone!r}") from None
        names: dict[str, int] = {}
        for index, node in enumerate(self.nodes):
            if node.name in names:
                raise ValueError(f"nodes.{index}.name: duplicate node name {node.name!r}")
            names[node.name] = index
        for index, node in enumerate(self.nodes):
            for up in node.upstream:
                if up not in names:
                    raise ValueError(f"nodes.{index}.upstream: unknown node {up!r}")
                if up == node.name:
                    raise ValueError(f"nodes.{index}.upstream: node {up!r} depends on itself")
        cycle = find_cycle({n.name: n.upstream for n in self.nodes})
        if cycle:
            raise ValueError("nodes: dependency cycle " + " -> ".join(cycle))
        self._check_output_references()
        for node in self.nodes:
            check_node_code(node, self.parameters)
        return self

    def _check_dependencies(self) -> None:
        """Local checks; unknown workflows and cycles across workflows need the stored ones."""
        seen: set[tuple[str, str]] = set()
        for index, dep in enumerate(self.depends_on):
            upstream = self.name if dep.workflow == "self" else dep.workflow
            if upstream == self.name and dep.cycle == "same":
                raise ValueError(
                    f"depends_on.{index}: a workflow cannot wait for its own same cycle "
                    f"(dependency cycle {self.name} -> {self.name}); use cycle 'previous'"
                )
            if (upstream, dep.cycle) in seen:
                raise ValueError(
                    f"depends_on.{index}: {dep.workflow!r} ({dep.cycle}) is listed twice"
                )
            seen.add((upstream, dep.cycle))

    def upstream_workflows(self) -> list[tuple[str, str]]:
        """(workflow name, cycle) per dependency, `self` resolved to this workflow's name."""
        return [
            (self.name if d.workflow == "self" else d.workflow, d.cycle) for d in self.depends_on
        ]

    def _check_output_references(self) -> None:
        """`${nodes.X.outputs...}` must name an ancestor: nothing else has run before."""
        for name, value in self.parameters.items():
            if isinstance(value, str) and output_references([value]):
                raise ValueError(
                    f"parameters.{name}: node outputs can only be read in a node's own "
                    "parameters or code (a workflow parameter applies to every node)"
                )
        upstream = {n.name: n.upstream for n in self.nodes}
        for index, node in enumerate(self.nodes):
            for where, text in _placeholder_texts(node):
                problems = invalid_references(node.name, [text], upstream)
                if problems:
                    raise ValueError(f"nodes.{index}.{where}: {problems[0]}")

    @property
    def zone(self) -> str:
        """The workflow's time zone: the schedule's, else the workflow's own, else UTC."""
        if self.schedule is not None:
            return self.schedule.timezone
        return self.timezone or "UTC"


def _placeholder_texts(node: NodeBase) -> list[tuple[str, str]]:
    """The texts of a node that parameter placeholders are resolved in, each with its field."""
    texts = [(f"parameters.{k}", v) for k, v in node.parameters.items() if isinstance(v, str)]
    if isinstance(node, ShellNode | PythonNode | SqlNode):
        texts.append(("code", node.code))
    elif isinstance(node, CheckNode) and isinstance(node.check, SqlCheck):
        texts.append(("check.query", node.check.query))
    elif isinstance(node, SyncNode) and isinstance(node.sync, PostgresToS3):
        texts.append(("sync.query", node.sync.query))
    return texts


def _node_texts(node: NodeBase) -> list[tuple[str, str, str]]:
    """(field path, language, text) of everything in `node` that placeholders are bound into."""
    if isinstance(node, ShellNode):
        return [("code", "shell", node.code)]
    if isinstance(node, PythonNode):
        return [("code", "python", node.code)]
    if isinstance(node, SqlNode):
        return [("code", "sql", node.code)]
    if isinstance(node, CheckNode) and isinstance(node.check, SqlCheck):
        return [("check.query", "sql", node.check.query)]
    if isinstance(node, SyncNode) and isinstance(node.sync, PostgresToS3):
        return [("sync.query", "sql", node.sync.query)]
    return []


def check_node_code(node: NodeBase, workflow_parameters: dict[str, Any]) -> None:
    """Refuse a placeholder that a second interpreter would parse as code (`bash -c '${p}'`).

    Only placeholders the spec itself makes (its parameters and the built-ins) are known here;
    binding checks again with every parameter an attempt has.
    """
    names = {*workflow_parameters, *node.parameters, "bizdate", "cyctime"}

    def known(path: str) -> bool:
        head = re.split(r"[.\[]", path, maxsplit=1)[0]
        return head in names or head in (*BUILTIN_NAMESPACES, "nodes")

    for field, language, text in _node_texts(node):
        found = find_reparsed(text, language, known)
        if found:
            raise ValueError(f"nodes.{node.name}.{field}: {found[0].message(text)}")


def find_cycle(upstream: dict[str, list[str]]) -> list[str] | None:
    """Return one dependency cycle as a closed path (a -> b -> a), or None if acyclic."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(upstream, white)
    for start in upstream:
        if color[start] != white:
            continue
        # Iterative DFS: 400 nodes in a chain would come close to the recursion limit.
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                color[node] = grey
                path.append(node)
            ups = upstream[node]
            if i < len(ups):
                stack.append((node, i + 1))
                nxt = ups[i]
                if color[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if color[nxt] == white:
                    stack.append((nxt, 0))
            else:
                color[node] = black
                path.pop()
    return None


class WorkflowOut(Record):
    """A stored workflow with its version bookkeeping."""

    id: int
    workspace: str
    name: str
    type: str
    trigger: str | None
    current_version: int
    published_version: int | None
    frozen: bool
    created_at: datetime
    updated_at: datetime


class WorkflowVersionOut(Record):
    workflow: str
    version: int
    spec: dict[str, Any]
    created_at: datetime
    published: bool
