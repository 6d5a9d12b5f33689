"""Opening workspace connections for sql, check and sync nodes.

postgres: `config` holds `dsn` or `host`/`port`/`database`/`user` (and optionally `sslmode`),
`secrets` holds `password`. s3: `config` holds `endpoint_url`/`region`, `secrets` holds
`access_key_id`/`secret_access_key`; a node without an S3 connection uses the settings' S3.
The pure parts build keyword arguments; secrets never appear in logs or errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from shared.db import connections
from shared.db.connections import ResolvedConnection
from shared.db.pool import Executor
from shared.secret_box import SecretBox
from shared.settings import Settings

_POSTGRES_KEYS = ("host", "port", "database", "user")


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


def s3_params(resolved: ResolvedConnection | None, settings: Settings) -> dict[str, Any]:
    """aiobotocore `create_client("s3", ...)` keyword arguments (plus `addressing_style`):
    the connection's, else the settings' endpoint, region and credentials. Custom endpoints
    (MinIO, Ceph, moto) get path-style addressing unless the connection says otherwise."""
    if resolved is not None and resolved.kind != "s3":
        raise ConnectionConfigError(f"connection is of kind {resolved.kind!r}, not 's3'")
    params: dict[str, Any] = {"region_name": settings.s3_region}
    if settings.s3_endpoint:
        params["endpoint_url"] = settings.s3_endpoint
    if settings.aws_access_key_id is not None and settings.aws_secret_access_key is not None:
        params["aws_access_key_id"] = settings.aws_access_key_id.get_secret_value()
        params["aws_secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
    if resolved is not None:
        config, secrets = resolved.config, resolved.secrets
        if config.get("endpoint_url"):
            params["endpoint_url"] = str(config["endpoint_url"])
        if config.get("region"):
            params["region_name"] = str(config["region"])
        if secrets.get("access_key_id") and secrets.get("secret_access_key"):
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


@asynccontextmanager
async def postgres(
    pool: Executor,
    workspace_id: int,
    name: str,
    statement_timeout_s: float | None = None,
    *,
    box: SecretBox,
) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A workspace postgres connection, closed (or, when cancelled, terminated) afterwards."""
    resolved = await connections.resolve(pool, workspace_id, name, box)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        **postgres_params(resolved, statement_timeout_s)
    )
    try:
        if await conn.fetchval("SHOW standard_conforming_strings") != "on":
            raise ConnectionConfigError("the server did not turn standard_conforming_strings on")
        await use_text_codecs(conn)
        yield conn
    except BaseException:
        # Cancelled mid-query (timeout, terminate): drop the socket now; the server notices.
        conn.terminate()
        raise
    else:
        await conn.close(timeout=5)


@asynccontextmanager
async def s3(
    pool: Executor, workspace_id: int, name: str | None, settings: Settings
) -> AsyncIterator[Any]:
    """An S3 client for a workspace s3 connection, or for the settings' S3 when `name` is None."""
    resolved = (
        await connections.resolve(pool, workspace_id, name, settings.secret_box()) if name else None
    )
    params = s3_params(resolved, settings)
    style = params.pop("addressing_style", "auto")
    config = AioConfig(s3={"addressing_style": style})
    async with get_session().create_client("s3", config=config, **params) as client:
        yield client
