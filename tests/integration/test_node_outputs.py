"""Node outputs through the real executor: shell, python and sql nodes hand values downstream.

Outputs come from `$SLUICE_OUTPUT_FILE` or a sql node's first row, are stored per attempt, and
reach descendants through `${nodes.<node>.outputs.<path>}` bound exactly like trigger-message
paths: the injection corpus travels through a node's outputs and must arrive byte for byte in
real bash, python and PostgreSQL, with no canary ever created.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared.db import connections as connection_repo
from shared.operations.instances import rerun_instance
from shared.operations.logs import read_log
from tests.factories import DEFAULT_WS, workflow
from tests.integration.test_parameters_exec import NODES, corpus
from tests.support.executor import attempts_of, enqueue, flow, running_executor, save, wait_instance
from tests.support.secrets import suite_box

Pool: TypeAlias = "asyncpg.Pool[Any]"

# A python node that passes the trigger message's `value` on as its output, as data: the value
# is read from the message file, never bound into code.
RELAY = {
    "name": "src",
    "type": "python",
    "code": "import json, os\n"
    "m = json.load(open(os.environ['SLUICE_TRIGGER_MESSAGE_FILE'], encoding='utf-8'))\n"
    "json.dump({'value': m['value']}, open(os.environ['SLUICE_OUTPUT_FILE'], 'w'))\n",
}


async def add_pg_connection(pool: Pool, db_url: str) -> None:
    async with pool.acquire() as conn:
        await connection_repo.upsert(
            conn,
            DEFAULT_WS,
            connection_repo.ConnectionSpec(name="pg", kind="postgres", config={"dsn": db_url}),
            suite_box(),
        )


async def log_of(pool: Pool, iid: int, node: str, attempt: int | None = None) -> str:
    async with pool.acquire() as conn:
        chunks, _ = await read_log(conn, DEFAULT_WS, iid, node, attempt)
    return "".join(text for _, text in chunks)


async def reasons(pool: Pool, iid: int) -> dict[str, str | None]:
    rows = await pool.fetch(
        "SELECT n.name, a.reason FROM node_instances n JOIN attempts a "
        "ON a.node_instance_id = n.id WHERE n.instance_id = $1 ORDER BY a.attempt",
        iid,
    )
    return {r["name"]: r["reason"] for r in rows}


def downstream(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trigger-message corpus nodes, reading the relay's output instead of the message."""
    return [
        {
            **node,
            "upstream": ["src"],
            "code": node["code"].replace(
                "workflow.triggerMessage.value", "nodes.src.outputs.value"
            ),
        }
        for node in nodes
    ]


@pytest.mark.timeout(240)
async def test_hostile_output_values_reach_every_node_literally(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    await pool.execute("CREATE TABLE sink (node text, instance bigint, v text)")
    await pool.execute("CREATE TABLE canary_table (x int)")
    await add_pg_connection(pool, db_url)
    # The output file holds at most 1 MiB: the corpus' 1 MiB value is cut to fit its JSON.
    values = [v if len(v) < 1 << 20 else v[: (1 << 20) - 64] for v in corpus(canary)]
    runs: list[tuple[str, int, Path]] = []
    for index, value in enumerate(values):
        out = tmp_path / f"v{index}"
        out.mkdir()
        nodes = [RELAY, *downstream(NODES)]
        spec = workflow(f"out{index}", type="manual", nodes=nodes, parameters={"out": str(out)})
        version = await save(pool, spec)
        [iid] = await enqueue(pool, version, trigger_message={"value": value})
        runs.append((value, iid, out))
    async with running_executor(db_url):
        for value, iid, _ in runs:
            state = await wait_instance(pool, iid)
            assert state == "succeeded", (value[:40], await reasons(pool, iid))
    for value, iid, out in runs:
        for node in ("shell_dq", "shell_sq", "shell_bare", "python_sq", "python_triple"):
            assert (out / node).read_text(encoding="utf-8") == value, f"{node}: {value[:40]!r}"
        for node in ("python_bare", "python_raw_f"):
            assert (out / node).read_text(encoding="utf-8") == value, f"{node}: {value[:40]!r}"
        rows = await pool.fetch("SELECT node, v FROM sink WHERE instance = $1", iid)
        assert {r["node"]: r["v"] for r in rows} == {"sql_literal": value, "sql_bind": value}
        [relay] = await attempts_of(pool, iid, "src")
        assert relay["outputs"] == {"value": value}
    assert not canary.exists()
    assert await pool.fetchval("SELECT to_regclass('canary_table') IS NOT NULL")


async def test_a_value_computed_in_shell_passes_through_python_and_sql(
    pool: Pool, db_url: str
) -> None:
    await add_pg_connection(pool, db_url)
    nodes: list[dict[str, Any]] = [
        {
            "name": "count",
            "type": "shell",
            "code": 'n=$(( 6 * 7 ))\nprintf \'{"rows": %s, "day": "%s"}\' "$n" "${bizdate}" '
            '> "$SLUICE_OUTPUT_FILE"',
        },
        {
            "name": "double",
            "type": "python",
            "upstream": ["count"],
            "code": "import json, os\n"
            "rows = int(${nodes.count.outputs.rows})\n"
            "out = {'rows': rows * 2, 'label': 'day ${nodes.count.outputs.day}'}\n"
            "json.dump(out, open(os.environ['SLUICE_OUTPUT_FILE'], 'w'))\n",
        },
        {
            "name": "store",
            "type": "sql",
            "connection": "pg",
            "upstream": ["double"],
            "code": "SELECT ${nodes.double.outputs.rows}::int + 1 AS total, "
            "'${nodes.double.outputs.label}' AS label, "
            "${nodes.count.outputs.rows}::int AS original, now() AS at, 1.5::numeric AS ratio",
        },
        {
            "name": "report",
            "type": "shell",
            "upstream": ["store"],
            "code": 'echo "total=${nodes.store.outputs.total} label=${nodes.store.outputs.label}"',
        },
    ]
    version = await save(pool, flow("chain", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded", await reasons(pool, iid)
    [count] = await attempts_of(pool, iid, "count")
    assert count["outputs"] == {"rows": 42, "day": "20261120"}
    [double] = await attempts_of(pool, iid, "double")
    assert double["outputs"] == {"rows": 84, "label": "day 20261120"}
    [store] = await attempts_of(pool, iid, "store")
    outputs = store["outputs"]
    assert outputs["total"] == 85 and outputs["original"] == 42
    assert outputs["label"] == "day 20261120" and outputs["ratio"] == "1.5"
    assert outputs["at"].startswith("20")  # a timestamp as ISO 8601 text
    assert "total=85 label=day 20261120" in await log_of(pool, iid, "report")
    [report] = await attempts_of(pool, iid, "report")
    assert report["outputs"] is None  # wrote no output file


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[1, 2]", "must hold a JSON object, got an array"),
        ('"text"', "must hold a JSON object, got a string"),
        ("{not json", "is not valid JSON"),
        ("BIG", "more than the 1048576 bytes allowed"),
        ("LINK", "cannot be read as a plain file"),
    ],
    ids=["array", "string", "invalid-json", "too-big", "symlink"],
)
async def test_unusable_outputs_fail_the_node_naming_it(
    pool: Pool, db_url: str, tmp_path: Path, content: str, expected: str
) -> None:
    if content == "BIG":
        code = (
            "import json, os\n"
            "json.dump({'v': 'x' * (1 << 20)}, open(os.environ['SLUICE_OUTPUT_FILE'], 'w'))\n"
        )
    elif content == "LINK":
        secret = tmp_path / "secret.json"
        secret.write_text('{"secret": "s3cr3t"}')
        code = f"import os\nos.symlink({str(secret)!r}, os.environ['SLUICE_OUTPUT_FILE'])\n"
    else:
        code = f"import os\nopen(os.environ['SLUICE_OUTPUT_FILE'], 'w').write({content!r})\n"
    nodes: list[dict[str, Any]] = [
        {"name": "producer", "type": "python", "code": code},
        {"name": "after", "type": "shell", "upstream": ["producer"], "code": "echo ran"},
    ]
    version = await save(pool, flow("bad", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    [attempt] = await attempts_of(pool, iid, "producer")
    assert attempt["reason"] == "outputs"
    assert attempt["outputs"] is None
    text = await log_of(pool, iid, "producer")
    assert "node 'producer': $SLUICE_OUTPUT_FILE" in text and expected in text
    assert "s3cr3t" not in text
    states = await pool.fetch(
        "SELECT name, state FROM node_instances WHERE instance_id = $1 ORDER BY name", iid
    )
    assert {r["name"]: r["state"] for r in states} == {
        "after": "upstream_failed",
        "producer": "failed",
    }


async def test_a_missing_output_fails_the_node_naming_the_path(pool: Pool, db_url: str) -> None:
    nodes: list[dict[str, Any]] = [
        {
            "name": "a",
            "type": "shell",
            "code": 'echo \'{"present": 1}\' > "$SLUICE_OUTPUT_FILE"',
        },
        {"name": "silent", "type": "shell", "code": "echo no outputs"},
        {
            "name": "b",
            "type": "shell",
            "upstream": ["a"],
            "code": "echo ${nodes.a.outputs.absent.deeper}",
        },
        {
            "name": "c",
            "type": "python",
            "upstream": ["silent"],
            "code": "print('${nodes.silent.outputs.x}')",
        },
        {
            "name": "d",
            "type": "shell",
            "upstream": ["silent"],
            "code": 'echo "[${nodes.silent.outputs.x:-fallback}]"',
        },
    ]
    version = await save(pool, flow("missing", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    got = await reasons(pool, iid)
    assert got["b"] == "parameters" and got["c"] == "parameters" and got["d"] is None
    assert "'nodes.a.outputs.absent.deeper'" in await log_of(pool, iid, "b")
    assert "'nodes.silent.outputs.x'" in await log_of(pool, iid, "c")
    assert "[fallback]" in await log_of(pool, iid, "d")


async def test_a_rerun_replaces_what_descendants_see_and_keeps_earlier_outputs(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    nodes: list[dict[str, Any]] = [
        {
            "name": "produce",
            "type": "python",
            "code": "import json, os\n"
            f"path = {str(counter)!r}\n"
            "n = int(open(path).read()) + 1\n"
            "open(path, 'w').write(str(n))\n"
            "json.dump({'run': n}, open(os.environ['SLUICE_OUTPUT_FILE'], 'w'))\n",
        },
        {
            "name": "consume",
            "type": "shell",
            "upstream": ["produce"],
            "code": 'echo "saw run ${nodes.produce.outputs.run}"',
        },
    ]
    version = await save(pool, flow("rerun", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"
        async with pool.acquire() as conn:
            await rerun_instance(conn, DEFAULT_WS, iid, "all")
        assert await wait_instance(pool, iid, "succeeded", "failed") == "succeeded"
    produced = await attempts_of(pool, iid, "produce")
    assert [a["outputs"] for a in produced] == [{"run": 1}, {"run": 2}]
    assert "saw run 1" in await log_of(pool, iid, "consume", 1)
    assert "saw run 2" in await log_of(pool, iid, "consume", 2)
    assert json.loads(counter.read_text()) == 2


async def test_a_sql_script_passes_on_its_last_statements_first_row(
    pool: Pool, db_url: str
) -> None:
    await add_pg_connection(pool, db_url)
    nodes: list[dict[str, Any]] = [
        {
            "name": "script",
            "type": "sql",
            "connection": "pg",
            "code": "CREATE TABLE t (x int);\nINSERT INTO t VALUES (5), (6); -- two rows; \n"
            "SELECT sum(x) AS total, count(*) AS n, ';' AS semi FROM t ORDER BY 1;\n",
        },
        {
            "name": "status_only",
            "type": "sql",
            "connection": "pg",
            "code": "SELECT 1 AS one; CREATE TABLE u (x int)",
        },
        {
            "name": "empty",
            "type": "sql",
            "connection": "pg",
            "code": "SELECT 1 AS one; SELECT 2 AS two WHERE false",
        },
        {
            "name": "use",
            "type": "shell",
            "upstream": ["script"],
            "code": 'echo "total=${nodes.script.outputs.total} n=${nodes.script.outputs.n}"',
        },
    ]
    version = await save(pool, flow("scripts", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded", await reasons(pool, iid)
    [script] = await attempts_of(pool, iid, "script")
    assert script["outputs"] == {"total": 11, "n": 2, "semi": ";"}
    [status_only] = await attempts_of(pool, iid, "status_only")
    assert status_only["outputs"] is None
    assert await pool.fetchval("SELECT to_regclass('u') IS NOT NULL")
    [empty] = await attempts_of(pool, iid, "empty")
    assert empty["outputs"] == {}
    assert "total=11 n=2" in await log_of(pool, iid, "use")


async def test_a_failing_script_changes_nothing(pool: Pool, db_url: str) -> None:
    await add_pg_connection(pool, db_url)
    nodes = [
        {
            "name": "broken",
            "type": "sql",
            "connection": "pg",
            "code": "CREATE TABLE half (x int); SELECT 1 / 0 AS boom",
        }
    ]
    version = await save(pool, flow("broken", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    assert "division by zero" in await log_of(pool, iid, "broken")
    assert await pool.fetchval("SELECT to_regclass('half') IS NULL")
