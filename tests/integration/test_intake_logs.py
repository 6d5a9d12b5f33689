"""The intake's log line names a few outcomes, however many triggers watch the event's source."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
from structlog.testing import capture_logs

from shared import intake
from tests.factories import add_trigger, add_workflow, s3_event, s3_trigger, workflow

Pool: TypeAlias = "asyncpg.Pool[Any]"


async def test_an_event_with_many_candidates_logs_a_few_and_the_counts(pool: Pool) -> None:
    async with pool.acquire() as conn:
        for i in range(12):
            await add_trigger(conn, s3_trigger(f"t{i:02}", "data", key_pattern=f"other{i}/*"))
        await add_trigger(conn, s3_trigger("hit", "data", key_pattern="input/*.csv"))
        await add_workflow(conn, workflow("wf", trigger="hit"))
    with capture_logs() as logs:
        [result] = await intake.admit(pool, s3_event(key="input/a.csv"))
    assert len(result.outcomes) == 13
    [line] = [entry for entry in logs if entry["event"] == "event_admitted"]
    assert len(line["outcomes"]) == intake.LOGGED_OUTCOMES
    assert line["outcomes"][0] == "hit/-:admitted"
    assert "hit" in line["trigger"]
    assert line["outcome_counts"] == {"admitted": 1, "filtered": 12}
    assert len(line["instance_ids"]) == 1


async def test_an_event_with_few_outcomes_logs_them_all(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("hit", "data", key_pattern="input/*.csv"))
        await add_trigger(conn, s3_trigger("miss", "data", key_pattern="other/*"))
        await add_workflow(conn, workflow("wf", trigger="hit"))
    with capture_logs() as logs:
        await intake.admit(pool, s3_event(key="input/a.csv"))
    [line] = [entry for entry in logs if entry["event"] == "event_admitted"]
    assert sorted(line["outcomes"]) == ["hit/-:admitted", "miss/-:filtered"]
    assert "outcome_counts" not in line
