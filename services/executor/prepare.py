"""What an attempt runs: the one place node code, environment and bind values are decided.

Parameter resolution and binding (DESIGN 6) plug in here: `prepare` receives the node spec, the
claimed instance data and the attempt number, and returns the code to run with its environment,
files and SQL bind values. Until binding lands, code runs as written. Pure: no I/O.
"""

from __future__ import annotations

import json
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

AnyNode = ShellNode | PythonNode | SqlNode | CheckNode | SyncNode
TRIGGER_MESSAGE_VAR = "SLUICE_TRIGGER_MESSAGE_FILE"


@dataclass(frozen=True)
class Prepared:
    """Bound node code and what the runner must provide with it.

    `env`: variables added to the node's environment. `files`: variable name -> content; the
    runner writes each content to a file in the attempt's working directory and sets the variable
    to its path. `args`: bind values for `$1`, `$2`, ... of SQL code. `parameters`: what the
    attempt records as the parameters it ran with.
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


def prepare(node: AnyNode, instance: ClaimedNode, attempt: int) -> Prepared:
    """The code, environment and files of one attempt of `node` in `instance`."""
    env = {
        "SLUICE_INSTANCE_ID": str(instance.instance_id),
        "SLUICE_WORKFLOW": instance.workflow,
        "SLUICE_NODE_NAME": node.name,
        "SLUICE_ATTEMPT": str(attempt),
    }
    message = json.dumps(instance.trigger_message, ensure_ascii=False)
    return Prepared(code=node_code(node), env=env, files={TRIGGER_MESSAGE_VAR: message})
