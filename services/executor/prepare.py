"""What an attempt runs: the one place node code, environment and bind values are decided.

Parameters are resolved and bound into the node's code here, per
attempt: shell placeholders become environment-variable references, python placeholders string
literals, SQL placeholders bind parameters. Event data therefore reaches node code as data, never
as code (contract 6). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.executor.claims import ClaimedNode
from shared.models.workflows import (
    CheckNode,
    PostgresToS3,
    PythonNode,
    ShellNode,
    SqlCheck,
    SqlNode,
    SyncNode,
)
from shared.params.binding import BindingError
from shared.params.binding.python import bind_python
from shared.params.binding.shell import bind_shell
from shared.params.binding.sql import bind_sql
from shared.params.dates import DateExpressionError
from shared.params.paths import MissingPath
from shared.params.resolution import ParameterError, Resolution, ResolutionInput, resolve_parameters

AnyNode = ShellNode | PythonNode | SqlNode | CheckNode | SyncNode
TRIGGER_MESSAGE_VAR = "SLUICE_TRIGGER_MESSAGE_FILE"
# One environment entry may hold at most 128 KiB on Linux; larger values travel in files.
_MAX_ENV_VALUE = 64 * 1024
_SECRET_NAME = re.compile(r"pass(word)?|secret|token|credential|api[_-]?key|private", re.I)
REDACTED = "***"


class PrepareError(ValueError):
    """The attempt cannot run: a parameter or placeholder does not resolve, or cannot be bound."""


@dataclass(frozen=True)
class WorkflowContext:
    """What the attempt needs from its workflow version besides the node."""

    parameters: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"


@dataclass(frozen=True)
class Prepared:
    """Bound node code and what the runner must provide with it.

    `env`: variables added to the node's environment. `files`: variable name -> content; the
    runner writes each content to a file in the attempt's working directory and sets the variable
    to its path. `args`: bind values for `$1`, `$2`, ... of SQL code. `parameters`: what the
    attempt records as the parameters it ran with (secrets redacted).
    """

    code: str
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    parameters: dict[str, Any] | None = None


def node_code(node: AnyNode) -> str:
    """The text of a node that binding applies to (empty for nodes without any)."""
    if isinstance(node, ShellNode | PythonNode | SqlNode):
        return node.code
    if isinstance(node, CheckNode) and isinstance(node.check, SqlCheck):
        return node.check.query
    if isinstance(node, SyncNode) and isinstance(node.sync, PostgresToS3):
        return node.sync.query
    return ""


def env_name(parameter: str) -> str:
    """`SLUICE_PARAM_<NAME>`: upper case, `-` becomes `_`."""
    return "SLUICE_PARAM_" + parameter.upper().replace("-", "_")


def redact(values: dict[str, str]) -> dict[str, str]:
    """Parameter values as recorded and shown: names that look secret are masked."""
    return {k: REDACTED if _SECRET_NAME.search(k) else v for k, v in values.items()}


def resolve(
    node: AnyNode,
    instance: ClaimedNode,
    context: WorkflowContext,
    outputs: Mapping[str, Mapping[str, Any]] | None = None,
    trigger_messages: list[Any] | None = None,
) -> Resolution:
    """Resolve every parameter and built-in of this attempt (`outputs`: the ancestors';
    `trigger_messages`: a coalesced instance's messages)."""
    workflow_type = instance.workflow_type
    inp = ResolutionInput(
        workflow_type=workflow_type,  # type: ignore[arg-type]
        cyctime=instance.cyctime,
        workflow_name=instance.workflow,
        instance_id=instance.instance_id,
        version=instance.version,
        node_name=node.name,
        timezone=context.timezone,
        bizdate=instance.bizdate,
        workspace_params=instance.workspace_parameters,
        workflow_params=context.parameters,
        node_params=node.parameters,
        runtime_params=instance.parameters,
        trigger_message=instance.trigger_message,
        trigger_messages=trigger_messages,
        node_outputs=outputs or {},
    )
    return resolve_parameters(inp)


def prepare(
    node: AnyNode,
    instance: ClaimedNode,
    attempt: int,
    context: WorkflowContext | None = None,
    outputs: Mapping[str, Mapping[str, Any]] | None = None,
    trigger_messages: list[Any] | None = None,
) -> Prepared:
    """The bound code, environment and files of one attempt of `node` in `instance`;
    `outputs` maps each ancestor to its outputs (`${nodes.<node>.outputs...}`),
    `trigger_messages` is `${workflow.triggerMessages}` of a coalesced instance.

    Raises PrepareError naming the parameter or path that does not resolve.
    """
    context = context or WorkflowContext()
    env = {
        "SLUICE_INSTANCE_ID": str(instance.instance_id),
        "SLUICE_WORKFLOW": instance.workflow,
        "SLUICE_NODE_NAME": node.name,
        "SLUICE_ATTEMPT": str(attempt),
    }
    files = {TRIGGER_MESSAGE_VAR: json.dumps(instance.trigger_message, ensure_ascii=False)}
    try:
        resolution = resolve(node, instance, context, outputs, trigger_messages)
        for name, value in resolution.values.items():
            if len(value) > _MAX_ENV_VALUE or "\x00" in value:
                files[env_name(name) + "_FILE"] = value
            else:
                env[env_name(name)] = value
        code = node_code(node)
        args: list[str] = []
        if isinstance(node, ShellNode):
            shell = bind_shell(code, resolution)
            code = shell.code
            env.update(shell.env)
            files.update(shell.files)
        elif isinstance(node, PythonNode):
            code = bind_python(code, resolution)
        elif code:
            sql = bind_sql(code, resolution)
            code, args = sql.query, list(sql.args)
    except (MissingPath, ParameterError, BindingError, DateExpressionError) as exc:
        raise PrepareError(str(exc)) from None
    return Prepared(
        code=code, env=env, files=files, args=args, parameters=redact(resolution.values)
    )
