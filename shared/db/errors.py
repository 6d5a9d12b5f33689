"""Errors repositories raise; the API maps them to 404 / 409 / 422."""

from __future__ import annotations

import asyncpg

# What an outage of PostgreSQL looks like to a loop that should wait it out: a stopping server
# answers "shutting down" (CannotConnectNow, AdminShutdown), a connection cut mid-statement can
# surface as asyncpg's InternalClientError, and a refused connection as OSError.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.InternalClientError,
)


class NotFound(LookupError):
    """A named object does not exist (in this workspace)."""

    def __init__(self, kind: str, name: str | int) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind = kind
        self.name = name


class Conflict(RuntimeError):
    """The request contradicts what is stored (name taken, object in use)."""


class Invalid(ValueError):
    """A spec is valid on its own but not against what is stored (e.g. unknown trigger)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
