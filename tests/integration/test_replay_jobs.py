"""The replay job loop on real PostgreSQL, with a stand-in for the source read: a listener that
stops hands its job back, a failing read fails the job with its reason, a queued job wakes the
loop through NOTIFY, and two loops never carry out the same job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from shared.db import replays as replay_repo
from shared.models.replays import ReplayJob, ReplayOut, ReplayRequest
from shared.replays import Carry, Feed, ReplayError, run_replays
from tests.factories import add_trigger, add_workflow, kafka_event, kafka_trigger, workflow
from tests.support.kafka_listener import Pool, eventually

BODY = {"from": {"0": 0}, "to": {"0": 3}}


async def queue(pool: Pool) -> int:
    async with pool.acquire() as conn:
        trigger_id = await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt"))
    accepted = await replay_repo.create(
        pool, 1, trigger_id, "kt", "kafka", ReplayRequest.model_validate(BODY), 10
    )
    return accepted.replay_id


@asynccontextmanager
async def loop(
    pool: Pool, carry: Carry, *, owner: str = "test", poll_s: float = 0.05, dsn: str | None = None
) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_replays(
            pool, "kafka", carry, stop, owner=owner, poll_interval_s=poll_s, lease_s=30, dsn=dsn
        )
    )
    try:
        yield stop
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


async def state_of(pool: Pool, replay_id: int, *states: str) -> ReplayOut:
    async def reached() -> ReplayOut | None:
        out = await replay_repo.get(pool, 1, replay_id)
        return out if out.state in states else None

    return await eventually(reached)


async def test_a_stopping_listener_hands_its_job_back(pool: Pool) -> None:
    replay_id = await queue(pool)
    started = asyncio.Event()

    async def never_ends(job: ReplayJob, feed: Feed) -> None:
        await feed.admit([kafka_event(topic="orders", offset=0)])
        started.set()
        await asyncio.Event().wait()

    async with loop(pool, never_ends) as stop:
        await asyncio.wait_for(started.wait(), 10)
        assert (await replay_repo.get(pool, 1, replay_id)).state == "running"
        stop.set()
    out = await replay_repo.get(pool, 1, replay_id)
    assert (out.state, out.error) == ("pending", None)
    row = await pool.fetchrow("SELECT claimed_by FROM replays WHERE id = $1", replay_id)
    assert row is not None and row["claimed_by"] is None

    # The next listener starts it over; the record admitted before is not admitted again.
    async def reads_three(job: ReplayJob, feed: Feed) -> None:
        await feed.admit([kafka_event(topic="orders", offset=o) for o in range(3)])

    async with loop(pool, reads_three):
        out = await state_of(pool, replay_id, "succeeded")
    assert (out.read, out.admitted, out.duplicate) == (3, 2, 1)


async def test_a_failing_read_fails_the_job_with_its_reason(pool: Pool) -> None:
    replay_id = await queue(pool)

    async def fails(job: ReplayJob, feed: Feed) -> None:
        raise ReplayError("topic 'orders' does not exist on the trigger's cluster")

    async with loop(pool, fails):
        out = await state_of(pool, replay_id, "failed")
    assert out.error == "topic 'orders' does not exist on the trigger's cluster"
    assert out.finished_at is not None

    replay_id = await queue_again(pool)

    async def breaks(job: ReplayJob, feed: Feed) -> None:
        raise RuntimeError("boom")

    async with loop(pool, breaks):
        out = await state_of(pool, replay_id, "failed")
    assert out.error == "RuntimeError: boom"


async def queue_again(pool: Pool) -> int:
    trigger_id = await pool.fetchval("SELECT id FROM triggers WHERE name = 'kt'")
    accepted = await replay_repo.create(
        pool, 1, trigger_id, "kt", "kafka", ReplayRequest.model_validate(BODY), 10
    )
    return accepted.replay_id


async def test_a_queued_job_wakes_the_loop_without_polling(pool: Pool, db_url: str) -> None:
    seen: list[int] = []

    async def records(job: ReplayJob, feed: Feed) -> None:
        seen.append(job.id)

    # Polling every 5 minutes: only the NOTIFY can start the job within the wait below.
    async with loop(pool, records, poll_s=300, dsn=db_url):
        await eventually(lambda: _listening(pool))
        replay_id = await queue(pool)
        await state_of(pool, replay_id, "succeeded")
    assert seen == [replay_id]


async def _listening(pool: Pool) -> bool | None:
    count = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = 'sluice-replays-listen' AND datname = current_database()"
    )
    return True if count else None


async def test_two_loops_carry_out_each_job_once(pool: Pool) -> None:
    first = await queue(pool)
    ids = [first] + [await queue_again(pool) for _ in range(5)]
    carried: list[tuple[str, int]] = []

    def carry_as(owner: str) -> Carry:
        async def carry(job: ReplayJob, feed: Feed) -> None:
            carried.append((owner, job.id))
            await feed.admit(
                [kafka_event(topic="orders", offset=100 + job.id)]  # one record per job
            )

        return carry

    async with loop(pool, carry_as("a"), owner="a"), loop(pool, carry_as("b"), owner="b"):
        for replay_id in ids:
            await state_of(pool, replay_id, "succeeded")
    assert sorted(job for _, job in carried) == ids


async def test_an_outcome_that_cannot_be_written_leaves_the_job_to_its_lease(
    pool: Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    replay_id = await queue(pool)
    calls = 0

    async def loses_the_table_once(job: ReplayJob, feed: Feed) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            # As if the database went away between the read and the final write.
            await pool.execute("ALTER TABLE replays RENAME TO replays_away")

    async with loop(pool, loses_the_table_once) as stop:
        logged = ""

        async def not_recorded() -> bool | None:
            nonlocal logged
            logged += capsys.readouterr().out
            return True if "replay_not_recorded" in logged else None

        await eventually(not_recorded)
        await pool.execute("ALTER TABLE replays_away RENAME TO replays")
        assert (await replay_repo.get(pool, 1, replay_id)).state == "running"
        # The lease runs out (backdated): the same, still running loop claims it again.
        await pool.execute(
            "UPDATE replays SET heartbeat_at = now() - interval '1 hour' WHERE id = $1", replay_id
        )
        out = await state_of(pool, replay_id, "succeeded")
        assert not stop.is_set()
    assert calls == 2
    assert out.error is None


async def test_a_replay_waits_while_its_workflow_is_at_max_waiting(
    pool: Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    async with pool.acquire() as conn:
        trigger_id = await add_trigger(conn, kafka_trigger("kt", "orders"))
        await add_workflow(conn, workflow("wf", trigger="kt", policy={"max_waiting": 2}))
    accepted = await replay_repo.create(
        pool, 1, trigger_id, "kt", "kafka", ReplayRequest.model_validate(BODY), 10
    )

    async def one_at_a_time(job: ReplayJob, feed: Feed) -> None:
        for offset in range(5):
            await feed.admit([kafka_event(topic="orders", offset=offset)])

    async with loop(pool, one_at_a_time):
        logged = ""

        async def held() -> bool | None:
            nonlocal logged
            logged += capsys.readouterr().out
            return True if "replay_held" in logged else None

        await eventually(held)
        out = await replay_repo.get(pool, 1, accepted.replay_id)
        assert (out.state, out.admitted) == ("running", 2)
        assert await pool.fetchval("SELECT count(*) FROM instances WHERE state = 'waiting'") == 2

        # Runs finish (as an executor would finish them): the replay goes on.
        async def done() -> ReplayOut | None:
            await pool.execute("UPDATE instances SET state = 'succeeded' WHERE state = 'waiting'")
            out = await replay_repo.get(pool, 1, accepted.replay_id)
            return out if out.state == "succeeded" else None

        out = await eventually(done)
    assert out.admitted == 5
    assert "replay_resumed" in logged + capsys.readouterr().out
