"""Leases on running node attempts.

A claim writes `lease_token` and `lease_expires_at = now() + lease` on the database clock. The
holder renews every lease/3; any executor's sweeper re-queues attempts whose lease expired
(whether they ever heartbeated or not) through the same fenced path as a normal finish, with
outcome `lost`, charged against the node's retries. A holder that cannot renew for half a lease
kills its own attempts (`must_self_fence`): by the time anyone may sweep them, they are dead.
A holder that is paused or dead cannot; its attempts' fence processes kill them instead, a
margin before the lease expires (fencing.py).
"""

from __future__ import annotations

from uuid import UUID

from services.executor.operations import Finish, FinishResult, finish_attempts
from shared.db.pool import Connection, Executor
from shared.db.queries import load

Q = load(__file__)


def must_self_fence(last_renewed_at: float, now: float, lease_s: float) -> bool:
    """True when the last successful renewal (monotonic seconds, taken when it was sent) is at
    least half a lease old: the lease may expire before this executor could learn it is lost."""
    return now - last_renewed_at >= lease_s / 2


async def renew_leases(conn: Executor, held: dict[int, UUID], lease_s: float) -> set[int]:
    """Extend the leases in `held` (node id -> token); return the node ids still held.

    A node missing from the result was swept, terminated or re-run: its attempt must die
    without writing anything more.
    """
    held_now, _ = await renew_leases_detail(conn, held, lease_s)
    return held_now


async def renew_leases_detail(
    conn: Executor, held: dict[int, UUID], lease_s: float
) -> tuple[set[int], set[int]]:
    """`renew_leases`, plus the node ids whose lease this call actually extended: only those
    may move their fence deadline (a row skipped because another transaction held it is still
    ours but keeps its old expiry)."""
    if not held:
        return set(), set()
    rows = await conn.fetch(Q["renew_leases"], list(held), list(held.values()), float(lease_s))
    return {int(r["id"]) for r in rows}, {int(r["id"]) for r in rows if r["renewed"]}


async def sweep_expired(conn: Connection, limit: int = 500) -> FinishResult:
    """Re-queue (or fail, when out of retries) attempts whose lease has expired."""
    rows = await conn.fetch(Q["expired_leases"], limit)
    finishes = [
        Finish(
            node_id=int(r["node_id"]),
            lease_token=r["lease_token"],
            attempt_id=int(r["attempt_id"]),
            outcome="lost",
            reason="lost",
        )
        for r in rows
    ]
    if not finishes:
        return FinishResult()
    return await finish_attempts(conn, finishes, only_expired=True)


async def slots_in_use(conn: Executor) -> dict[str, int]:
    """Running attempts per resource group (for the slots gauge)."""
    return {str(r["resource_group"]): int(r["n"]) for r in await conn.fetch(Q["slots_in_use"])}
