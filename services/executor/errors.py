"""Database errors the executor's loops survive by retrying (the server or network is away, or
PostgreSQL chose this transaction as a deadlock / serialization victim)."""

from __future__ import annotations

import asyncpg

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TransactionRollbackError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # A connection cut mid-statement (the server stopping) can surface as this asyncpg error.
    asyncpg.InternalClientError,
)
