"""Test infrastructure shared by every tier.

PostgreSQL: the embedded `pgserver` by default, `SLUICE_TEST_DATABASE_URL` to use another server.
The schema is migrated once into a template database; each test that asks for `db_url` gets a
fresh database cloned from it.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings

from services.dev.servers.postgres import EmbeddedPostgres, with_database
from shared.db.migrate import migrate
from shared.db.pool import connect, create_pool
from tests.support.secrets import TEST_SECRET_KEY

# Fixture modules: every test can ask for their fixtures by name without importing them.
pytest_plugins = [
    "tests.integration.kafka_support",
    "tests.support.api",
    "tests.support.s3",
    "tests.support.ceph",
    "tests.support.scheduler",
]

# Every service the suite starts (in process or as a child) seals connection secrets with this.
os.environ.setdefault("SLUICE_SECRET_KEY", TEST_SECRET_KEY)

TEMPLATE = "sluice_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server the suite may create databases on."""
    external = os.environ.get("SLUICE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="sluice-test-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pgdata")
        dsn = server.start()
        try:
            yield dsn
        finally:
            server.stop()


@pytest.fixture(scope="session")
async def template_dsn(pg_admin_dsn: str) -> str:
    """A database migrated once; tests clone it."""
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    dsn = with_database(pg_admin_dsn, TEMPLATE)
    conn = await connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


@pytest.fixture
async def db_url(pg_admin_dsn: str, template_dsn: str) -> AsyncIterator[str]:
    """A fresh database cloned from the migrated template, dropped after the test."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await admin.close()
    yield with_database(pg_admin_dsn, name)
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    p = await create_pool(db_url, min_size=1, max_size=20)
    try:
        yield p
    finally:
        await p.close()


# `--hypothesis-profile=deep`: thousands of examples per property instead of the bounded CI count
# (the fuzz tests use a fixed seed unless this profile is loaded).
hypothesis_settings.register_profile("deep", max_examples=8000, deadline=None)
