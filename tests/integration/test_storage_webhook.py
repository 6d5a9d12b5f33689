"""`POST /hooks/s3`: auth and rotation, 2xx only after commit, invalid bodies, health endpoints."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.storage_listener.admitter import Admitter
from services.storage_listener.health import Health
from services.storage_listener.webhook import create_app
from shared.db.pool import create_pool
from shared.models.events import AdmitResult, IncomingEvent
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.support.s3 import Pool, listener_settings, outcomes, running_listener

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "s3"
MINIO_PUT = (FIXTURES / "minio_put.json").read_bytes()


async def bind_workflow(pool: Pool, bucket: str = "data", **trigger: Any) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", bucket, **trigger))
        await add_workflow(conn, workflow("process_file", trigger="files"))


async def count(pool: Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


def basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"minio:{secret}".encode()).decode()


AUTH_CASES = [
    pytest.param("", {"Authorization": "Bearer t1"}, "", 401, id="no-token-configured"),
    pytest.param("t1", {}, "", 401, id="missing"),
    pytest.param("t1", {"Authorization": "Bearer wrong"}, "", 401, id="wrong"),
    pytest.param("t1", {"Authorization": "Bearer t1x"}, "", 401, id="longer"),
    pytest.param("t1", {"Authorization": "Bearer"}, "", 401, id="empty-bearer"),
    pytest.param("t1", {"Authorization": "t1"}, "", 401, id="no-scheme"),
    pytest.param("t1", {"Authorization": basic("t1")}, "", 401, id="basic-scheme"),
    pytest.param("t1", {"Authorization": "Bearer t1"}, "", 200, id="right"),
    pytest.param("t1", {"Authorization": "bearer t1"}, "", 200, id="scheme-case"),
    pytest.param("old,new", {"Authorization": "Bearer old"}, "", 200, id="rotation-old"),
    pytest.param("old,new", {"Authorization": "Bearer new"}, "", 200, id="rotation-new"),
    pytest.param("old, new", {"Authorization": "Bearer other"}, "", 401, id="rotation-wrong"),
    pytest.param("t1", {}, "?token=t1", 200, id="query-token"),
    pytest.param("t1", {}, "?token=t2", 401, id="query-wrong"),
    pytest.param(
        "t1", {"Authorization": "Bearer t2"}, "?token=t1", 401, id="header-wins-over-query"
    ),
]


@pytest.mark.parametrize(("tokens", "headers", "query", "status"), AUTH_CASES)
async def test_bearer_tokens_with_rotation(
    pool: Pool, db_url: str, tokens: str, headers: dict[str, str], query: str, status: int
) -> None:
    await bind_workflow(pool)
    settings = listener_settings(db_url, webhook_tokens=tokens)

    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        response = await client.post(
            f"{listener.url}/hooks/s3{query}", content=MINIO_PUT, headers=headers
        )

    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        # Nothing recorded: an unauthenticated caller cannot fill the audit trail.
        assert await count(pool, "events") == 0
        expected = "SLUICE_WEBHOOK_TOKENS is empty" if not tokens else "wrong bearer token"
        error = response.json()["error"]
        assert error["code"] == "unauthorized" and expected in error["message"]
    else:
        assert await count(pool, "events") == 1
        assert await count(pool, "instances") == 1


async def test_answers_only_after_the_instance_is_committed(pool: Pool, db_url: str) -> None:
    await bind_workflow(pool, key_pattern="input/*.csv")
    settings = listener_settings(db_url, webhook_tokens="t1")

    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        response = await client.post(
            f"{listener.url}/hooks/s3",
            content=MINIO_PUT,
            headers={"Authorization": "Bearer t1", "Content-Type": "application/json"},
        )
        # Read while the listener still runs: the rows must already be visible.
        rows = await pool.fetch("SELECT id, trigger_message FROM instances")

    assert response.status_code == 200
    body = response.json()
    assert body["events"] == 1
    assert body["invalid"] is False
    assert body["instance_ids"] == [r["id"] for r in rows]
    [row] = rows
    assert row["trigger_message"]["data"]["s3"]["object"]["key"] == "input/daily report 2024.csv"
    assert row["trigger_message"]["data"]["eventSource"] == "minio:s3"


@pytest.mark.parametrize(
    ("fixture", "bucket", "key"),
    [
        ("minio_put.json", "data", "input/daily report 2024.csv"),
        ("minio_unicode_versioned.json", "data", "input/文件 q1+q2.csv"),
        ("ceph_put.json", "raw", "input/100% done+final.csv"),
        ("aws_put_versioned.json", "analytics-landing", "exports/2024 Q1/summary+final.csv"),
        ("sns_wrapped.json", "analytics-landing", "exports/2024 Q1/summary+final.csv"),
    ],
)
async def test_store_bodies_are_admitted_with_decoded_keys(
    pool: Pool, db_url: str, fixture: str, bucket: str, key: str
) -> None:
    await bind_workflow(pool, bucket)
    settings = listener_settings(db_url, webhook_tokens="t1")

    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        response = await client.post(
            f"{listener.url}/hooks/s3",
            content=(FIXTURES / fixture).read_bytes(),
            headers={"Authorization": "Bearer t1"},
        )

    assert response.status_code == 200
    [message] = [r["trigger_message"] for r in await pool.fetch("SELECT * FROM instances")]
    assert message["data"]["s3"]["object"]["key"] == key
    assert message["subject"] == f"{bucket}/{key}"


async def test_an_aws_body_with_three_records_is_three_events(pool: Pool, db_url: str) -> None:
    await bind_workflow(pool, "analytics-landing", key_pattern="logs/*.log")
    settings = listener_settings(db_url, webhook_tokens="t1")

    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        response = await client.post(
            f"{listener.url}/hooks/s3",
            content=(FIXTURES / "aws_multi.json").read_bytes(),
            headers={"Authorization": "Bearer t1"},
        )

    assert response.status_code == 200
    assert response.json()["events"] == 3
    assert len(response.json()["event_ids"]) == 3
    keys = [
        r["trigger_message"]["data"]["s3"]["object"]["key"]
        for r in await pool.fetch("SELECT trigger_message FROM instances ORDER BY id")
    ]
    # The third record is a deletion, which the trigger (ObjectCreated:*) does not watch.
    assert keys == ["logs/app 2024-05-14.log", "logs/app 2024-05-15.log"]
    third = int(await pool.fetchval("SELECT max(id) FROM events"))
    [(outcome, detail)] = await outcomes(pool, third)
    assert outcome == "filtered"
    assert detail is not None and "ObjectRemoved:Delete" in detail


MALFORMED = [
    pytest.param(b"", "unknown", "not valid JSON", id="empty"),
    pytest.param(b"\xff\xfe garbage", "unknown", "not valid JSON", id="binary"),
    pytest.param(b"[]", "unknown", "must be a JSON object", id="array"),
    pytest.param(b'{"EventName": "s3:ObjectCreated:Put"}', "unknown", "no Records", id="no-rec"),
    pytest.param(
        b'{"EventName": "s3:ObjectCreated:Put", "Key": "data/a.csv"}',
        "data",
        "no Records",
        id="minio-key-only",
    ),
    pytest.param(
        b'{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "data"}}}]}',
        "data",
        "has no s3.object.key",
        id="no-key",
    ),
    pytest.param(
        b'{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "t", '
        b'"s3": {"bucket": {"name": "data"}, "object": {"key": "a\\u0000b"}}}]}',
        "data",
        "NUL character",
        id="nul-in-key",
    ),
    pytest.param(
        b'{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "t", '
        b'"s3": {"bucket": {"name": "data"}, "object": {"key": "\\ud800"}}}]}',
        "data",
        "surrogate",
        id="lone-surrogate",
    ),
]


@pytest.mark.parametrize(("body", "subject", "error"), MALFORMED)
async def test_malformed_bodies_are_recorded_invalid_and_answered_2xx(
    pool: Pool, db_url: str, body: bytes, subject: str, error: str
) -> None:
    await bind_workflow(pool)
    settings = listener_settings(db_url, webhook_tokens="t1")

    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        response = await client.post(
            f"{listener.url}/hooks/s3", content=body, headers={"Authorization": "Bearer t1"}
        )

    assert response.status_code == 200
    assert response.json()["invalid"] is True
    [event] = await pool.fetch("SELECT * FROM events")
    assert event["subject"] == subject
    assert event["ref"] == "webhook"
    assert error in event["error"]
    [(outcome, detail)] = await outcomes(pool, event["id"])
    assert outcome == "invalid"
    assert detail is not None and error in detail
    assert await count(pool, "instances") == 0


async def test_an_oversize_body_is_recorded_invalid(pool: Pool, db_url: str) -> None:
    await bind_workflow(pool)
    settings = listener_settings(db_url, webhook_tokens="t1", max_request_bytes=4096)
    body = MINIO_PUT.replace(b'"Records"', b'"Padding": "' + b"x" * 8000 + b'", "Records"')

    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        response = await client.post(
            f"{listener.url}/hooks/s3", content=body, headers={"Authorization": "Bearer t1"}
        )

    assert response.status_code == 200
    [event] = await pool.fetch("SELECT * FROM events")
    assert event["error"] == "body exceeds 4096 bytes"
    assert await count(pool, "instances") == 0


async def test_five_deliveries_of_one_notification_start_one_instance(
    pool: Pool, db_url: str
) -> None:
    await bind_workflow(pool)
    settings = listener_settings(db_url, webhook_tokens="t1")

    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{listener.url}/hooks/s3",
                    content=MINIO_PUT,
                    headers={"Authorization": "Bearer t1"},
                )
                for _ in range(5)
            )
        )

    assert [r.status_code for r in responses] == [200] * 5
    assert await count(pool, "instances") == 1
    kinds = sorted(r["outcome"] for r in await pool.fetch("SELECT outcome FROM event_outcomes"))
    assert kinds == ["admitted"] + ["duplicate"] * 4
    # Every delivery learns which instance the notification started.
    assert {tuple(r.json()["instance_ids"]) for r in responses if r.json()["instance_ids"]} == {
        (int(await pool.fetchval("SELECT id FROM instances")),)
    }


async def test_concurrent_requests_share_transactions_without_mixing_results(
    pool: Pool, db_url: str
) -> None:
    await bind_workflow(pool, key_pattern="input/*.csv")
    settings = listener_settings(db_url, webhook_tokens="t1")

    def body(i: int) -> bytes:
        document = json.loads(MINIO_PUT)
        document["Records"][0]["s3"]["object"]["key"] = f"input%2Ff{i}.csv"
        document["Records"][0]["s3"]["object"]["eTag"] = f"etag{i}"
        return json.dumps(document).encode()

    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{listener.url}/hooks/s3",
                    content=body(i % 40),
                    headers={"Authorization": "Bearer t1"},
                )
                for i in range(80)
            )
        )

    assert {r.status_code for r in responses} == {200}
    rows = await pool.fetch("SELECT id, trigger_message FROM instances")
    assert len(rows) == 40
    key_of = {r["id"]: r["trigger_message"]["data"]["s3"]["object"]["key"] for r in rows}
    for i, response in enumerate(responses):
        # Each response names the instance of its own key (admitted or duplicate).
        event_ids = response.json()["event_ids"]
        assert len(event_ids) == 1
        [(kind,)] = [
            (r["outcome"],)
            for r in await pool.fetch(
                "SELECT outcome FROM event_outcomes WHERE event_id = $1", event_ids[0]
            )
        ]
        assert kind in ("admitted", "duplicate")
        ids = response.json()["instance_ids"]
        if ids:
            assert key_of[ids[0]] == f"input/f{i % 40}.csv"


async def test_health_readiness_and_metrics(pool: Pool, db_url: str) -> None:
    settings = listener_settings(db_url, webhook_tokens="")

    async with running_listener(settings) as listener, httpx.AsyncClient() as client:
        healthz = await client.get(f"{listener.url}/healthz")
        readyz = await client.get(f"{listener.url}/readyz")
        await client.post(f"{listener.url}/hooks/s3", content=b"{}")
        probe = await client.head(f"{listener.url}/hooks/s3")
        metrics = await client.get(f"{listener.url}/metrics")

    assert healthz.status_code == 200
    assert readyz.status_code == 200
    ready = readyz.json()
    assert ready["status"] == "ready"
    assert ready["checks"] == {"database": "ok", "migrations": "ok"}
    assert "SLUICE_WEBHOOK_TOKENS is empty" in ready["webhook"]["detail"]
    assert probe.status_code == 200
    assert metrics.status_code == 200
    assert 'sluice_storage_webhook_requests_total{status="401"}' in metrics.text


@pytest.fixture
async def app_client(
    request: pytest.FixtureRequest, db_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The webhook app in-process (ASGI), with the admitter given by the test."""
    admitter: Admitter = request.param()
    pool = await create_pool(db_url)
    task = asyncio.create_task(admitter.run())
    app = create_app(pool=pool, admitter=admitter, tokens=["t1"], health=Health())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://hook") as client:
            yield client, pool
    finally:
        admitter.close()
        await task
        await pool.close()


class _BrokenAdmitter(Admitter):
    def __init__(self) -> None:
        super().__init__(pool=None)  # type: ignore[arg-type]

    async def submit(
        self, events: list[IncomingEvent], *, hold: bool = False
    ) -> list[list[AdmitResult]]:
        raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")


@pytest.mark.parametrize("app_client", [_BrokenAdmitter], indirect=True)
async def test_a_failed_admission_answers_503_so_the_store_retries(
    app_client: tuple[httpx.AsyncClient, Any],
) -> None:
    client, pool = app_client
    response = await client.post(
        "/hooks/s3", content=MINIO_PUT, headers={"Authorization": "Bearer t1"}
    )

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    readyz = (await client.get("/readyz")).json()
    assert "CannotConnectNowError" in readyz["webhook"]["last_error"]


async def test_readyz_fails_when_the_database_is_unreachable(db_url: str) -> None:
    pool = await create_pool(db_url)
    await pool.close()
    app = create_app(pool=pool, admitter=Admitter(pool), tokens=["t1"], health=Health())

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hook"
    ) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("unreachable")
