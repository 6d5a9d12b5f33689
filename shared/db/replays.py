"""Replay job rows: written by the API, claimed and carried out by the listener of the source."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from shared.db.errors import NotFound
from shared.db.pool import Executor
from shared.db.queries import load
from shared.models.events import AdmitResult
from shared.models.replays import ReplayAccepted, ReplayJob, ReplayOut, ReplayRequest, parse_bound

Q = load(__file__)
# NOTIFY channel waking the listeners when a replay is queued (payload: its source).
CHANNEL = "sluice_replays"


async def create(
    conn: Executor,
    workspace_id: int,
    trigger_id: int,
    trigger_name: str,
    source: str,
    request: ReplayRequest,
    max_events: int,
) -> ReplayAccepted:
    """Queue a replay job for the listener of `source`."""
    row = await conn.fetchrow(
        Q["insert_replay"],
        workspace_id,
        trigger_id,
        trigger_name,
        source,
        request.mode,
        request.bound_json(request.from_),
        request.bound_json(request.to),
        max_events,
    )
    assert row is not None
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, source)
    return ReplayAccepted(replay_id=row["id"], state=row["state"])


async def get(conn: Executor, workspace_id: int, replay_id: int) -> ReplayOut:
    row = await conn.fetchrow(Q["get_replay"], replay_id, workspace_id)
    if row is None:
        raise NotFound("replay", replay_id)
    return ReplayOut(**dict(row))


async def list_for(
    conn: Executor,
    workspace_id: int,
    *,
    trigger: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[ReplayOut]:
    """Newest first; `before_id` is the cursor (the last id of the previous page)."""
    rows = await conn.fetch(Q["list_replays"], workspace_id, before_id, trigger, limit)
    return [ReplayOut(**dict(r)) for r in rows]


async def claim(conn: Executor, source: str, owner: str, lease_s: float) -> ReplayJob | None:
    """The next job of `source` for `owner`: pending, or running under an expired lease."""
    row = await conn.fetchrow(Q["claim_replay"], source, owner, lease_s)
    if row is None:
        return None
    data = dict(row)
    data["range_from"] = parse_bound(data["range_from"])
    data["range_to"] = parse_bound(data["range_to"])
    return ReplayJob(**data)


def tally(results: Iterable[list[AdmitResult]]) -> Counter[str]:
    """Counts of a batch of admitted events: `read` per event, and per event its outcome for the
    replayed trigger as `admitted` (a run started or a coalescing window joined), `duplicate`,
    `filtered` or `other`. Pure."""
    counts: Counter[str] = Counter()
    for per_workspace in results:
        counts["read"] += 1
        outcomes = {o.outcome for r in per_workspace for o in r.outcomes}
        if outcomes & {"admitted", "coalesced"}:
            counts["admitted"] += 1
        elif "duplicate" in outcomes:
            counts["duplicate"] += 1
        elif outcomes == {"filtered"}:
            counts["filtered"] += 1
        else:
            counts["other"] += 1
    return counts


async def add_progress(conn: Executor, replay_id: int, owner: str, counts: Counter[str]) -> bool:
    """Add a batch's counts and renew the lease; False when the job is no longer ours."""
    status = await conn.execute(
        Q["add_progress"],
        replay_id,
        owner,
        counts["read"],
        counts["admitted"],
        counts["duplicate"],
        counts["filtered"],
        counts["other"],
    )
    return status.endswith(" 1")


async def finish(conn: Executor, replay_id: int, owner: str, *, error: str | None = None) -> None:
    await conn.execute(
        Q["finish_replay"], replay_id, owner, "failed" if error else "succeeded", error
    )


async def release(conn: Executor, replay_id: int, owner: str) -> None:
    await conn.execute(Q["release_replay"], replay_id, owner)
