"""`examples/check_sync` as `sluice dev` loads it, with the connections `sluice dev` makes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from services.dev.examples import ensure_examples_connection, ensure_examples_s3, read_specs
from services.dev.servers.postgres import with_database
from services.dev.servers.s3 import EmbeddedS3
from shared.db import workflows as workflow_repo
from shared.models.workflows import WorkflowSpec
from tests.factories import DEFAULT_WS
from tests.support.executor import enqueue, running_executor, wait_instance
from tests.support.secrets import suite_box

Pool: TypeAlias = "asyncpg.Pool[Any]"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "check_sync"


@pytest.fixture(name="examples_db")
async def examples_db_fixture(pg_admin_dsn: str) -> AsyncIterator[str]:
    yield with_database(pg_admin_dsn, "sluice_examples")
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute("DROP DATABASE IF EXISTS sluice_examples WITH (FORCE)")
    finally:
        await admin.close()


async def test_the_example_round_trips_a_table_through_s3(
    pool: Pool, db_url: str, examples_db: str, embedded_s3: EmbeddedS3
) -> None:
    async with pool.acquire() as conn:
        await ensure_examples_connection(conn, db_url, suite_box())
        await ensure_examples_s3(conn, embedded_s3, suite_box())
        await ensure_examples_s3(conn, embedded_s3, suite_box())  # a second `sluice dev` start
        [doc] = read_specs(EXAMPLE)
        doc.pop("__file__")
        saved = await workflow_repo.save(
            conn, DEFAULT_WS, WorkflowSpec.model_validate(doc), publish=True
        )
        version = await workflow_repo.load_version(conn, saved.workflow.id, saved.version)
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"
    examples = await asyncpg.connect(examples_db)
    try:
        rows = await examples.fetch("SELECT id, name FROM example_users_copy ORDER BY id")
    finally:
        await examples.close()
    assert [tuple(r) for r in rows] == [(1, "ann"), (2, "bob"), (3, "b, with a comma")]
    async with embedded_s3.client("s3") as s3:
        head = await s3.head_object(Bucket="examples", Key="users/users.csv")
    assert head["ContentLength"] > 0
