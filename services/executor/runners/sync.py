"""`sync` nodes: CSV between S3 and PostgreSQL through a file in the attempt's working directory.

- `s3_to_postgres`: download `bucket/key`, then `COPY table FROM` it (optionally after
  `TRUNCATE`, in the same transaction, so readers never see the table empty).
- `postgres_to_s3`: `COPY (query) TO` a file, then upload it to `bucket/key`.

`table` is `name` or `schema.name` (identifiers are quoted, so case is kept). The S3 side uses
`s3_connection`, else the settings' S3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from services.executor.runners import connect
from services.executor.runners.base import AttemptContext, RunResult
from shared.models.workflows import PostgresToS3, S3ToPostgres, SyncNode

_DOWNLOAD_CHUNK = 1024 * 1024


def split_table(name: str) -> tuple[str | None, str]:
    """`schema.table` -> (schema, table); `table` -> (None, table)."""
    schema, dot, table = name.partition(".")
    if not dot:
        return None, name
    if not schema or not table:
        raise ValueError(f"table {name!r} is not 'name' or 'schema.name'")
    return schema, table


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier quoted so any name is taken literally."""
    return '"' + name.replace('"', '""') + '"'


def qualified(name: str) -> str:
    schema, table = split_table(name)
    return quote_ident(table) if schema is None else f"{quote_ident(schema)}.{quote_ident(table)}"


async def _download(client: Any, bucket: str, key: str, path: Path) -> int:
    response = await client.get_object(Bucket=bucket, Key=key)
    size = 0
    async with response["Body"] as body:
        with path.open("wb") as out:
            while chunk := await body.read(_DOWNLOAD_CHUNK):
                out.write(chunk)
                size += len(chunk)
    return size


async def _s3_to_postgres(ctx: AttemptContext, sync: S3ToPostgres) -> None:
    path = ctx.workdir() / "data.csv"
    services = ctx.services
    async with connect.s3(
        services.pool, ctx.claimed.workspace_id, sync.s3_connection, services.settings.secret_box()
    ) as client:
        size = await _download(client, sync.bucket, sync.key, path)
    ctx.log.note(f"downloaded s3://{sync.bucket}/{sync.key} ({size} bytes)")
    schema, table = split_table(sync.table)
    async with connect.postgres(
        services.pool,
        ctx.claimed.workspace_id,
        sync.connection,
        ctx.claimed.timeout_s,
        fence=ctx.fence,
        box=services.settings.secret_box(),
    ) as conn:
        async with conn.transaction():
            if sync.truncate:
                await conn.execute(f"TRUNCATE {qualified(sync.table)}")
            try:
                status = await conn.copy_to_table(
                    table, schema_name=schema, source=path, format="csv", header=sync.header
                )
            except asyncpg.PostgresError as exc:
                # The error's text lacks where in the file it is; PostgreSQL's CONTEXT has the line.
                context = getattr(exc, "context", None)
                if context:
                    ctx.log.note(f"load of s3://{sync.bucket}/{sync.key} failed: {context}")
                raise
    ctx.log.note(f"{status} into {sync.table}")


async def _postgres_to_s3(ctx: AttemptContext, sync: PostgresToS3) -> None:
    path = ctx.workdir() / "data.csv"
    services = ctx.services
    async with connect.postgres(
        services.pool,
        ctx.claimed.workspace_id,
        sync.connection,
        ctx.claimed.timeout_s,
        fence=ctx.fence,
        box=services.settings.secret_box(),
    ) as conn:
        status = await conn.copy_from_query(
            ctx.prepared.code,
            *ctx.prepared.args,
            output=path,
            format="csv",
            header=sync.header,
        )
    size = path.stat().st_size
    ctx.log.note(f"{status} ({size} bytes)")
    async with connect.s3(
        services.pool, ctx.claimed.workspace_id, sync.s3_connection, services.settings.secret_box()
    ) as client:
        with path.open("rb") as body:
            await client.put_object(
                Bucket=sync.bucket, Key=sync.key, Body=body, ContentType="text/csv"
            )
    ctx.log.note(f"uploaded s3://{sync.bucket}/{sync.key}")


async def run(ctx: AttemptContext) -> RunResult:
    node = ctx.node
    assert isinstance(node, SyncNode)
    if isinstance(node.sync, S3ToPostgres):
        await _s3_to_postgres(ctx, node.sync)
    else:
        await _postgres_to_s3(ctx, node.sync)
    return RunResult(ok=True)
