"""Migrations: ordered, idempotent, refuse a newer schema; every query matches the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.db import migrate as migrations
from shared.db.pool import connect
from shared.db.queries import all_query_files, parse

ROOT = Path(__file__).resolve().parents[2]


async def test_migrate_is_idempotent_and_recorded(db_url: str) -> None:
    conn = await connect(db_url)
    try:
        assert await migrations.migrate(conn) == []
        assert await migrations.applied_versions(conn) == [m.version for m in migrations.discover()]
        assert await migrations.is_current(conn)
    finally:
        await conn.close()


async def test_refuses_a_newer_schema(db_url: str) -> None:
    conn = await connect(db_url)
    try:
        newer = migrations.latest_version() + 1
        await conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", newer
        )
        with pytest.raises(migrations.MigrationError, match="newer than this sluice"):
            await migrations.migrate(conn)
    finally:
        await conn.close()


async def test_migrates_an_empty_database(pg_admin_dsn: str, db_url: str) -> None:
    conn = await connect(db_url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        applied = await migrations.migrate(conn)
        assert applied == [m.version for m in migrations.discover()]
        assert await conn.fetchval("SELECT name FROM workspaces") == "default"
    finally:
        await conn.close()


def _queries() -> list[tuple[str, str, str]]:
    out = []
    for path in all_query_files(ROOT / "shared", ROOT / "services"):
        for name, sql in parse(path.read_text("utf-8"), path.name).items():
            out.append((f"{path.relative_to(ROOT)}:{name}", name, sql))
    return out


async def test_every_query_prepares_against_the_migrated_schema(db_url: str) -> None:
    """The schema is what the code expects: each named query parses and type-checks."""
    queries = _queries()
    assert len(queries) > 20
    failures = []
    conn = await connect(db_url)
    try:
        for where, _, sql in queries:
            try:
                await conn.prepare(sql)
            except Exception as exc:  # collect every mismatch, not just the first
                failures.append(f"{where}: {exc}")
    finally:
        await conn.close()
    assert not failures, "\n".join(failures)
