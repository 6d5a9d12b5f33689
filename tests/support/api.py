"""HTTP API fixtures: a real server on a real socket over a fresh database, and clients.

tests/conftest.py registers this module as a plugin: a test asks for `api`, `api_server` or
`api_process` by name, without importing them.

`api_server` runs the application in the test's event loop with uvicorn on an ephemeral port;
`api_process` runs `sluice run api` as a child process (for end-to-end tests of the binary).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.api.app import API_PREFIX, create_app
from services.api.service import serve
from services.dev.servers.process import free_port
from shared.db import tokens as token_repo
from shared.db import workspaces as workspace_repo
from shared.db.tokens import Role
from shared.settings import load_settings
from tests.support.secrets import TEST_SECRET_KEY

Pool: TypeAlias = "asyncpg.Pool[Any]"
BOOTSTRAP_TOKEN = "slc_test_bootstrap_0123456789abcdefghijklmnopqrstuvwxyz"
ROOT = Path(__file__).resolve().parents[2]
SLUICE = str(Path(sys.executable).with_name("sluice"))
START_TIMEOUT_S = 30.0


@dataclass
class ApiServer:
    """A running API: `url` is the server root (API routes live under `url + /api/v1`)."""

    url: str
    token: str
    db_url: str
    process: asyncio.subprocess.Process | None = None
    app: FastAPI | None = None  # the application, when it runs in the test's event loop

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    def client(self, token: str | None = None, **kw: Any) -> httpx.AsyncClient:
        """A client of /api/v1 sending `token` (default: the bootstrap admin token)."""
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=30, **kw)


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def running_api(db_url: str, **overrides: Any) -> AsyncIterator[ApiServer]:
    """Serve the API in this event loop until the block exits."""
    settings = load_settings(
        database_url=db_url,
        bootstrap_token=BOOTSTRAP_TOKEN,
        host="127.0.0.1",
        drain_timeout_s=2,
        log_format="json",
        **overrides,
    )
    sock = _listening_socket()
    port = sock.getsockname()[1]
    app = create_app(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, settings, stop, sockets=[sock]))
    server = ApiServer(
        url=f"http://127.0.0.1:{port}", token=BOOTSTRAP_TOKEN, db_url=db_url, app=app
    )
    try:
        await _first_answer(server.url, task)
        yield server
    finally:
        stop.set()
        await task
        sock.close()


async def _first_answer(url: str, task: asyncio.Task[None]) -> None:
    """Wait for the in-process server: the socket already listens, so a request simply waits
    in the backlog until the lifespan has run; a server that dies instead ends the wait."""
    async with httpx.AsyncClient(timeout=START_TIMEOUT_S) as client:
        probe = asyncio.create_task(client.get(url + "/readyz"))
        done, _ = await asyncio.wait({probe, task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            probe.cancel()
            task.result()
            raise RuntimeError("API server stopped before it was ready")
        assert probe.result().status_code == 200, probe.result().text


async def wait_ready(url: str, proc: asyncio.subprocess.Process | None = None) -> None:
    """Wait until a starting child process answers /readyz with 200 (or exits)."""
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            if proc is not None and proc.returncode is not None:
                raise RuntimeError(f"the process exited with {proc.returncode}")
            try:
                if (await client.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"API at {url} not ready within {START_TIMEOUT_S}s")
            # A bounded readiness poll of a process starting up (nothing to wake on yet).
            await asyncio.sleep(0.05)


@pytest.fixture(name="api_server")
async def api_server_fixture(db_url: str) -> AsyncIterator[ApiServer]:
    async with running_api(db_url) as server:
        yield server


@pytest.fixture(name="api")
async def api_fixture(api_server: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client of /api/v1 with the bootstrap admin token of `default`."""
    async with api_server.client() as client:
        yield client


def sluice_env(db_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `sluice` child process: no inherited SLUICE_*, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update(
        SLUICE_DATABASE_URL=db_url,
        SLUICE_LOG_FORMAT="json",
        SLUICE_DRAIN_TIMEOUT_S="3",
        # The per-process probe server would bind one fixed port in every child: off (0).
        SLUICE_METRICS_PORT="0",
        PYTHONUNBUFFERED="1",
        SLUICE_SECRET_KEY=TEST_SECRET_KEY,
    )
    env.update(extra)
    return env


@asynccontextmanager
async def api_subprocess(db_url: str, **extra_env: str) -> AsyncIterator[ApiServer]:
    """`sluice run api` as a child process, stopped with SIGTERM at the end.

    Its log goes to a temporary file (a pipe nobody reads would block it), shown on failure.
    """
    port = free_port()
    env = sluice_env(
        db_url,
        SLUICE_API_PORT=str(port),
        SLUICE_HOST="127.0.0.1",
        SLUICE_BOOTSTRAP_TOKEN=BOOTSTRAP_TOKEN,
        **extra_env,
    )
    with tempfile.TemporaryFile() as log:
        proc = await asyncio.create_subprocess_exec(
            SLUICE, "run", "api", env=env, cwd=ROOT, stdout=log, stderr=log
        )
        server = ApiServer(
            url=f"http://127.0.0.1:{port}", token=BOOTSTRAP_TOKEN, db_url=db_url, process=proc
        )
        try:
            try:
                await wait_ready(server.url, proc)
            except (TimeoutError, RuntimeError):
                log.seek(0)
                raise RuntimeError(
                    f"sluice run api did not start:\n{log.read().decode()[-4000:]}"
                ) from None
            yield server
        finally:
            await stop_process(proc)


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float = 15) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `grace_s`; the exit code."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


@pytest.fixture(name="api_process")
async def api_process_fixture(db_url: str) -> AsyncIterator[ApiServer]:
    async with api_subprocess(db_url) as server:
        yield server


async def make_token(pool: Pool, workspace: str, role: Role) -> str:
    """A fresh token of `role` in `workspace` (created if missing); returns the secret."""
    try:
        ws = await workspace_repo.get(pool, workspace)
    except LookupError:
        ws = await workspace_repo.create(pool, workspace)
    _, secret = await token_repo.create(pool, ws.id, f"{role}-token", role)
    return secret


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def sluice_cli(
    server: ApiServer,
    *args: str,
    token: str | None = None,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    wait_s: float = 60,
) -> CliResult:
    """Run the real `sluice` client command against `server`."""
    settings = {
        "SLUICE_API_URL": server.url,
        "SLUICE_TOKEN": token if token is not None else server.token,
        **(env or {}),
    }
    full_env = sluice_env(server.db_url, **settings)
    proc = await asyncio.create_subprocess_exec(
        SLUICE,
        *args,
        env=full_env,
        cwd=ROOT,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(
        proc.communicate(stdin.encode() if stdin is not None else None), wait_s
    )
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def table_rows(text: str) -> list[list[str]]:
    """Split a CLI table (header first) into rows of cells."""
    return [line.split() for line in text.strip().splitlines()]


def names_in(items: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(i["name"]) for i in items]
