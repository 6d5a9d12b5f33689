"""`examples/node_outputs` as `sluice dev` loads it: shell -> python -> sql -> shell, for real."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from services.dev import ensure_examples_connection, read_specs
from shared.db import workflows as workflow_repo
from shared.embedded.postgres import with_database
from shared.models.workflows import WorkflowSpec
from shared.operations.logs import read_log
from tests.factories import DEFAULT_WS
from tests.support.executor import attempts_of, enqueue, running_executor, wait_instance
from tests.support.secrets import suite_box

Pool: TypeAlias = "asyncpg.Pool[Any]"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node_outputs"


@pytest.fixture(name="examples_db")
async def examples_db_fixture(pg_admin_dsn: str) -> AsyncIterator[str]:
    """The examples' own database, as `sluice dev` makes it; dropped afterwards."""
    yield with_database(pg_admin_dsn, "sluice_examples")
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute("DROP DATABASE IF EXISTS sluice_examples WITH (FORCE)")
    finally:
        await admin.close()


async def test_the_example_passes_a_computed_value_through_three_node_types(
    pool: Pool, db_url: str, examples_db: str
) -> None:
    async with pool.acquire() as conn:
        await ensure_examples_connection(conn, db_url, suite_box())
        await ensure_examples_connection(conn, db_url, suite_box())  # a second `sluice dev` start
        [doc] = read_specs(EXAMPLE)
        doc.pop("__file__")
        saved = await workflow_repo.save(
            conn, DEFAULT_WS, WorkflowSpec.model_validate(doc), publish=True
        )
        version = await workflow_repo.load_version(conn, saved.workflow.id, saved.version)
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"
    [count] = await attempts_of(pool, iid, "count_words")
    assert count["outputs"] == {"words": 9, "day": "20261120"}
    [score] = await attempts_of(pool, iid, "score")
    assert score["outputs"] == {"score": 90, "label": "20261120: 9 words"}
    [store] = await attempts_of(pool, iid, "store")
    assert store["outputs"]["score"] == 90 and store["outputs"]["label"] == "20261120: 9 words"
    row_id = store["outputs"]["id"]
    examples = await asyncpg.connect(with_database(db_url, "sluice_examples"))
    try:
        row = await examples.fetchrow("SELECT * FROM example_scores WHERE id = $1", row_id)
    finally:
        await examples.close()
    assert row is not None and (row["words"], row["score"]) == (9, 90)
    async with pool.acquire() as conn:
        chunks, _ = await read_log(conn, DEFAULT_WS, iid, "report", None)
    text = "".join(t for _, t in chunks)
    assert f"row {row_id} stored: 20261120: 9 words scored 90" in text
