"""Opening workspace connections for sql, check and sync nodes.

postgres: `config` holds `dsn` or `host`/`port`/`database`/`user` (and optionally `sslmode`),
`secrets` holds `password`. s3: `config` holds `endpoint_url`/`region`, `secrets` holds
`access_key_id`/`secret_access_key`. A node without an S3 connection fails: node code reaches S3
only with its workspace's credentials, never with the platform's (DESIGN.md 14).
The pure parts build keyword arguments; secrets never appear in logs or errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from services.executor.fence_spawner import spawn_fenced
from services.executor.fencing import FenceLink, stop_request
from shared.db import connections
from shared.db.connections import ResolvedConnection
from shared.db.pool import Executor
from shared.secret_box import SecretBox

_POSTGRES_KEYS = ("host", "port", "database", "user")
log = structlog.get_logger("sluice.executor")


class ConnectionConfigError(RuntimeError):
    """A connection that is missing, of the wrong kind, or incomplete."""


def postgres_params(
    resolved: ResolvedConnection, statement_timeout_s: float | None
) -> dict[str, Any]:
    """asyncpg.connect keyword arguments for a postgres connection."""
    if resolved.kind != "postgres":
        raise ConnectionConfigError(f"connection is of kind {resolved.kind!r}, not 'postgres'")
    config = resolved.config
    params: dict[str, Any] = {}
    if config.get("dsn"):
        params["dsn"] = str(config["dsn"])
    for key in _POSTGRES_KEYS:
        if config.get(key) is not None:
            params[key] = int(config[key]) if key == "port" else str(config[key])
    if "dsn" not in params and "host" not in params:
        raise ConnectionConfigError("a postgres connection needs config 'dsn' or 'host'")
    if config.get("sslmode"):
        params["ssl"] = str(config["sslmode"])
    if resolved.secrets.get("password"):
        params["password"] = resolved.secrets["password"]
    # Values bound into literals are escaped for standard-conforming strings: force it on, so
    # neither the server's, the database's, the role's nor the DSN's setting can change that.
    server_settings = {"application_name": "sluice-node", "standard_conforming_strings": "on"}
    if statement_timeout_s is not None:
        server_settings["statement_timeout"] = str(max(1, int(statement_timeout_s * 1000)))
    params["server_settings"] = server_settings
    return params


NO_S3_CONNECTION = (
    "no s3 connection given: set the node's s3 connection to one of the workspace's s3 "
    "connections (the platform's own S3 credentials are never used for nodes)"
)


def s3_params(resolved: ResolvedConnection, name: str = "") -> dict[str, Any]:
    """aiobotocore `create_client("s3", ...)` keyword arguments (plus `addressing_style`) of
    a workspace s3 connection. Custom endpoints (MinIO, Ceph, moto) get path-style addressing
    unless the connection says otherwise. Credentials come from the connection only."""
    if resolved.kind != "s3":
        raise ConnectionConfigError(f"connection is of kind {resolved.kind!r}, not 's3'")
    config, secrets = resolved.config, resolved.secrets
    params: dict[str, Any] = {"region_name": str(config.get("region") or "us-east-1")}
    if config.get("endpoint_url"):
        params["endpoint_url"] = str(config["endpoint_url"])
    missing = [k for k in ("access_key_id", "secret_access_key") if not secrets.get(k)]
    if missing:
        # Else the S3 client would look for credentials of its own: the host's, the pod's role.
        raise ConnectionConfigError(f"s3 connection {name!r} has no secret {' or '.join(missing)}")
    params["aws_access_key_id"] = secrets["access_key_id"]
    params["aws_secret_access_key"] = secrets["secret_access_key"]
    if config.get("addressing_style"):
        params["addressing_style"] = str(config["addressing_style"])
    if "endpoint_url" in params:
        params.setdefault("addressing_style", "path")
    return params


# Bound parameter values are strings; with text-format codecs PostgreSQL parses
# them exactly as it would a quoted literal, whatever type the placeholder's position has.
_TEXT_TYPES = (
    "int2",
    "int4",
    "int8",
    "numeric",
    "float4",
    "float8",
    "bool",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "uuid",
    "json",
    "jsonb",
    "inet",
    "cidr",
    "money",
)


async def use_text_codecs(conn: asyncpg.Connection[Any]) -> None:
    """Send and receive the common scalar types as text on this node connection."""
    for name in _TEXT_TYPES:
        await conn.set_type_codec(
            name, schema="pg_catalog", encoder=str, decoder=str, format="text"
        )


# How long stopping a node's statement on its server may take before the attempt ends anyway.
_CANCEL_WAIT_S = 10.0


async def stop_backend(params: dict[str, Any], pid: int, wait_s: float = _CANCEL_WAIT_S) -> bool:
    """Cancel the statement of server process `pid`, end its session, and wait until
    pg_stat_activity no longer shows it; True once it is gone.

    Dropping the client socket alone does not stop a statement: PostgreSQL notices a closed
    client only when it next writes to it, so a long statement would keep running beside the
    retry of its attempt. The same role may signal its own backends, so the node's connection
    settings suffice.
    """
    settings = {"application_name": "sluice-node-cancel"}
    admin_params = {k: v for k, v in params.items() if k != "server_settings"}
    async with asyncio.timeout(wait_s):
        admin: asyncpg.Connection[Any] = await asyncpg.connect(
            **admin_params, server_settings=settings
        )
        try:
            await admin.fetchval("SELECT pg_cancel_backend($1)", pid)
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            # Termination is asynchronous: the backend leaves pg_stat_activity once it exited.
            while True:
                if not await admin.fetchval("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid):
                    break
                await asyncio.sleep(0.01)
        finally:
            await admin.close(timeout=2)
    return True


def cancel_target(conn: asyncpg.Connection[Any]) -> str | None:
    """`<address> <pid> <secret>` of the connection's backend, as a statement fence needs it
    to send a cancel request; None when asyncpg does not expose it."""
    addr = getattr(conn, "_addr", None)
    protocol = getattr(conn, "_protocol", None)
    pid = getattr(protocol, "backend_pid", None)
    secret = getattr(protocol, "backend_secret", None)
    if not isinstance(pid, int) or not isinstance(secret, int):
        return None
    if isinstance(addr, str):
        address = f"unix:{addr}"
    elif isinstance(addr, tuple) and len(addr) >= 2:
        address = f"{addr[0]}:{addr[1]}"
    else:
        return None
    if any(c.isspace() for c in address):
        return None
    return f"{address} {pid} {secret}"


@asynccontextmanager
async def statement_fence(
    conn: asyncpg.Connection[Any], link: FenceLink | None
) -> AsyncIterator[None]:
    """While the body runs, a fence process (fence.py `--pg-cancel`) cancels the connection's
    statement on the server if the attempt's lease deadline passes without renewal or this
    executor dies: a paused or killed executor cannot do it itself (docs/fencing.md)."""
    target = cancel_target(conn) if link is not None else None
    if link is None or target is None:
        yield
        return
    proc = await spawn_fenced(
        ["--pg-cancel"], env={}, cwd="/", deadline=link.deadline, grace_s=0.0, output=False
    )
    assert proc.stdin is not None
    # The cancel key goes through the pipe: a command line is readable by other processes.
    proc.stdin.write(f"C {target}\n".encode())
    link.attach(proc.stdin)
    try:
        yield
    finally:
        link.detach(proc.stdin)
        stop_request(proc.stdin)
        proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 5)
        except TimeoutError:
            proc.kill()


@asynccontextmanager
async def postgres(
    pool: Executor,
    workspace_id: int,
    name: str,
    statement_timeout_s: float | None = None,
    fence: FenceLink | None = None,
    *,
    box: SecretBox,
) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A workspace postgres connection, closed afterwards. When the attempt is stopped
    (timeout, terminate, drain, lost lease) its statement is cancelled on the server and the
    session ended before the attempt is reported over; with `fence`, also when this executor
    is paused past the lease deadline or dies."""
    resolved = await connections.resolve(pool, workspace_id, name, box)
    params = postgres_params(resolved, statement_timeout_s)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(**params)
    try:
        if await conn.fetchval("SHOW standard_conforming_strings") != "on":
            raise ConnectionConfigError("the server did not turn standard_conforming_strings on")
        await use_text_codecs(conn)
        async with statement_fence(conn, fence):
            yield conn
    except BaseException:
        pid = conn.get_server_pid()
        conn.terminate()
        try:
            await asyncio.shield(stop_backend(params, pid))
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            log.warning("node_statement_not_cancelled", server_pid=pid, error=type(exc).__name__)
        raise
    else:
        await conn.close(timeout=5)


@asynccontextmanager
async def s3(
    pool: Executor,
    workspace_id: int,
    name: str | None,
    box: SecretBox,
    *,
    within_s: float | None = None,
) -> AsyncIterator[Any]:
    """An S3 client for a workspace s3 connection; None is an error (no platform fallback).

    `within_s`: one try per request, each bounded by this many seconds, so a caller on a
    deadline sees the endpoint's error rather than botocore's retries running out its time."""
    if not name:
        raise ConnectionConfigError(NO_S3_CONNECTION)
    resolved = await connections.resolve(pool, workspace_id, name, box)
    params = s3_params(resolved, name)
    style = params.pop("addressing_style", "auto")
    config = AioConfig(s3={"addressing_style": style})
    if within_s is not None:
        bound = max(within_s, 0.1)
        config = config.merge(
            AioConfig(
                connect_timeout=bound,
                read_timeout=bound,
                retries={"total_max_attempts": 1},
            )
        )
    async with get_session().create_client("s3", config=config, **params) as client:
        yield client
