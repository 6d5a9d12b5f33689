"""Parameters reach real shell, python and SQL nodes as data, never as code.

Each value of the injection corpus is the trigger message's `value`; every node writes what it
received and the test compares byte for byte. Canary commands hidden in the values must never run.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared.db import connections as connection_repo
from shared.operations.logs import read_log
from tests.factories import workflow
from tests.support.executor import enqueue, flow, running_executor, save, wait_instance
from tests.support.secrets import suite_box

Pool: TypeAlias = "asyncpg.Pool[Any]"


def corpus(canary: Path) -> list[str]:
    return [
        f"'; touch {canary} #",
        f"$(touch {canary})",
        f"`touch {canary}`",
        '"',
        "'''",
        '"""',
        "\\",
        "\\\\",
        "line one\nline two\n",
        f"__import__('os').system('touch {canary}')",
        "'); DROP TABLE canary_table; --",
        "${HOME} $HOME %s {0} {{x}}",
        "x" * (1 << 20),
        # What the Kafka listener makes of invalid UTF-8: base64 text.
        base64.b64encode(b"\xff\xfe\xfd garbage \x00").decode(),
        "unicode: 文件 ✓ \u202e",
    ]


NODES = [
    {
        "name": "shell_dq",
        "type": "shell",
        "code": 'printf \'%s\' "${workflow.triggerMessage.value}" > "${out}/shell_dq"',
    },
    {
        "name": "shell_sq",
        "type": "shell",
        "code": "printf '%s' '${workflow.triggerMessage.value}' > \"${out}/shell_sq\"",
    },
    {
        "name": "shell_bare",
        "type": "shell",
        "code": "printf '%s' ${workflow.triggerMessage.value} > ${out}/shell_bare",
    },
    {
        "name": "python_sq",
        "type": "python",
        "code": "v = '${workflow.triggerMessage.value}'\n"
        "open('${out}/python_sq', 'w', encoding='utf-8', newline='').write(v)",
    },
    {
        "name": "python_triple",
        "type": "python",
        "code": 'v = """${workflow.triggerMessage.value}"""\n'
        "open('${out}/python_triple', 'w', encoding='utf-8', newline='').write(v)",
    },
    {
        "name": "python_bare",
        "type": "python",
        "code": "v = ${workflow.triggerMessage.value}\n"
        "open('${out}/python_bare', 'w', encoding='utf-8', newline='').write(v)",
    },
    {
        "name": "python_raw_f",
        "type": "python",
        "code": "v = r'${workflow.triggerMessage.value}'\nw = f'${workflow.triggerMessage.value}'\n"
        "assert v == w\n"
        "open('${out}/python_raw_f', 'w', encoding='utf-8', newline='').write(v)",
    },
    {
        "name": "sql_literal",
        "type": "sql",
        "connection": "pg",
        "code": "INSERT INTO sink (node, instance, v) "
        "VALUES ('sql_literal', ${workflow.instanceId}, '${workflow.triggerMessage.value}')",
    },
    {
        "name": "sql_bind",
        "type": "sql",
        "connection": "pg",
        "code": "INSERT INTO sink (node, instance, v) "
        "SELECT 'sql_bind', ${workflow.instanceId}, ${workflow.triggerMessage.value}",
    },
]


async def test_injection_corpus_reaches_every_node_literally(
    pool: Pool, db_url: str, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    await pool.execute("CREATE TABLE sink (node text, instance bigint, v text)")
    await pool.execute("CREATE TABLE canary_table (x int)")
    async with pool.acquire() as conn:
        await connection_repo.upsert(
            conn,
            1,
            connection_repo.ConnectionSpec(name="pg", kind="postgres", config={"dsn": db_url}),
            suite_box(),
        )
    values = corpus(canary)
    runs: list[tuple[str, int, Path]] = []
    for index, value in enumerate(values):
        out = tmp_path / f"v{index}"
        out.mkdir()
        spec = workflow(f"inj{index}", type="manual", nodes=NODES, parameters={"out": str(out)})
        version = await save(pool, spec)
        [iid] = await enqueue(pool, version, trigger_message={"value": value})
        runs.append((value, iid, out))
    async with running_executor(db_url):
        for value, iid, _ in runs:
            state = await wait_instance(pool, iid)
            if state != "succeeded":
                failed = await pool.fetch(
                    "SELECT n.name, a.reason FROM node_instances n JOIN attempts a "
                    "ON a.node_instance_id = n.id WHERE n.instance_id = $1 AND n.state <> "
                    "'succeeded'",
                    iid,
                )
                logs = {}
                async with pool.acquire() as conn:
                    for r in failed:
                        chunks, _ = await read_log(conn, 1, iid, r["name"], None)
                        logs[r["name"]] = "".join(t for _, t in chunks)[-300:]
                pytest.fail(f"value {value[:40]!r}: instance {state}: {logs}")
    for value, iid, out in runs:
        for node in (
            "shell_dq",
            "shell_sq",
            "python_sq",
            "python_triple",
            "python_bare",
            "python_raw_f",
        ):
            got = (out / node).read_text(encoding="utf-8")
            assert got == value, f"{node} altered {value[:40]!r}"
        rows = await pool.fetch("SELECT node, v FROM sink WHERE instance = $1", iid)
        assert {r["node"]: r["v"] for r in rows} == {"sql_literal": value, "sql_bind": value}
        # unquoted in shell: still one word, never split or globbed, never executed
        assert (out / "shell_bare").read_text(encoding="utf-8") == value
    assert not canary.exists()
    assert await pool.fetchval("SELECT to_regclass('canary_table') IS NOT NULL")


async def test_missing_path_fails_the_node_naming_it(pool: Pool, db_url: str) -> None:
    version = await save(
        pool,
        flow(
            "missing",
            [{"name": "n", "type": "shell", "code": "echo ${workflow.triggerMessage.nope.deeper}"}],
        ),
    )
    [iid] = await enqueue(pool, version, trigger_message={"value": "x"})
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    reason = await pool.fetchval(
        "SELECT a.reason FROM attempts a JOIN node_instances n ON n.id = a.node_instance_id "
        "WHERE n.instance_id = $1",
        iid,
    )
    assert reason == "parameters"
    async with pool.acquire() as conn:
        chunks, _ = await read_log(conn, 1, iid, "n", None)
    text = "".join(t for _, t in chunks)
    assert "workflow.triggerMessage.nope" in text


async def test_dataworks_examples_as_written(pool: Pool, db_url: str) -> None:
    nodes: list[dict[str, Any]] = [
        {
            "name": "hello",
            "type": "shell",
            "code": 'echo "Hello, Trigger Workflow! Current time is ${bizdate}"',
        },
        {
            "name": "kafka_python",
            "type": "python",
            "parameters": {"yesterday": "$[yyyymmdd-1]", "api_key": "s3cr3t"},
            "code": "import json\n"
            "message_value_str = '${workflow.triggerMessage.value}'\n"
            "message = json.loads(message_value_str)\n"
            "print(message['user_id'], message['action_type'], message['timestamp'])\n"
            "print('yesterday', '${yesterday}')\n",
        },
        {
            "name": "env",
            "type": "shell",
            "code": 'printf "%s|%s" "$SLUICE_PARAM_YESTERDAY_MISSING" "$SLUICE_PARAM_REGION"',
            "parameters": {"region": "cn-hangzhou"},
        },
    ]
    version = await save(pool, flow("dw", nodes))
    value = '{"user_id": "O\'Brien 1001", "action_type": "login", "timestamp": 1688888888}'
    [iid] = await enqueue(pool, version, trigger_message={"value": value})
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"

    async def log_of(node: str) -> str:
        async with pool.acquire() as conn:
            chunks, _ = await read_log(conn, 1, iid, node, None)
        return "".join(t for _, t in chunks)

    # cyctime is 2026-11-21 12:00 UTC: bizdate is the day before
    assert "Hello, Trigger Workflow! Current time is 20261120" in await log_of("hello")
    python_out = await log_of("kafka_python")
    assert "O'Brien 1001 login 1688888888" in python_out
    assert "yesterday 20261120" in python_out
    assert "|cn-hangzhou" in await log_of("env")
    recorded = await pool.fetchval(
        "SELECT a.parameters FROM attempts a JOIN node_instances n ON n.id = a.node_instance_id "
        "WHERE n.instance_id = $1 AND n.name = 'kafka_python'",
        iid,
    )
    assert recorded == {"yesterday": "20261120", "api_key": "***"}
