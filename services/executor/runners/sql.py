"""`sql` nodes: the code runs on a workspace postgres connection with the node's timeout as
`statement_timeout`. A statement that returns rows logs the first ones and the row count; any
other statement logs its status (`INSERT 0 5`). A script of several statements runs through the
simple query protocol and logs the last status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from services.executor.logs import LogBuffer
from services.executor.runners import connect
from services.executor.runners.base import AttemptContext, RunResult
from shared.models.workflows import SqlNode

FIRST_ROWS = 20
_CELL_CHARS = 200
_MULTIPLE_COMMANDS = "cannot insert multiple commands"


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Tab-separated header and rows, each cell cut to a readable length."""

    def cell(value: Any) -> str:
        text = "NULL" if value is None else str(value)
        text = text.replace("\t", " ").replace("\n", " ")
        return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"

    lines = ["\t".join(columns)]
    lines.extend("\t".join(cell(v) for v in row) for row in rows)
    return "\n".join(lines) + "\n"


async def execute(
    conn: asyncpg.Connection[Any], code: str, args: list[str], log: LogBuffer
) -> None:
    """Run node SQL and describe its result in the log."""
    try:
        statement = await conn.prepare(code)
    except asyncpg.PostgresSyntaxError as exc:
        if args or _MULTIPLE_COMMANDS not in str(exc):
            raise
        log.note(await conn.execute(code))
        return
    columns = [a.name for a in statement.get_attributes()]
    if not columns:
        await statement.fetch(*args)
        log.note(statement.get_statusmsg() or "done")
        return
    first: list[Sequence[Any]] = []
    total = 0
    # A cursor keeps memory flat whatever the result size; the rows still all get produced.
    async with conn.transaction():
        async for record in statement.cursor(*args, prefetch=500):
            if total < FIRST_ROWS:
                first.append(tuple(record.values()))
            total += 1
    log.feed(format_rows(columns, first).encode("utf-8"))
    shown = f" (first {FIRST_ROWS} shown)" if total > FIRST_ROWS else ""
    log.note(f"{total} rows{shown}")


async def run(ctx: AttemptContext) -> RunResult:
    node = ctx.node
    assert isinstance(node, SqlNode)
    async with connect.postgres(
        ctx.services.pool,
        ctx.claimed.workspace_id,
        node.connection,
        ctx.claimed.timeout_s,
        box=ctx.services.settings.secret_box(),
    ) as conn:
        try:
            await execute(conn, ctx.prepared.code, ctx.prepared.args, ctx.log)
        except asyncpg.QueryCanceledError as exc:
            # statement_timeout fired (it equals the node's timeout_s).
            ctx.log.note(f"statement cancelled: {exc}")
            return RunResult(ok=False, reason="timeout")
    return RunResult(ok=True)
