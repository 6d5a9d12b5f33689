"""The NOTIFY channels the services wake each other with (payloads are hints, rows are the truth).

- `sluice_nodes`: nodes became ready or slots were freed (payload empty).
- `sluice_instances`: instances were queued or finished (payload empty).
- `sluice_terminate`: an instance was terminated (payload: its id); executors kill its attempts.
- `sluice_requests`: a terminate or rerun was requested (payload: the request id); an executor
  carries it out.
"""

from __future__ import annotations

from typing import Final

NODES_CHANNEL: Final = "sluice_nodes"
INSTANCES_CHANNEL: Final = "sluice_instances"
TERMINATE_CHANNEL: Final = "sluice_terminate"
REQUESTS_CHANNEL: Final = "sluice_requests"
