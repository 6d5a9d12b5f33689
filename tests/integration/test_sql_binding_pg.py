"""SQL binding against a real PostgreSQL: every literal form keeps the value inside it.

Node connections are opened the way the executor opens them (`postgres_params`), on a database
whose own default has `standard_conforming_strings` off, so a binder that relied on the server's
default would be caught.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from services.executor.runners.connect import postgres_params
from shared.db.connections import ResolvedConnection
from shared.params.binding import BindingError
from shared.params.binding.sql import bind_sql
from tests.unit.test_binding_sql import resolution

DROP = "\\'; DROP TABLE x; --"


@pytest.fixture
async def node_conn(db_url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    admin = await asyncpg.connect(db_url)
    try:
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'ALTER DATABASE "{name}" SET standard_conforming_strings = off')
        await admin.execute("CREATE TABLE x (id int)")
    finally:
        await admin.close()
    resolved = ResolvedConnection(kind="postgres", config={"dsn": db_url}, secrets={})
    conn = await asyncpg.connect(**postgres_params(resolved, 30))
    try:
        yield conn
    finally:
        await conn.close()


async def table_x_exists(conn: asyncpg.Connection[Any]) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('x') IS NOT NULL"))


async def test_node_connections_force_standard_conforming_strings(db_url: str) -> None:
    admin = await asyncpg.connect(db_url)
    try:
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'ALTER DATABASE "{name}" SET standard_conforming_strings = off')
    finally:
        await admin.close()
    plain = await asyncpg.connect(db_url)
    try:
        assert await plain.fetchval("SHOW standard_conforming_strings") == "off"
    finally:
        await plain.close()
    resolved = ResolvedConnection(
        kind="postgres",
        config={
            "dsn": db_url
            + ("&" if "?" in db_url else "?")
            + "options=-c%20standard_conforming_strings%3Doff"
        },
        secrets={},
    )
    conn = await asyncpg.connect(**postgres_params(resolved, 30))
    try:
        assert await conn.fetchval("SHOW standard_conforming_strings") == "on"
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "code",
    [
        # The reported escape: PostgreSQL continues E'a' into the second line's literal.
        "SELECT E'a'\n'${p}' AS v",
        "SELECT E'a' -- joined\n\t'${p}' AS v",
        "SELECT 'a'\n'${p}' AS v",
        "SELECT '${p}' AS v",
        "SELECT E'${p}' AS v",
        "SELECT N'${p}' AS v",
        "SELECT U&'${p}' AS v",
        "SELECT U&'${p}' UESCAPE '!' AS v",
        "SELECT U&'${p}'\n'' /* c */ UESCAPE\n'#' AS v",
        'SELECT 1 AS "${p}"',
        "SELECT ${p}::text AS v",
        "SELECT 1 AS ${p:ident}",
        "SELECT /* '${p} */ ${p}::text AS v -- '${p}",
    ],
)
async def test_value_arrives_and_table_survives(
    node_conn: asyncpg.Connection[Any], code: str
) -> None:
    for value in (DROP, "'); DROP TABLE x; --", "\\", "it's", 'q"uote', "é 世界 \U0001f600"):
        binding = bind_sql(code, resolution({"p": value}))
        row = await node_conn.fetchrow(binding.query, *binding.args)
        assert row is not None
        got = row[0] if "AS v" in code else next(iter(row.keys()))
        if '"${p}"' in code or ":ident" in code:
            # Identifiers are cut at 63 bytes; these values are shorter.
            assert got == value
        else:
            assert (
                got == "a" + value
                if code.startswith(("SELECT E'a'", "SELECT 'a'"))
                else got == value
            )
        assert await table_x_exists(node_conn)


async def test_a_set_in_the_script_cannot_turn_backslashes_into_escapes(
    node_conn: asyncpg.Connection[Any],
) -> None:
    code = "SET standard_conforming_strings = off;\nSELECT '${p}';"
    with pytest.raises(BindingError, match="standard_conforming_strings"):
        bind_sql(code, resolution({"p": DROP}))
    assert await table_x_exists(node_conn)
