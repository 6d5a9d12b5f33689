"""One way to get a connection: only `shared.db.pool.acquire` tells a pool from a connection.

Code that takes either (`Executor`) and needs one connection writes `async with acquire(db)`;
an `isinstance(x, asyncpg.Pool)` elsewhere is the duplicated branch `acquire` replaced.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {Path("shared/db/pool.py")}
_DB_TYPES = {"Pool", "Connection", "PoolConnectionProxy"}


def _names(node: ast.expr) -> list[str]:
    """The last component of every type named in an isinstance's second argument."""
    if isinstance(node, ast.Tuple):
        return [name for element in node.elts for name in _names(element)]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Name):
        return [node.id]
    return []


def pool_checks(source: str) -> list[int]:
    """Lines of `isinstance(..., <Pool or Connection type>)` calls in `source`."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance"
            and len(node.args) == 2
            and _DB_TYPES & set(_names(node.args[1]))
        ):
            lines.append(node.lineno)
    return lines


def test_no_module_but_the_pool_module_tells_a_pool_from_a_connection() -> None:
    found: dict[str, list[int]] = {}
    for top in ("shared", "services", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative in ALLOWED:
                continue
            if lines := pool_checks(path.read_text("utf-8")):
                found[str(relative)] = lines
    assert found == {}, "use shared.db.pool.acquire(db) instead of an isinstance check"


def test_the_pool_module_itself_is_seen_by_the_check() -> None:
    assert pool_checks((ROOT / "shared/db/pool.py").read_text("utf-8")) != []


@pytest.mark.parametrize(
    "source",
    [
        "if isinstance(pool, asyncpg.Pool):\n    pass",
        "ok = not isinstance(db, Pool)",
        "isinstance(conn, (asyncpg.Connection, PoolConnectionProxy))",
        "def f(db):\n    return isinstance(db, asyncpg.pool.Pool)",
    ],
)
def test_a_planted_pool_check_is_found(source: str) -> None:
    assert pool_checks(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "isinstance(exc, asyncpg.PostgresError)",
        "isinstance(value, dict)",
        "async with acquire(pool) as conn:\n    pass",
        "isinstance(x)",
    ],
)
def test_other_isinstance_checks_pass(source: str) -> None:
    assert pool_checks(source) == []
