"""Leases: fencing of every write, the sweeper, lost-lease kills and self-fencing."""

from __future__ import annotations

import re
from typing import Any, TypeAlias
from uuid import uuid4

import asyncpg
import pytest

from services.executor.claims import ClaimedNode, claim_nodes
from services.executor.leases import renew_leases, sweep_expired
from services.executor.logs import LogChunk, write_chunks
from services.executor.operations import Finish, finish_attempts, promote_instances
from shared.operations.instances import rerun_instance, terminate_instance
from tests.factories import DEFAULT_WS, shell_node
from tests.support.executor import (
    attempts_of,
    enqueue,
    flow,
    node_states,
    running_executor,
    save,
    wait_for,
    wait_gone,
)

Pool: TypeAlias = "asyncpg.Pool[Any]"


async def claim_one(pool: Pool, executor: str) -> ClaimedNode:
    async with pool.acquire() as conn:
        await promote_instances(conn)
        [claimed] = await claim_nodes(conn, executor, lease_s=30, free=1, concurrency=1, batch=1)
    return claimed


async def expire(pool: Pool, instance_id: int) -> None:
    """Move time: the leases of the instance's nodes ran out (as if their holder had died)."""
    await pool.execute(
        """UPDATE node_instances SET lease_expires_at = now() - interval '1 second'
           WHERE instance_id = $1 AND state = 'running'""",
        instance_id,
    )


async def sweep(pool: Pool) -> set[int]:
    async with pool.acquire() as conn:
        return (await sweep_expired(conn)).accepted


async def lose_by_sweep(pool: Pool, claimed: ClaimedNode) -> None:
    await expire(pool, claimed.instance_id)
    assert await sweep(pool) == {claimed.attempt_id}
    # Another executor takes the retry.
    async with pool.acquire() as conn:
        [retry] = await claim_nodes(conn, "B", lease_s=30, free=1, concurrency=1, batch=1)
    assert retry.attempt == claimed.attempt + 1


async def lose_by_terminate(pool: Pool, claimed: ClaimedNode) -> None:
    async with pool.acquire() as conn:
        await terminate_instance(conn, DEFAULT_WS, claimed.instance_id)


async def lose_by_rerun(pool: Pool, claimed: ClaimedNode) -> None:
    await lose_by_terminate(pool, claimed)
    async with pool.acquire() as conn:
        await rerun_instance(conn, DEFAULT_WS, claimed.instance_id, "all")
        await promote_instances(conn)


async def write_finish(pool: Pool, claimed: ClaimedNode) -> bool:
    async with pool.acquire() as conn:
        result = await finish_attempts(
            conn,
            [Finish(claimed.node_id, claimed.lease_token, claimed.attempt_id, "succeeded", 0)],
        )
    return claimed.attempt_id in result.accepted


async def write_log(pool: Pool, claimed: ClaimedNode) -> bool:
    chunk = LogChunk(claimed.attempt_id, claimed.node_id, claimed.lease_token, 1, "late\n")
    async with pool.acquire() as conn:
        return claimed.attempt_id in await write_chunks(conn, [chunk])


async def write_renewal(pool: Pool, claimed: ClaimedNode) -> bool:
    async with pool.acquire() as conn:
        held = await renew_leases(conn, {claimed.node_id: claimed.lease_token}, 30)
    return claimed.node_id in held


LOSSES = {"swept": lose_by_sweep, "terminated": lose_by_terminate, "rerun": lose_by_rerun}
WRITES = {"finish": write_finish, "log": write_log, "renewal": write_renewal}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("write", list(WRITES))
async def test_writes_of_a_fenced_off_attempt_are_rejected(
    pool: Pool, loss: str, write: str
) -> None:
    version = await save(pool, flow("fence", [shell_node("a", retries=1, retry_delay_s=0)]))
    [iid] = await enqueue(pool, version)
    claimed = await claim_one(pool, "A")
    assert await WRITES["renewal"](pool, claimed)
    await LOSSES[loss](pool, claimed)
    before = await pool.fetch("SELECT * FROM node_instances WHERE instance_id = $1", iid)
    before_attempts = await attempts_of(pool, iid, "a")
    assert not await WRITES[write](pool, claimed)
    assert await pool.fetch("SELECT * FROM node_instances WHERE instance_id = $1", iid) == before
    assert await attempts_of(pool, iid, "a") == before_attempts
    assert await pool.fetchval("SELECT count(*) FROM attempt_logs") == 0


async def test_a_live_lease_is_not_swept_and_a_renewed_one_survives_a_racing_sweep(
    pool: Pool,
) -> None:
    version = await save(pool, flow("live", [shell_node("a")]))
    await enqueue(pool, version)
    claimed = await claim_one(pool, "A")
    assert await sweep(pool) == set()
    # The sweeper read the lease as expired, but its holder renewed before the sweep wrote.
    async with pool.acquire() as conn:
        late = await finish_attempts(
            conn,
            [
                Finish(
                    claimed.node_id, claimed.lease_token, claimed.attempt_id, "lost", None, "lost"
                )
            ],
            only_expired=True,
        )
    assert late.accepted == set()
    assert await write_finish(pool, claimed)


@pytest.mark.parametrize(
    ("retries", "node_state", "instance_state"),
    [(1, "ready", "running"), (0, "failed", "failed")],
)
async def test_a_lost_attempt_is_retried_within_the_retry_budget(
    pool: Pool, retries: int, node_state: str, instance_state: str
) -> None:
    nodes = [shell_node("a", retries=retries, retry_delay_s=0), shell_node("b", ["a"])]
    version = await save(pool, flow("lost", nodes))
    [iid] = await enqueue(pool, version)
    claimed = await claim_one(pool, "A")
    await expire(pool, claimed.instance_id)
    assert await sweep(pool) == {claimed.attempt_id}
    [attempt] = await attempts_of(pool, iid, "a")
    assert (attempt["state"], attempt["reason"]) == ("lost", "lost")
    states = await node_states(pool, iid)
    assert states["a"] == node_state
    assert states["b"] == ("pending" if retries else "upstream_failed")
    assert await pool.fetchval("SELECT state FROM instances WHERE id = $1", iid) == instance_state


async def test_a_never_renewed_lease_is_swept(pool: Pool) -> None:
    version = await save(pool, flow("silent", [shell_node("a", retries=1)]))
    await enqueue(pool, version)
    claimed = await claim_one(pool, "A")
    # Claimed long ago and never heartbeated since.
    await pool.execute(
        """UPDATE node_instances SET claimed_at = now() - interval '1 hour', last_heartbeat = NULL,
           lease_expires_at = now() - interval '59 minutes' WHERE id = $1""",
        claimed.node_id,
    )
    assert await sweep(pool) == {claimed.attempt_id}


async def pids_in_log(pool: Pool, iid: int) -> list[int]:
    text = await wait_for(
        pool,
        """SELECT string_agg(l.data, '' ORDER BY l.seq) FROM attempt_logs l
           JOIN attempts a ON a.id = l.attempt_id JOIN node_instances n ON n.id = a.node_instance_id
           WHERE n.instance_id = $1 HAVING string_agg(l.data, '') LIKE '%ready%'""",
        iid,
    )
    return [int(p) for p in re.findall(r"^pid (\d+)$", text, re.MULTILINE)]


SLEEPER = 'sleep 300 & echo "pid $!"; echo "pid $$"; echo ready; wait'


async def test_an_executor_kills_attempts_whose_lease_it_lost(pool: Pool, db_url: str) -> None:
    version = await save(pool, flow("stolen", [shell_node("a", code=SLEEPER)]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url, lease_s=3):
        pids = await pids_in_log(pool, iid)
        # Someone else now holds the lease (as after a sweep and a re-claim elsewhere).
        await pool.execute(
            "UPDATE node_instances SET lease_token = $2 WHERE instance_id = $1", iid, uuid4()
        )
        for pid in pids:
            await wait_gone(pid, 3.0)
    [attempt] = await attempts_of(pool, iid, "a")
    assert attempt["state"] == "running"  # it wrote nothing after losing the lease


async def test_an_executor_that_cannot_renew_kills_its_attempts(pool: Pool, db_url: str) -> None:
    version = await save(pool, flow("cut", [shell_node("a", code=SLEEPER, retries=1)]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url, lease_s=3):
        pids = await pids_in_log(pool, iid)
        async with pool.acquire() as conn, conn.transaction():
            # The executor's renewals now hang: as if the database were unreachable.
            await conn.execute("LOCK TABLE node_instances IN ACCESS EXCLUSIVE MODE")
            for pid in pids:
                await wait_gone(pid, 3.0)
            still_leased = await conn.fetchval(
                """SELECT lease_expires_at > clock_timestamp() FROM node_instances
                   WHERE instance_id = $1""",
                iid,
            )
        # It killed them before its lease ran out: nobody could have started a retry yet.
        assert still_leased
        [attempt] = await attempts_of(pool, iid, "a")
        assert attempt["state"] == "running"
        await expire(pool, iid)
        assert await wait_for(pool, "SELECT state = 'lost' FROM attempts WHERE attempt = 1")
