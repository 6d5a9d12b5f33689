"""Ordered lanes: the lane value of a new instance, from `policy.lane` (pure, no I/O).

The template is resolved like a parameter value at admission, against the instance's trigger
message, parameters and built-ins. A template that does not resolve for an event (e.g. a message
without the key) puts the instance in the lane "" of its workflow: serialized with the other such
instances rather than run in parallel with anything by mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.params.paths import MissingPath, render_value
from shared.params.resolution import (
    ParameterError,
    ResolutionInput,
    WorkflowType,
    find_placeholders,
    resolve_parameters,
)

UNRESOLVED_LANE = ""
MAX_LANE_CHARS = 1000


def lane_value(
    template: str,
    *,
    workflow_type: WorkflowType,
    workflow_name: str,
    version: int,
    instance_id: int,
    cyctime: datetime,
    timezone: str,
    workflow_params: Mapping[str, Any],
    runtime_params: Mapping[str, Any],
    trigger_message: Any,
) -> str:
    """The lane of one instance; `UNRESOLVED_LANE` when the template does not resolve."""
    try:
        resolution = resolve_parameters(
            ResolutionInput(
                workflow_type=workflow_type,
                cyctime=cyctime,
                workflow_name=workflow_name,
                instance_id=instance_id,
                version=version,
                node_name="",
                timezone=timezone,
                workflow_params=workflow_params,
                runtime_params=runtime_params,
                trigger_message=trigger_message,
            )
        )
        pieces: list[str] = []
        position = 0
        for placeholder in find_placeholders(template, resolution.resolvable):
            pieces.append(template[position : placeholder.start])
            if placeholder.default is None:
                pieces.append(render_value(resolution.lookup(placeholder.path)))
            else:
                pieces.append(resolution.resolve(placeholder.path, placeholder.default))
            position = placeholder.end
        pieces.append(template[position:])
    except (MissingPath, ParameterError):
        return UNRESOLVED_LANE
    # Bounded so a huge message field cannot bloat the lane index; lanes are compared whole.
    return "".join(pieces)[:MAX_LANE_CHARS]
