"""Asking for a terminate or rerun: the API records the request, an executor carries it out.

Contract 4 (only the executor changes attempt state) holds for O&M too: `request` validates what
it can see now (the instance exists in this workspace, is active for terminate, has ended for
rerun), records the request with who asked, and NOTIFYs `sluice_requests`; an executor carries it
out (`services/executor/requests.py`) and writes the result on the row. A duplicate while one is
pending gets the pending request back.
"""

from __future__ import annotations

from typing import Literal

from shared.db.channels import REQUESTS_CHANNEL
from shared.db.errors import Conflict, NotFound
from shared.db.pool import Connection, Executor
from shared.db.queries import load
from shared.models.instances import FINAL_INSTANCE_STATES, InstanceRequestOut, RequestAction

Q = load(__file__)


async def request(
    conn: Connection,
    workspace_id: int,
    instance_id: int,
    action: RequestAction,
    *,
    mode: Literal["all", "failed"] | None = None,
    token_id: int | None = None,
) -> InstanceRequestOut:
    """Record a terminate or rerun request (or find the pending one) and wake the executors.

    Raises NotFound when the instance is not in this workspace, Conflict when terminating an
    instance that has ended or rerunning one that has not.
    """
    async with conn.transaction():
        state = await conn.fetchval(Q["instance_state"], instance_id, workspace_id)
        if state is None:
            raise NotFound("instance", instance_id)
        if action == "terminate" and state in FINAL_INSTANCE_STATES:
            raise Conflict(f"instance {instance_id} has already ended ({state})")
        if action == "rerun" and state not in FINAL_INSTANCE_STATES:
            raise Conflict(f"instance {instance_id} is still {state}")
        stored_mode = (mode or "all") if action == "rerun" else None
        request_id = None
        # Twice: the pending request this one collided with may end before it is read back.
        for _ in range(2):
            request_id = await conn.fetchval(
                Q["insert_request"],
                workspace_id,
                instance_id,
                action,
                stored_mode,
                token_id,
                REQUESTS_CHANNEL,
            )
            if request_id is None:
                request_id = await conn.fetchval(Q["pending_request"], instance_id, action)
            if request_id is not None:
                break
        if request_id is None:
            raise Conflict(f"a {action} of instance {instance_id} just finished; ask again")
        return await get(conn, workspace_id, int(request_id))


async def get(
    conn: Executor, workspace_id: int, request_id: int, *, instance_id: int | None = None
) -> InstanceRequestOut:
    """A request of this workspace (and of `instance_id` if given); NotFound otherwise."""
    row = await conn.fetchrow(Q["get_request"], request_id, workspace_id, instance_id)
    if row is None:
        raise NotFound("request", request_id)
    return InstanceRequestOut(**dict(row))
