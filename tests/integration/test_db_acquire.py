"""`acquire()`: one connection for a block, whether the caller holds a pool or a connection."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from shared.db.pool import acquire, connect, create_pool


async def test_a_pool_lends_a_connection_for_the_block_and_takes_it_back(
    pool: asyncpg.Pool[Any],
) -> None:
    async with acquire(pool) as conn:
        # The same session throughout the block: a transaction spans several statements.
        async with conn.transaction():
            first = await conn.fetchval("SELECT pg_backend_pid()")
            second = await conn.fetchval("SELECT pg_backend_pid()")
        assert first == second
        assert pool.get_idle_size() < pool.get_size()
    assert pool.get_idle_size() == pool.get_size()


async def test_a_connection_is_used_as_it_is(db_url: str) -> None:
    conn = await connect(db_url)
    try:
        mine = await conn.fetchval("SELECT pg_backend_pid()")
        async with acquire(conn) as lent:
            assert lent is conn
            assert await lent.fetchval("SELECT pg_backend_pid()") == mine
        # Left open for its owner: acquire() never closes what it did not open.
        assert not conn.is_closed()
        # JSON codecs of connect() still apply.
        assert await conn.fetchval("SELECT '{\"a\": 1}'::jsonb") == {"a": 1}
    finally:
        await conn.close()


async def test_a_failing_block_still_returns_the_pool_connection(db_url: str) -> None:
    pool = await create_pool(db_url, min_size=1, max_size=2)
    try:
        for _ in range(4):
            with pytest.raises(asyncpg.DivisionByZeroError):
                async with acquire(pool) as conn:
                    await conn.execute("SELECT 1/0")
        # Had each failure kept its connection, this would wait for one forever.
        async with asyncio.timeout(5), acquire(pool) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert pool.get_idle_size() == pool.get_size()
    finally:
        await pool.close()
