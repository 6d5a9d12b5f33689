"""`sql` nodes: the code runs on a workspace postgres connection with the node's timeout as
`statement_timeout`. A statement that returns rows logs the first ones and the row count; any
other statement logs its status (`INSERT 0 5`). A script of several statements runs in a
single transaction (as the simple query protocol would run it) and logs what its last statement
did.

The node's outputs are the columns of the first row its (last) statement returns (`{}` when it
returns none); a statement without result columns produces no outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from services.executor.logs import LogBuffer
from services.executor.runners import connect
from services.executor.runners.base import AttemptContext, RunResult
from services.executor.runners.statements import split_statements
from shared.models.workflows import SqlNode
from shared.params.outputs import OutputsError, row_outputs

FIRST_ROWS = 20
# Result columns, their type names and the first row (None: no rows) of the statement, when it
# has result columns.
FirstRow = tuple[list[str], list[str], tuple[Any, ...] | None]
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
) -> FirstRow | None:
    """Run node SQL and describe its result in the log; return its first row, if it has
    result columns."""
    try:
        statement = await conn.prepare(code)
    except asyncpg.PostgresSyntaxError as exc:
        if args or _MULTIPLE_COMMANDS not in str(exc):
            raise
        return await _script(conn, code, log)
    return await _statement(conn, statement, args, log)


async def _script(conn: asyncpg.Connection[Any], code: str, log: LogBuffer) -> FirstRow | None:
    """Several statements, in one transaction as the simple query protocol would run them; the
    last one on its own, so its first row can become the node's outputs."""
    statements = split_statements(code)
    if len(statements) < 2:
        log.note(await conn.execute(code))
        return None
    async with conn.transaction():
        await conn.execute(";\n".join(statements[:-1]))
        last = await conn.prepare(statements[-1])
        return await _statement(conn, last, [], log)


async def _statement(
    conn: asyncpg.Connection[Any],
    statement: asyncpg.prepared_stmt.PreparedStatement[Any],
    args: list[str],
    log: LogBuffer,
) -> FirstRow | None:
    attributes = statement.get_attributes()
    columns = [a.name for a in attributes]
    if not columns:
        await statement.fetch(*args)
        log.note(statement.get_statusmsg() or "done")
        return None
    first: list[tuple[Any, ...]] = []
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
    return columns, [a.type.name for a in attributes], first[0] if first else None


async def run(ctx: AttemptContext) -> RunResult:
    node = ctx.node
    assert isinstance(node, SqlNode)
    async with connect.postgres(
        ctx.services.pool,
        ctx.claimed.workspace_id,
        node.connection,
        ctx.claimed.timeout_s,
        fence=ctx.fence,
        box=ctx.services.settings.secret_box(),
    ) as conn:
        try:
            result = await execute(conn, ctx.prepared.code, ctx.prepared.args, ctx.log)
        except asyncpg.QueryCanceledError as exc:
            # statement_timeout fired (it equals the node's timeout_s).
            ctx.log.note(f"statement cancelled: {exc}")
            return RunResult(ok=False, reason="timeout")
    if result is None:
        return RunResult(ok=True)
    columns, types, row = result
    try:
        outputs = row_outputs(node.name, columns, row, types) if row is not None else {}
    except OutputsError as exc:
        ctx.log.note(f"outputs: {exc}")
        return RunResult(ok=False, reason="outputs")
    return RunResult(ok=True, outputs=outputs)
