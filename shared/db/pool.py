"""asyncpg pool creation with JSON codecs, and small helpers every repository uses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A plain connection or one borrowed from a pool; `Executor` also admits the pool itself: a
# function taking an Executor runs single statements on it, or borrows one connection with
# `acquire()` for more.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Executor: TypeAlias = "Connection | asyncpg.Pool[Any]"


@asynccontextmanager
async def acquire(db: Executor) -> AsyncIterator[Connection]:
    """One connection for the block: borrowed from `db` if it is a pool, else `db` itself.

    The one place that tells a pool from a connection, so callers (tests hand a connection
    where a service hands its pool) need not.
    """
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# Statements that take JSON as text (encoded once, used for several columns) encode it the same.
json_text = _dumps


async def init_connection(conn: asyncpg.Connection[Any]) -> None:
    """Decode json/jsonb to Python values on every connection of the pool."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=_dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, application_name: str = "sluice"
) -> asyncpg.Pool[asyncpg.Record]:
    """Open a pool; every connection decodes JSON and names itself in pg_stat_activity."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        server_settings={"application_name": application_name},
    )
    assert pool is not None
    return pool


async def connect(dsn: str, application_name: str = "sluice") -> asyncpg.Connection[Any]:
    """One dedicated connection (LISTEN, migrations) with the same codecs as the pool."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        dsn, server_settings={"application_name": application_name}
    )
    await init_connection(conn)
    return conn


async def next_ids(conn: Connection, sequence: str, count: int) -> list[int]:
    """Reserve `count` ids up front so batch inserts can link rows without RETURNING order."""
    if count == 0:
        return []
    rows = await conn.fetch(
        "SELECT nextval($1::regclass) AS id FROM generate_series(1, $2)", sequence, count
    )
    return [int(r["id"]) for r in rows]
