"""`sluice run storage-listener` and `sluice upload` as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from services.dev.servers.process import free_port
from services.dev.servers.s3 import EmbeddedS3, ensure_bucket
from tests.factories import add_trigger, add_workflow, s3_trigger, workflow
from tests.support.s3 import Pool, eventually, unique

ROOT = Path(__file__).resolve().parents[2]
SLUICE = str(Path(sys.executable).with_name("sluice"))
MINIO_PUT = (ROOT / "tests" / "fixtures" / "s3" / "minio_put.json").read_bytes()


def clean_env(**values: str) -> dict[str, str]:
    """This environment without any SLUICE_*/AWS_* variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
    # Each process serves probes on SLUICE_METRICS_PORT: a free one, never the shared default.
    env["SLUICE_METRICS_PORT"] = str(free_port())
    env.update(values)
    return env


@asynccontextmanager
async def listener_process(
    env: dict[str, str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            SLUICE,
            "run",
            "storage-listener",
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_sigterm_drains_and_exits_cleanly(pool: Pool, db_url: str, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        await add_trigger(conn, s3_trigger("files", "data"))
        await add_workflow(conn, workflow("wf", trigger="files"))
    port = free_port()
    env = clean_env(
        SLUICE_DATABASE_URL=db_url,
        SLUICE_WEBHOOK_PORT=str(port),
        SLUICE_HOST="127.0.0.1",
        SLUICE_WEBHOOK_TOKENS="t1",
        SLUICE_LOG_FORMAT="json",
    )
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "listener.log"

    async with listener_process(env, log) as process, httpx.AsyncClient() as client:

        async def ready() -> bool | None:
            try:
                return (await client.get(f"{url}/readyz")).status_code == 200 or None
            except httpx.TransportError:
                return None

        await eventually(ready)
        response = await client.post(
            f"{url}/hooks/s3", content=MINIO_PUT, headers={"Authorization": "Bearer t1"}
        )
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await process.wait()

    assert response.status_code == 200
    assert code == 0
    assert await pool.fetchval("SELECT count(*) FROM instances") == 1
    text = log.read_text()
    assert '"event": "storage_listener_stopped"' in text


async def test_bad_configuration_exits_with_one_line_naming_the_variable(db_url: str) -> None:
    env = clean_env(
        SLUICE_DATABASE_URL=db_url,
        SLUICE_WEBHOOK_PORT=str(free_port()),
        SLUICE_STORAGE_POLL_INTERVAL_S="never",
    )

    done = await asyncio.to_thread(
        subprocess.run,
        [SLUICE, "run", "storage-listener"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert lines[0].startswith("invalid configuration: SLUICE_STORAGE_POLL_INTERVAL_S: ")


async def test_upload_puts_a_file_into_the_dev_s3(
    embedded_s3: EmbeddedS3, s3_client: Any, tmp_path: Path
) -> None:
    bucket = unique("up")
    await ensure_bucket(s3_client, bucket)
    source = tmp_path / "a b.csv"
    source.write_bytes(b"id\n1\n")
    env = clean_env(SLUICE_S3_ENDPOINT=embedded_s3.endpoint)

    done = await asyncio.to_thread(
        subprocess.run,
        [SLUICE, "upload", str(source), f"s3://{bucket}/input/"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith(f"uploaded s3://{bucket}/input/a b.csv (5 bytes, etag ")
    stored = await s3_client.get_object(Bucket=bucket, Key="input/a b.csv")
    assert await stored["Body"].read() == b"id\n1\n"
    assert stored["ContentType"] == "text/csv"


async def test_upload_of_a_missing_file_fails_clearly(tmp_path: Path) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [SLUICE, "upload", str(tmp_path / "nope.csv"), "data"],
        env=clean_env(),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.decode().strip() == f"error: {tmp_path / 'nope.csv'}: no such file"
