"""Ordered plain-SQL migrations (`migrations/NNNN_name.sql`), applied once each, under a lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from shared.db.pool import Connection

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Arbitrary constant: serializes concurrent `sluice migrate` runs (k8s Job retries, dev restarts).
_LOCK_KEY = 0x51_1CE_0001


class MigrationError(RuntimeError):
    """The database cannot be brought to this code's schema."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files in version order; malformed names and repeated numbers are errors.

    Gaps are allowed: each version is applied once whatever the order it arrives in.
    """
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text("utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return found


def latest_version() -> int:
    return max((m.version for m in discover()), default=0)


async def applied_versions(conn: Connection) -> list[int]:
    """Versions recorded in the database (empty before the first migration)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return []
    rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [int(r["version"]) for r in rows]


async def migrate(conn: asyncpg.Connection[Any]) -> list[int]:
    """Apply every pending migration, each in its own transaction; return what was applied.

    Refuses to touch a database whose schema is newer than this code knows: running old code
    against a newer schema is how data gets silently damaged during a rollback.
    """
    migrations = discover()
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = set(await applied_versions(conn))
        newest = max(done, default=0)
        known = max((m.version for m in migrations), default=0)
        if newest > known:
            raise MigrationError(
                f"database schema version {newest} is newer than this sluice knows "
                f"({known}); upgrade sluice instead of migrating"
            )
        applied: list[int] = []
        for migration in migrations:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def is_current(conn: Connection) -> bool:
    """True when every known migration is applied (used by /readyz)."""
    return set(await applied_versions(conn)) >= {m.version for m in discover()}
