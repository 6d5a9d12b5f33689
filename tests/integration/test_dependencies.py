"""Dependencies between workflows on real PostgreSQL with a real executor: B waits for A of the
same bizdate, a failed A keeps it waiting with the reason, a rerun releases it, `previous`
self-dependencies serialize cycles, backfills of several workflows run A(d) before B(d)."""

from __future__ import annotations

from datetime import date
from itertools import pairwise
from pathlib import Path

import pytest

from services.scheduler.service import Scheduler
from shared.db import instances as instance_repo
from shared.db import workflows as workflow_repo
from shared.db.dependencies import release_missed
from shared.db.errors import Conflict, Invalid
from shared.models.backfills import BackfillRequest
from shared.operations.backfills import create_backfills
from shared.operations.instances import rerun_instance, terminate_instance
from tests.factories import DEFAULT_WS, shell_node
from tests.support.executor import running_executor, wait_instance
from tests.support.scheduler import Pool, publish, scheduled, utc

DAILY = "0 0 2 * * ?"
PUBLISHED = utc("2026-12-03T12:00")
FIRE = utc("2026-12-04T02:00:00.01")  # the 02:00 fire of 2026-12-04: bizdate 20261203


def gated(flag: Path) -> list[dict[str, object]]:
    """One node that fails until the flag file exists."""
    return [shell_node("load", code='test -e "${flag}"', parameters={"flag": str(flag)})]


async def instance_of(pool: Pool, workflow: str) -> int:
    value = await pool.fetchval(
        "SELECT i.id FROM instances i JOIN workflows w ON w.id = i.workflow_id "
        "WHERE w.name = $1 ORDER BY i.id LIMIT 1",
        workflow,
    )
    assert value is not None
    return int(value)


async def reason(pool: Pool, instance_id: int) -> str | None:
    value = await pool.fetchval("SELECT reason FROM instances WHERE id = $1", instance_id)
    return None if value is None else str(value)


async def test_b_waits_for_a_of_the_same_bizdate_and_a_rerun_releases_it(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    flag = tmp_path / "ods_ready"
    await publish(pool, scheduled("ods", DAILY, nodes=gated(flag)), at=PUBLISHED)
    await publish(pool, scheduled("dwd", DAILY, depends_on=[{"workflow": "ods"}]), at=PUBLISHED)
    await Scheduler(pool).tick(FIRE)
    a, b = await instance_of(pool, "ods"), await instance_of(pool, "dwd")
    async with pool.acquire() as conn:
        out = await instance_repo.get(conn, DEFAULT_WS, b)
    assert out.state == "waiting"
    assert await reason(pool, b) == "upstream workflow ods for 20261203 not succeeded"
    [wait] = out.waiting_for
    assert (wait.workflow, wait.cycle, wait.bizdate, wait.upstream_instance_id) == (
        "ods",
        "same",
        date(2026, 12, 3),
        a,
    )
    assert not wait.satisfied

    async with running_executor(db_url):
        assert await wait_instance(pool, a) == "failed"
        # A's failure and B's new reason are one transaction: B is still waiting, and says why.
        async with pool.acquire() as conn:
            out = await instance_repo.get(conn, DEFAULT_WS, b)
        assert out.state == "waiting"
        assert await reason(pool, b) == (
            f"upstream workflow ods for 20261203 failed (instance {a}); "
            "waiting for a successful run or rerun"
        )
        assert out.waiting_for[0].reason == (
            f"upstream workflow ods for 20261203 not succeeded (instance {a} is failed)"
        )
        flag.touch()
        async with pool.acquire() as conn:
            await rerun_instance(conn, DEFAULT_WS, a, "failed")
        assert await wait_instance(pool, a) == "succeeded"
        assert await wait_instance(pool, b) == "succeeded"
    row = await pool.fetchrow(
        "SELECT satisfied_by, satisfied_at IS NOT NULL AS closed FROM instance_dependencies "
        "WHERE instance_id = $1",
        b,
    )
    assert row is not None and (row["satisfied_by"], row["closed"]) == (a, True)
    started_b = await pool.fetchval("SELECT started_at FROM instances WHERE id = $1", b)
    finished_a = await pool.fetchval("SELECT finished_at FROM instances WHERE id = $1", a)
    assert started_b >= finished_a


async def test_terminate_and_freeze_of_the_upstream_show_on_the_dependant(pool: Pool) -> None:
    await publish(pool, scheduled("ods", DAILY), at=PUBLISHED)
    await publish(pool, scheduled("dwd", DAILY, depends_on=[{"workflow": "ods"}]), at=PUBLISHED)
    await Scheduler(pool).tick(FIRE)
    a, b = await instance_of(pool, "ods"), await instance_of(pool, "dwd")
    async with pool.acquire() as conn:
        await terminate_instance(conn, DEFAULT_WS, a)
        await workflow_repo.set_frozen(conn, DEFAULT_WS, "ods", True)
        out = await instance_repo.get(conn, DEFAULT_WS, b)
    assert out.state == "waiting"
    assert f"terminated (instance {a})" in str(await reason(pool, b))
    assert out.waiting_for[0].reason == (
        f"upstream workflow ods for 20261203 not succeeded (instance {a} is terminated); "
        "workflow ods is frozen"
    )


async def test_an_upstream_that_already_succeeded_releases_at_creation(
    pool: Pool, db_url: str
) -> None:
    await publish(pool, scheduled("ods", DAILY), at=PUBLISHED)
    await Scheduler(pool).tick(FIRE)
    a = await instance_of(pool, "ods")
    async with running_executor(db_url):
        assert await wait_instance(pool, a) == "succeeded"
        await publish(pool, scheduled("dwd", DAILY, depends_on=[{"workflow": "ods"}]), at=PUBLISHED)
        await Scheduler(pool).tick(FIRE)
        b = await instance_of(pool, "dwd")
        assert await wait_instance(pool, b) == "succeeded"
    assert (
        await pool.fetchval(
            "SELECT satisfied_by FROM instance_dependencies WHERE instance_id = $1", b
        )
        == a
    )


async def test_previous_self_dependency_serializes_cycles(pool: Pool, db_url: str) -> None:
    spec = scheduled(
        "snapshot",
        DAILY,
        nodes=[shell_node("a", code="sleep 0.2")],
        depends_on=[{"workflow": "self", "cycle": "previous"}],
    )
    await publish(pool, spec, at=PUBLISHED)
    request = BackfillRequest.model_validate(
        {"start": "20261201", "end": "20261203", "parallelism": 3}
    )
    async with pool.acquire() as conn:
        [made] = await create_backfills(conn, DEFAULT_WS, ["snapshot"], request, now=FIRE)
    assert len(made.instance_ids) == 3
    async with running_executor(db_url):
        for iid in made.instance_ids:
            assert await wait_instance(pool, iid) == "succeeded"
    rows = await pool.fetch(
        "SELECT bizdate, started_at, finished_at FROM instances WHERE id = ANY($1::bigint[]) "
        "ORDER BY bizdate",
        made.instance_ids,
    )
    assert [r["bizdate"] for r in rows] == [date(2026, 12, d) for d in (1, 2, 3)]
    for before, after in pairwise(rows):
        assert after["started_at"] >= before["finished_at"]


async def test_a_three_day_backfill_of_a_and_b_runs_a_before_b_each_day(
    pool: Pool, db_url: str
) -> None:
    # A older successful run of ods for one day must not release the backfill's dwd of that day.
    await publish(pool, scheduled("ods", DAILY, nodes=[shell_node("a", code="sleep 0.3")]))
    await publish(pool, scheduled("dwd", DAILY, depends_on=[{"workflow": "ods"}]))
    request = BackfillRequest.model_validate(
        {"start": "20261201", "end": "20261203", "parallelism": 3}
    )
    async with pool.acquire() as conn:
        # listed dependant first: the group is still created upstream first
        made = await create_backfills(conn, DEFAULT_WS, ["dwd", "ods"], request, now=FIRE)
    assert [m.workflow for m in made] == ["ods", "dwd"]
    ids = [i for m in made for i in m.instance_ids]
    async with running_executor(db_url):
        for iid in ids:
            assert await wait_instance(pool, iid) == "succeeded"
    rows = await pool.fetch(
        "SELECT w.name, i.bizdate, i.started_at, i.finished_at FROM instances i "
        "JOIN workflows w ON w.id = i.workflow_id WHERE i.id = ANY($1::bigint[])",
        ids,
    )
    by = {(r["name"], r["bizdate"]): r for r in rows}
    assert len(by) == 6
    for day in (1, 2, 3):
        d = date(2026, 12, day)
        assert by[("dwd", d)]["started_at"] >= by[("ods", d)]["finished_at"]
    # days ran in parallel: every ods day started before the first one finished
    first_end = min(r["finished_at"] for r in rows if r["name"] == "ods")
    assert all(r["started_at"] < first_end for r in rows if r["name"] == "ods")
    pinned = await pool.fetchval(
        "SELECT count(*) FROM instance_dependencies WHERE upstream_instance_id IS NOT NULL"
    )
    assert pinned == 3


async def test_validation_rejects_unknown_workflows_and_names_the_cycle(pool: Pool) -> None:
    with pytest.raises(Invalid, match=r"depends_on.0.workflow: workflow 'nope' does not exist"):
        await publish(pool, scheduled("b", DAILY, depends_on=[{"workflow": "nope"}]))
    await publish(pool, scheduled("a", DAILY))
    await publish(pool, scheduled("b", DAILY, depends_on=[{"workflow": "a"}]))
    await publish(pool, scheduled("c", DAILY, depends_on=[{"workflow": "b"}]))
    # named in the direction work flows, from any workflow on it
    cycle = r"dependency cycle (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"
    with pytest.raises(Invalid, match=cycle):
        await publish(pool, scheduled("a", DAILY, depends_on=[{"workflow": "c"}]))
    # a previous-cycle edge cannot deadlock: allowed
    await publish(pool, scheduled("a", DAILY, depends_on=[{"workflow": "c", "cycle": "previous"}]))


async def test_a_release_the_trigger_missed_is_made_by_the_fallback(
    pool: Pool, db_url: str
) -> None:
    """A dependant created while its upstream was finishing is invisible to the upstream's final
    transaction: simulated by finishing A with the release trigger switched off."""
    await publish(pool, scheduled("ods", DAILY), at=PUBLISHED)
    await publish(pool, scheduled("dwd", DAILY, depends_on=[{"workflow": "ods"}]), at=PUBLISHED)
    await Scheduler(pool).tick(FIRE)
    a, b = await instance_of(pool, "ods"), await instance_of(pool, "dwd")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE instances DISABLE TRIGGER instances_finished")
        await conn.execute("UPDATE instances SET state = 'succeeded' WHERE id = $1", a)
        await conn.execute("ALTER TABLE instances ENABLE TRIGGER instances_finished")
    assert await pool.fetchval("SELECT blocked FROM instances WHERE id = $1", b)
    async with pool.acquire() as conn:
        # dependants created before the window are not looked at
        assert await release_missed(conn, 0.0) == []
        assert await release_missed(conn, 3600.0) == [b]
        assert await release_missed(conn, 3600.0) == []
    async with running_executor(db_url):
        assert await wait_instance(pool, b) == "succeeded"
    assert await reason(pool, b) is None


async def test_an_upstream_named_in_depends_on_cannot_be_deleted(pool: Pool) -> None:
    await publish(pool, scheduled("ods", DAILY))
    await publish(pool, scheduled("dwd", DAILY, depends_on=[{"workflow": "ods"}]))
    async with pool.acquire() as conn:
        with pytest.raises(Conflict, match=r"workflow 'ods' is in depends_on of: dwd"):
            await workflow_repo.delete(conn, DEFAULT_WS, "ods")
        await workflow_repo.delete(conn, DEFAULT_WS, "dwd")
        await workflow_repo.delete(conn, DEFAULT_WS, "ods")
