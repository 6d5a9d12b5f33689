"""A workflow's aggregated Running Status, as the console colours it.

Running wins over Queuing (something is executing even if more waits), Queuing over the last
outcome; with nothing active the latest finished instance decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

RunningStatus = Literal["running", "queuing", "success", "failed", "terminated", "none"]
LABELS: Mapping[RunningStatus, str] = {
    "running": "Running",
    "queuing": "Queuing",
    "success": "Success",
    "failed": "Failed",
    "terminated": "Terminated",
    "none": "Not run",
}


def running_status(active: Mapping[str, int], last_finished: str | None) -> RunningStatus:
    """`active`: counts of the workflow's instances per state; `last_finished`: the state of its
    newest instance that has finished, if any."""
    if active.get("running", 0) > 0:
        return "running"
    if active.get("waiting", 0) > 0:
        return "queuing"
    if last_finished == "succeeded":
        return "success"
    if last_finished == "failed":
        return "failed"
    if last_finished in ("terminated", "cancelled"):
        return "terminated"
    return "none"
