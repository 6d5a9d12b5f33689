"""Executor end to end in-process: node types, environment, DAG, retries, timeouts, logs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
import pytest

from shared.db import connections
from shared.db.connections import ConnectionSpec
from shared.operations.instances import terminate_instance
from shared.operations.logs import read_log
from tests.factories import DEFAULT_WS, shell_node
from tests.support.executor import (
    attempts_of,
    enqueue,
    flow,
    node_states,
    running_executor,
    save,
    wait_for,
    wait_gone,
    wait_instance,
)
from tests.support.secrets import suite_box

Pool: TypeAlias = "asyncpg.Pool[Any]"


async def log_text(pool: Pool, instance_id: int, node: str, attempt: int | None = None) -> str:
    async with pool.acquire() as conn:
        chunks, finished = await read_log(conn, DEFAULT_WS, instance_id, node, attempt)
    assert finished
    return "".join(text for _, text in chunks)


def python_node(name: str, code: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "python", "code": code, **kw}


async def add_pg_connection(pool: Pool, db_url: str, name: str = "db") -> None:
    async with pool.acquire() as conn:
        await connections.upsert(
            conn,
            DEFAULT_WS,
            ConnectionSpec(name=name, kind="postgres", config={"dsn": db_url}),
            suite_box(),
        )


async def test_shell_node_gets_its_variables_and_a_clean_environment(
    pool: Pool, db_url: str
) -> None:
    code = (
        'echo "id=$SLUICE_INSTANCE_ID node=$SLUICE_NODE_NAME attempt=$SLUICE_ATTEMPT"\n'
        'cat "$SLUICE_TRIGGER_MESSAGE_FILE"; echo\n'
        'echo "db=${SLUICE_DATABASE_URL:-unset}"\n'
        'case "$SLUICE_TRIGGER_MESSAGE_FILE" in "$PWD"/*) echo in-workdir;; esac\n'
        "echo to-stderr >&2\n"
    )
    version = await save(pool, flow("env", [shell_node("a", code=code)]))
    [iid] = await enqueue(pool, version, trigger_message={"k": "v", "n": 1})
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"
    lines = (await log_text(pool, iid, "a")).splitlines()
    assert lines == [
        f"id={iid} node=a attempt=1",
        '{"k": "v", "n": 1}',
        "db=unset",
        "in-workdir",
        "to-stderr",
    ]
    [attempt] = await attempts_of(pool, iid, "a")
    assert (attempt["state"], attempt["exit_code"], attempt["reason"]) == ("succeeded", 0, None)


async def test_python_node_runs_isolated_and_fails_with_its_traceback(
    pool: Pool, db_url: str
) -> None:
    code = (
        "import json, os, sys\n"
        "print('isolated', sys.flags.isolated)\n"
        "print(json.load(open(os.environ['SLUICE_TRIGGER_MESSAGE_FILE'])))\n"
        "raise SystemExit(int(os.environ['SLUICE_ATTEMPT']) + 6)\n"
    )
    version = await save(pool, flow("py", [python_node("p", code)]))
    [iid] = await enqueue(pool, version, trigger_message=None)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    assert (await log_text(pool, iid, "p")).splitlines() == [
        "isolated 1",
        "None",
        "[sluice] exit code 7",
    ]
    [attempt] = await attempts_of(pool, iid, "p")
    assert (attempt["state"], attempt["exit_code"], attempt["reason"]) == ("failed", 7, "exit_code")


async def test_failure_fails_descendants_and_independent_branches_go_on(
    pool: Pool, db_url: str
) -> None:
    nodes = [
        shell_node("a"),
        shell_node("b", ["a"], code="exit 3"),
        shell_node("c", ["b"]),
        shell_node("d", ["c", "a"]),
        shell_node("e"),
        shell_node("f", ["a"], code="echo f"),
    ]
    version = await save(pool, flow("dag", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    assert await node_states(pool, iid) == {
        "a": "succeeded",
        "b": "failed",
        "c": "upstream_failed",
        "d": "upstream_failed",
        "e": "succeeded",
        "f": "succeeded",
    }
    assert await attempts_of(pool, iid, "c") == []


@pytest.mark.parametrize(
    ("retries", "final", "states"),
    [
        (2, "succeeded", ["failed", "failed", "succeeded"]),
        (1, "failed", ["failed", "failed"]),
        (0, "failed", ["failed"]),
    ],
)
async def test_failed_attempts_are_retried_up_to_retries(
    pool: Pool, db_url: str, tmp_path: Path, retries: int, final: str, states: list[str]
) -> None:
    counter = tmp_path / "count"
    code = f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; [ $n -ge 3 ]"
    node = shell_node("r", code=code, retries=retries, retry_delay_s=0)
    version = await save(pool, flow("retry", [node]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == final
    attempts = await attempts_of(pool, iid, "r")
    assert [a["state"] for a in attempts] == states
    assert [a["attempt"] for a in attempts] == list(range(1, len(states) + 1))


async def test_a_retry_waits_for_its_delay(pool: Pool, db_url: str, tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"
    code = f"[ -e {marker} ] || {{ touch {marker}; exit 1; }}"
    node = shell_node("r", code=code, retries=1, retry_delay_s=3600)
    version = await save(pool, flow("delay", [node]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        waits = await wait_for(
            pool,
            """SELECT not_before - now() FROM node_instances
               WHERE instance_id = $1 AND state = 'ready' AND retries_used = 1""",
            iid,
        )
        assert waits.total_seconds() > 3500
        # Move time instead of waiting an hour: the retry becomes due.
        await pool.execute(
            "UPDATE node_instances SET not_before = now() WHERE instance_id = $1", iid
        )
        assert await wait_instance(pool, iid) == "succeeded"
    assert [a["state"] for a in await attempts_of(pool, iid, "r")] == ["failed", "succeeded"]


PIDS_CODE = """
sleep 300 & echo "pid $!"
bash -c 'sleep 300 & echo "pid $!"; trap "" TERM; sleep 300' & echo "pid $!"
echo "pid $$"
sleep 300
"""


def pids_in(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"^pid (\d+)$", text, re.MULTILINE)]


async def test_timeout_kills_the_whole_process_group(pool: Pool, db_url: str) -> None:
    node = shell_node("slow", code=PIDS_CODE, timeout_s=1)
    version = await save(pool, flow("timeout", [node]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    text = await log_text(pool, iid, "slow")
    pids = pids_in(text)
    assert len(pids) == 4
    assert "[sluice] timed out after 1s; process group killed" in text
    for pid in pids:
        await wait_gone(pid, 2.0)
    [attempt] = await attempts_of(pool, iid, "slow")
    assert (attempt["state"], attempt["reason"]) == ("failed", "timeout")


async def test_output_is_readable_while_the_node_runs(pool: Pool, db_url: str) -> None:
    version = await save(pool, flow("live", [shell_node("w", code="echo first; exec sleep 300")]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        await wait_for(
            pool,
            """SELECT 1 FROM attempt_logs l JOIN attempts a ON a.id = l.attempt_id
               WHERE a.state = 'running' AND l.data LIKE 'first%'""",
        )
        async with pool.acquire() as conn:
            chunks, finished = await read_log(conn, DEFAULT_WS, iid, "w", None)
            assert (chunks, finished) == ([(1, "first\n")], False)
            assert await read_log(conn, DEFAULT_WS, iid, "w", 1, after_seq=1) == ([], False)
            await terminate_instance(conn, DEFAULT_WS, iid)
        assert await wait_instance(pool, iid) == "terminated"


async def test_log_is_capped_with_a_visible_marker(pool: Pool, db_url: str) -> None:
    code = "head -c 5000 /dev/zero | tr '\\0' x; echo; echo end"
    version = await save(pool, flow("big", [shell_node("b", code=code)]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url, log_cap_bytes=1000):
        assert await wait_instance(pool, iid) == "succeeded"
    text = await log_text(pool, iid, "b")
    assert text == (
        "x" * 1000
        + "\n[sluice] log truncated at 1000 bytes\n"
        + "[sluice] 4005 more bytes of output were discarded\n"
    )


async def test_in_process_noop_succeeds_without_a_log(pool: Pool, db_url: str) -> None:
    version = await save(
        pool, flow("noop", [shell_node("n", code=" true\n"), shell_node("c", code=":")])
    )
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"
    assert await log_text(pool, iid, "n") == ""
    [attempt] = await attempts_of(pool, iid, "c")
    assert attempt["exit_code"] == 0


async def test_sql_nodes_log_status_and_first_rows(pool: Pool, db_url: str) -> None:
    await add_pg_connection(pool, db_url)
    nodes: list[dict[str, Any]] = [
        {
            "name": "create",
            "type": "sql",
            "connection": "db",
            "code": "CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 30)",
        },
        {
            "name": "insert",
            "type": "sql",
            "connection": "db",
            "upstream": ["create"],
            "code": "INSERT INTO t VALUES (100), (101)",
        },
        {
            "name": "select",
            "type": "sql",
            "connection": "db",
            "upstream": ["insert"],
            "code": "SELECT a, a * 2 AS double FROM t ORDER BY a",
        },
        {"name": "broken", "type": "sql", "connection": "db", "code": "SELECT * FROM missing"},
    ]
    version = await save(pool, flow("sql", nodes))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    assert await log_text(pool, iid, "create") == "[sluice] INSERT 0 30\n"
    assert await log_text(pool, iid, "insert") == "[sluice] INSERT 0 2\n"
    rows = (await log_text(pool, iid, "select")).splitlines()
    assert rows[0] == "a\tdouble"
    assert rows[1:21] == [f"{a}\t{a * 2}" for a in range(1, 21)]
    assert rows[21:] == ["[sluice] 32 rows (first 20 shown)"]
    broken = await log_text(pool, iid, "broken")
    assert 'relation "missing" does not exist' in broken
    [attempt] = await attempts_of(pool, iid, "broken")
    assert attempt["reason"] == "error"


@pytest.mark.parametrize(
    ("query", "final", "last_line"),
    [
        ("SELECT 'yes'", "succeeded", "[sluice] probe 1: condition met"),
        (
            "SELECT count(*) FROM pg_class WHERE relname = 'never_there'",
            "failed",
            "[sluice] timed out after 0.5s; the condition did not hold in time",
        ),
    ],
)
async def test_sql_check_waits_for_a_truthy_value(
    pool: Pool, db_url: str, query: str, final: str, last_line: str
) -> None:
    await add_pg_connection(pool, db_url)
    node = {
        "name": "c",
        "type": "check",
        "check": {"kind": "sql", "connection": "db", "query": query},
        "interval_s": 0.1,
        "timeout_s": 0.5,
    }
    version = await save(pool, flow("check", [node]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == final
    assert (await log_text(pool, iid, "c")).splitlines()[-1] == last_line


async def test_unknown_connection_fails_the_node(pool: Pool, db_url: str) -> None:
    node = {"name": "s", "type": "sql", "connection": "nope", "code": "SELECT 1"}
    version = await save(pool, flow("noconn", [node]))
    [iid] = await enqueue(pool, version)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "failed"
    assert "connection 'nope' not found" in await log_text(pool, iid, "s")


async def test_trigger_message_file_holds_json(pool: Pool, db_url: str) -> None:
    message = {"data": {"s3": {"object": {"key": "in/ü.csv"}}}, "quote": "'\"$(id)"}
    code = (
        "import json, os\n"
        "print(json.dumps(json.load(open(os.environ['SLUICE_TRIGGER_MESSAGE_FILE']))))"
    )
    version = await save(pool, flow("msg", [python_node("p", code)]))
    [iid] = await enqueue(pool, version, trigger_message=message)
    async with running_executor(db_url):
        assert await wait_instance(pool, iid) == "succeeded"
    assert json.loads(await log_text(pool, iid, "p")) == message
