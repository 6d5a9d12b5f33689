"""check (s3_object) and sync nodes against a real S3 endpoint (moto) and PostgreSQL."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import pytest

from shared.db import connections
from shared.db.connections import ConnectionSpec
from shared.embedded.process import free_port
from shared.embedded.s3 import EmbeddedS3, ensure_bucket
from shared.operations.logs import read_log
from tests.factories import DEFAULT_WS
from tests.support.executor import enqueue, flow, running_executor, save, wait_instance
from tests.support.s3 import embedded_s3_fixture, s3_client_fixture, unique  # noqa: F401
from tests.support.secrets import suite_box

Pool: TypeAlias = "asyncpg.Pool[Any]"


async def add_connections(pool: Pool, db_url: str, s3: EmbeddedS3) -> None:
    async with pool.acquire() as conn:
        await connections.upsert(
            conn,
            DEFAULT_WS,
            ConnectionSpec(name="db", kind="postgres", config={"dsn": db_url}),
            suite_box(),
        )
        await connections.upsert(
            conn,
            DEFAULT_WS,
            ConnectionSpec(
                name="store",
                kind="s3",
                config={"endpoint_url": s3.endpoint, "region": s3.region},
                secrets={"access_key_id": s3.access_key, "secret_access_key": s3.secret_key},
            ),
            suite_box(),
        )


async def log_text(pool: Pool, instance_id: int, node: str) -> str:
    async with pool.acquire() as conn:
        chunks, _ = await read_log(conn, DEFAULT_WS, instance_id, node, None)
    return "".join(text for _, text in chunks)


@pytest.mark.parametrize(
    ("connection", "key", "final"),
    [
        ("store", "in/present.csv", "succeeded"),
        # No connection: no fallback to the platform's own S3 credentials.
        (None, "in/present.csv", "failed"),
        ("store", "in/absent.csv", "failed"),
    ],
)
async def test_s3_object_check(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    s3_client: Any,
    connection: str | None,
    key: str,
    final: str,
) -> None:
    await add_connections(pool, db_url, embedded_s3)
    bucket = unique("check")
    await ensure_bucket(s3_client, bucket)
    await s3_client.put_object(Bucket=bucket, Key="in/present.csv", Body=b"a\n")
    check = {"kind": "s3_object", "bucket": bucket, "key": key, "connection": connection}
    node = {"name": "c", "type": "check", "check": check, "interval_s": 0.1, "timeout_s": 1}
    version = await save(pool, flow("s3check", [node]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url, settings=embedded_s3.settings_overrides()):
        assert await wait_instance(pool, iid) == final
    last = (await log_text(pool, iid, "c")).splitlines()[-1]
    if connection is None:
        assert last.startswith("[sluice] error: ConnectionConfigError: no s3 connection given")
    else:
        assert last == (
            "[sluice] probe 1: condition met"
            if final == "succeeded"
            else "[sluice] timed out after 1s; the condition did not hold in time"
        )


async def test_s3_object_check_names_an_unreachable_endpoint(pool: Pool, db_url: str) -> None:
    port = free_port()  # nothing listens there: every probe is refused at once
    async with pool.acquire() as conn:
        await connections.upsert(
            conn,
            DEFAULT_WS,
            ConnectionSpec(
                name="down",
                kind="s3",
                config={"endpoint_url": f"http://127.0.0.1:{port}"},
                secrets={"access_key_id": "k", "secret_access_key": "s"},
            ),
            suite_box(),
        )
    check = {"kind": "s3_object", "bucket": "b", "key": "k", "connection": "down"}
    node = {"name": "c", "type": "check", "check": check, "interval_s": 0.2, "timeout_s": 2}
    version = await save(pool, flow("s3down", [node]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    lines = (await log_text(pool, iid, "c")).splitlines()
    # botocore's retries would outlast the timeout; one try per probe shows the endpoint's error.
    assert lines[0].startswith("[sluice] probe 1: unreachable (EndpointConnectionError: ")
    assert f"127.0.0.1:{port}" in lines[0]
    assert len([line for line in lines if "unreachable" in line]) >= 2
    assert lines[-1] == "[sluice] timed out after 2s; the condition did not hold in time"


async def test_sync_round_trip_between_s3_and_postgres(
    pool: Pool,
    db_url: str,
    embedded_s3: EmbeddedS3,
    s3_client: Any,
) -> None:
    await add_connections(pool, db_url, embedded_s3)
    bucket = unique("sync")
    await ensure_bucket(s3_client, bucket)
    csv = 'id,name\n1,ann\n2,"b, with comma"\n3,ü\n'
    await s3_client.put_object(Bucket=bucket, Key="in/users.csv", Body=csv.encode())
    await pool.execute('CREATE SCHEMA raw; CREATE TABLE raw."Users" (id int, name text)')
    await pool.execute("INSERT INTO raw.\"Users\" VALUES (99, 'stale')")
    nodes = [
        {
            "name": "load",
            "type": "sync",
            "sync": {
                "kind": "s3_to_postgres",
                "s3_connection": "store",
                "bucket": bucket,
                "key": "in/users.csv",
                "connection": "db",
                "table": "raw.Users",
                "truncate": True,
            },
        },
        {
            "name": "unload",
            "type": "sync",
            "upstream": ["load"],
            "sync": {
                "kind": "postgres_to_s3",
                "connection": "db",
                "s3_connection": "store",
                "query": 'SELECT id, upper(name) AS name FROM raw."Users" ORDER BY id',
                "bucket": bucket,
                "key": "out/users.csv",
            },
        },
    ]
    version = await save(pool, flow("sync", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url, settings=embedded_s3.settings_overrides()):
        assert await wait_instance(pool, iid) == "succeeded"
    rows = await pool.fetch('SELECT id, name FROM raw."Users" ORDER BY id')
    assert [tuple(r) for r in rows] == [(1, "ann"), (2, "b, with comma"), (3, "ü")]
    response = await s3_client.get_object(Bucket=bucket, Key="out/users.csv")
    async with response["Body"] as body:
        assert (await body.read()).decode() == 'id,name\n1,ANN\n2,"B, WITH COMMA"\n3,Ü\n'
    assert "COPY 3 into raw.Users" in await log_text(pool, iid, "load")


async def test_a_csv_load_error_names_the_line(
    pool: Pool, db_url: str, embedded_s3: EmbeddedS3, s3_client: Any
) -> None:
    await add_connections(pool, db_url, embedded_s3)
    bucket = unique("badcsv")
    await ensure_bucket(s3_client, bucket)
    await s3_client.put_object(Bucket=bucket, Key="in.csv", Body=b"id\n1\n2\nthree\n")
    await pool.execute("CREATE TABLE numbers (id int)")
    sync = {
        "kind": "s3_to_postgres",
        "s3_connection": "store",
        "bucket": bucket,
        "key": "in.csv",
        "connection": "db",
        "table": "numbers",
    }
    version = await save(pool, flow("badcsv", [{"name": "load", "type": "sync", "sync": sync}]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    text = await log_text(pool, iid, "load")
    # Line 4 of the file (the header is line 1), as PostgreSQL's CONTEXT says.
    assert f"load of s3://{bucket}/in.csv failed: COPY numbers, line 4, column id" in text
    assert 'invalid input syntax for type integer: "three"' in text
