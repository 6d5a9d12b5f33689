"""Connection secrets at rest: sealed with SLUICE_SECRET_KEY, never in a dump, rotated by the CLI.

Real PostgreSQL, the real `pg_dump`, and the real `sluice migrate` / `sluice rotate-secrets` /
`sluice run executor` processes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared.db import connections
from shared.db.connections import ConnectionSpec
from shared.secret_box import SecretBox, SecretKeyError, generate_key, parse_keys
from tests.support.api import sluice_env
from tests.support.secrets import TEST_SECRET_KEY, suite_box

Pool: TypeAlias = "asyncpg.Pool[Any]"
SLUICE = str(Path(sys.executable).with_name("sluice"))
_PGSERVER = importlib.util.find_spec("pgserver")
assert _PGSERVER is not None and _PGSERVER.origin is not None
PG_DUMP = Path(_PGSERVER.origin).parent / "pginstall" / "bin" / "pg_dump"
PASSWORD = "hunter2-Ω-very-secret"
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_seal_and_open_round_trip_bound_to_the_row() -> None:
    box = SecretBox.from_text(generate_key())
    sealed = box.seal({"password": PASSWORD}, "connection:1:pg")
    assert PASSWORD not in sealed
    assert box.open(sealed, "connection:1:pg") == {"password": PASSWORD}
    # Copied into another workspace's row, it does not open.
    with pytest.raises(SecretKeyError, match="SLUICE_SECRET_KEY: a stored secret does not decrypt"):
        box.open(sealed, "connection:2:pg")
    other = SecretBox.from_text(generate_key())
    with pytest.raises(SecretKeyError, match="SLUICE_SECRET_KEY: none of its keys"):
        other.open(sealed, "connection:1:pg")
    assert "key" not in repr(box).lower().replace("keys=", "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty"),
        ("short", "key 1 is not 32 bytes"),
        (f"{generate_key()},nope", "key 2 is not 32 bytes"),
    ],
)
def test_bad_keys_are_refused_naming_the_variable(text: str, reason: str) -> None:
    with pytest.raises(SecretKeyError) as caught:
        parse_keys(text)
    assert str(caught.value).startswith("SLUICE_SECRET_KEY: ")
    assert reason in str(caught.value)
    assert "nope" not in str(caught.value)


async def save_connections(pool: Pool, box: SecretBox) -> None:
    async with pool.acquire() as conn:
        await connections.upsert(
            conn,
            1,
            ConnectionSpec(
                name="pg",
                kind="postgres",
                config={"host": "db.internal"},
                secrets={"password": PASSWORD},
            ),
            box,
        )
        await connections.upsert(
            conn,
            1,
            ConnectionSpec(
                name="store",
                kind="s3",
                secrets={"access_key_id": "AK", "secret_access_key": S3_SECRET},
            ),
            box,
        )


async def test_a_dump_of_the_database_holds_no_secret(pool: Pool, db_url: str) -> None:
    await save_connections(pool, suite_box())
    proc = await asyncio.create_subprocess_exec(
        str(PG_DUMP),
        "--data-only",
        "--table=connections",
        db_url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    dump = out.decode()
    assert "db.internal" in dump  # the table was dumped
    assert PASSWORD not in dump
    assert S3_SECRET not in dump
    async with pool.acquire() as conn:
        resolved = await connections.resolve(conn, 1, "pg", suite_box())
        assert resolved.secrets == {"password": PASSWORD}
        listed = await connections.get(conn, 1, "store")
        assert listed.secret_keys == ["access_key_id", "secret_access_key"]
        # Leaving secrets out of an update keeps the sealed ones.
        await connections.upsert(
            conn, 1, ConnectionSpec(name="pg", kind="postgres", config={"host": "x"}), suite_box()
        )
        assert (await connections.resolve(conn, 1, "pg", suite_box())).secrets == {
            "password": PASSWORD
        }


async def sluice(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        SLUICE,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def test_migrate_seals_plain_rows_once_and_refuses_a_missing_key(
    pool: Pool, db_url: str
) -> None:
    # A row as stored before secrets were sealed.
    await pool.execute(
        "INSERT INTO connections (workspace_id, name, kind, secrets) "
        "VALUES (1, 'legacy', 'postgres', $1)",
        {"password": PASSWORD},
    )
    code, out = await sluice("migrate", env=sluice_env(db_url, SLUICE_SECRET_KEY=""))
    assert code == 2
    assert "SLUICE_SECRET_KEY" in out and PASSWORD not in out
    code, out = await sluice("migrate", env=sluice_env(db_url))
    assert code == 0, out
    row = await pool.fetchrow("SELECT secrets, sealed_secrets FROM connections WHERE name='legacy'")
    assert row is not None and row["secrets"] == {} and PASSWORD not in row["sealed_secrets"]
    code, out = await sluice("migrate", env=sluice_env(db_url))
    assert code == 0, out
    again = await pool.fetchval("SELECT sealed_secrets FROM connections WHERE name='legacy'")
    assert again == row["sealed_secrets"]  # idempotent: not sealed twice
    async with pool.acquire() as conn:
        assert (await connections.resolve(conn, 1, "legacy", suite_box())).secrets == {
            "password": PASSWORD
        }


@pytest.mark.timeout(180)
async def test_rotation_with_new_and_old_keys(pool: Pool, db_url: str) -> None:
    await save_connections(pool, suite_box())
    new = generate_key()
    # With only the new key, the executor, the API and migrate refuse to start.
    for command in (("migrate",), ("run", "executor"), ("run", "api")):
        code, out = await sluice(*command, env=sluice_env(db_url, SLUICE_SECRET_KEY=new))
        assert code != 0, (command, out)
        assert "SLUICE_SECRET_KEY" in out, (command, out)
        assert PASSWORD not in out and new not in out
    code, out = await sluice(
        "rotate-secrets", env=sluice_env(db_url, SLUICE_SECRET_KEY=f"{new},{TEST_SECRET_KEY}")
    )
    assert code == 0, out
    assert "re-sealed 2 connection secret(s)" in out
    async with pool.acquire() as conn:
        only_new = SecretBox.from_text(new)
        assert (await connections.resolve(conn, 1, "pg", only_new)).secrets == {
            "password": PASSWORD
        }
        with pytest.raises(SecretKeyError):
            await connections.resolve(conn, 1, "pg", suite_box())
    code, out = await sluice("migrate", env=sluice_env(db_url, SLUICE_SECRET_KEY=new))
    assert code == 0, out


@pytest.mark.timeout(240)
async def test_services_that_open_secrets_refuse_to_start_without_the_key(
    pool: Pool, db_url: str
) -> None:
    await save_connections(pool, suite_box())
    for key in ("", generate_key()):  # missing, and one that sealed nothing here
        for command in (("run", "executor"), ("run", "api"), ("run", "notifier")):
            code, out = await sluice(*command, env=sluice_env(db_url, SLUICE_SECRET_KEY=key))
            assert code != 0, (command, out)
            assert "SLUICE_SECRET_KEY" in out, (command, out)
            assert "Traceback" not in out, (command, out)
            assert PASSWORD not in out and (not key or key not in out)


def test_dev_keeps_one_generated_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    from services.dev.command import _secret_key

    key = _secret_key(tmp_path)
    assert len(parse_keys(key)) == 1
    assert (tmp_path / "secret-key").stat().st_mode & 0o777 == 0o600
    assert _secret_key(tmp_path) == key
