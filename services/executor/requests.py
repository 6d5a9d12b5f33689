"""Carrying out terminate and rerun requests (contract 4: only the executor changes attempt state).

The API records a request (`shared.operations.requests`) and NOTIFYs `sluice_requests`; the
executor's requests loop wakes on it (or polls), takes pending requests one at a time with
`FOR UPDATE SKIP LOCKED` so that one executor carries each out, applies it and writes the result
on the row in the same transaction: `done`, or `failed` with the reason (the instance ended in
the meantime, nothing to rerun). A terminate NOTIFYs `sluice_terminate`, on which every executor
kills the instance's running attempts.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from shared.db.errors import Conflict, Invalid, NotFound
from shared.db.pool import Connection
from shared.db.queries import load
from shared.operations.instances import rerun_instance, terminate_instance

Q = load(__file__)
log = structlog.get_logger("sluice.executor")


@dataclass(frozen=True)
class Outcome:
    """What became of one request."""

    request_id: int
    instance_id: int
    action: str
    state: str
    reason: str | None


async def carry_out_one(conn: Connection) -> Outcome | None:
    """Carry out the oldest pending request nobody else holds; None when there is none."""
    async with conn.transaction():
        row = await conn.fetchrow(Q["next_request"])
        if row is None:
            return None
        ws_id, instance_id = int(row["workspace_id"]), int(row["instance_id"])
        action = str(row["action"])
        state, reason = "done", None
        try:
            # A savepoint: a refused operation leaves nothing behind but the failed request.
            async with conn.transaction():
                if action == "terminate":
                    await terminate_instance(conn, ws_id, instance_id)
                else:
                    await rerun_instance(conn, ws_id, instance_id, str(row["mode"]))
        except (Conflict, NotFound, Invalid) as exc:
            state, reason = "failed", str(exc)
        await conn.execute(Q["finish_request"], row["id"], state, reason)
    outcome = Outcome(int(row["id"]), instance_id, action, state, reason)
    log.info(
        "instance_request",
        request_id=outcome.request_id,
        instance_id=instance_id,
        action=action,
        state=state,
        reason=reason,
    )
    return outcome


async def carry_out(conn: Connection, limit: int = 100) -> list[Outcome]:
    """Carry out pending requests, each in its own transaction, at most `limit` of them."""
    done: list[Outcome] = []
    while len(done) < limit:
        outcome = await carry_out_one(conn)
        if outcome is None:
            break
        done.append(outcome)
    return done
