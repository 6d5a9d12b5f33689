"""Reading an attempt's log back, while it runs or after, as the API, CLI and console show it.

The executor writes the chunks (fenced by the attempt's lease); readers page through them by
sequence number and learn when the log is complete.
"""

from __future__ import annotations

from shared.db.errors import NotFound
from shared.db.pool import Executor
from shared.db.queries import load
from shared.models.instances import FINAL_NODE_STATES

Q = load(__file__)


async def read_log(
    conn: Executor,
    ws_id: int,
    instance_id: int,
    node_name: str,
    attempt: int | None,
    after_seq: int = 0,
    *,
    limit: int = 1000,
) -> tuple[list[tuple[int, str]], bool]:
    """Chunks of one attempt's log after `after_seq`, and whether the log is complete.

    `attempt=None` reads the latest attempt. `finished` is true once the attempt has ended and
    every chunk up to its last has been returned (a follower can stop); a node that never ran and
    never will (e.g. `upstream_failed`) is finished with no chunks. Raises NotFound naming the
    instance, node or attempt that does not exist in this workspace.
    """
    target = await conn.fetchrow(Q["log_target"], instance_id, ws_id, node_name, attempt)
    if target is None:
        raise NotFound("instance", instance_id)
    if target["node_id"] is None:
        raise NotFound("node", node_name)
    if target["attempt_id"] is None:
        if attempt is not None:
            raise NotFound("attempt", attempt)
        return [], target["node_state"] in FINAL_NODE_STATES
    # The state is read before the chunks: once it is final, every chunk is already committed
    # (the last ones are written in the same transaction that ends the attempt).
    ended = target["attempt_state"] != "running"
    rows = await conn.fetch(Q["log_chunks"], target["attempt_id"], after_seq, limit + 1)
    chunks = [(int(r["seq"]), str(r["data"])) for r in rows[:limit]]
    return chunks, ended and len(rows) <= limit
