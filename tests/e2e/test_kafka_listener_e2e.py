"""Kafka message → instance → node output, with `sluice run kafka-listener` as a real process.

The executor runs in this process; messages are produced by the test or by `sluice produce`.
Crash recovery is tested by SIGKILL at the worst moment: after the intake transaction committed,
before the offsets did (the listener's fault-injection knob does the killing, deterministically).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.dev.servers.kafka import EmbeddedKafka, create_topics
from shared.models.triggers import KafkaTriggerSpec
from shared.models.workflows import WorkflowSpec
from tests.factories import add_trigger, add_workflow, workflow
from tests.integration.kafka_support import TopicFactory
from tests.integration.kafka_support import group_id as new_group
from tests.support.executor import running_executor, wait_gone
from tests.support.kafka_listener import (
    ROOT,
    SLUICE,
    Pool,
    bind,
    committed,
    eventually,
    instance_count,
    listener_env,
    listener_process,
    outcomes_by_ref,
    send,
    wait_committed,
    wait_events,
)

EXAMPLE = ROOT / "examples" / "kafka_user_behavior"
PROCESS_WAIT_S = 30.0

PRINT_MESSAGE = """\
import json, os
with open(os.environ["SLUICE_TRIGGER_MESSAGE_FILE"], encoding="utf-8") as file:
    message = json.load(file)
print("key=" + message["key"], "value=" + message["value"], "id=" + message["headers"]["id"])
"""


@asynccontextmanager
async def executor(db_url: str) -> AsyncIterator[None]:
    """The executor in this process, started before the test spawns any process: when it starts
    it installs its own child watcher, and Python warns (an error here) if the watcher it
    replaces still waits for a child."""
    async with running_executor(db_url):
        await asyncio.sleep(0)  # one loop step: the executor task's synchronous start
        yield


async def node_output(pool: Pool, instance_id: int) -> str:
    rows = await pool.fetch(
        "SELECT l.data FROM attempt_logs l JOIN attempts a ON a.id = l.attempt_id "
        "JOIN node_instances n ON n.id = a.node_instance_id "
        "WHERE n.instance_id = $1 ORDER BY n.name, a.attempt, l.seq",
        instance_id,
    )
    return "".join(r["data"] for r in rows)


async def finished(pool: Pool, count: int) -> list[Any]:
    async def done() -> list[Any] | None:
        rows = await pool.fetch("SELECT * FROM instances ORDER BY id")
        final = [r for r in rows if r["state"] in ("succeeded", "failed", "terminated")]
        return list(rows) if len(final) >= count else None

    return await eventually(done, timeout_s=60)


async def test_a_message_runs_the_workflow_whose_node_prints_it(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    topic = await kafka_topics()
    spec = workflow(
        "print_message",
        trigger="kt",
        nodes=[{"name": "print", "type": "python", "code": PRINT_MESSAGE, "upstream": []}],
    )
    await bind(pool, topic.name, workflow_spec=spec)
    group = new_group()
    async with (
        executor(db_url),
        listener_process(db_url, kafka_broker, group, tmp_path / "listener.log") as listener,
    ):
        [offset] = await send(
            kafka_broker, topic.name, [b'{"order": 7}'], keys=[b"k-7"], headers=[[("id", b"m-7")]]
        )
        [instance] = await finished(pool, 1)
        await wait_committed(kafka_broker, group, topic.name, offset + 1)
        # SIGTERM: the listener drains, leaves its group and exits cleanly.
        listener.send_signal(signal.SIGTERM)
        async with asyncio.timeout(PROCESS_WAIT_S):
            assert await listener.wait() == 0
    assert instance["state"] == "succeeded"
    assert await node_output(pool, instance["id"]) == 'key=k-7 value={"order": 7} id=m-7\n'


async def test_sigkill_between_admission_and_commit_loses_nothing_and_duplicates_nothing(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name)
    offsets = await send(
        kafka_broker, topic.name, [json.dumps({"n": n}).encode() for n in range(20)]
    )
    group = new_group()
    log = tmp_path / "listener.log"
    async with listener_process(
        db_url, kafka_broker, group, log, SLUICE_KAFKA_FAULT_KILL_AFTER_ADMIT="1"
    ) as crashing:
        await wait_gone(crashing.pid, PROCESS_WAIT_S)
        assert await crashing.wait() == -signal.SIGKILL
    admitted_before = await instance_count(pool)
    assert admitted_before >= 1  # the first batch's transaction committed...
    assert await committed(kafka_broker, group, topic.name) is None  # ...its offsets did not
    assert "kafka_fault_injection_kill" in log.read_text()

    async with listener_process(db_url, kafka_broker, group, log):
        more = await send(kafka_broker, topic.name, [b'{"n": 20}'])
        await wait_events(pool, len(offsets) + 1 + admitted_before)
        await wait_committed(kafka_broker, group, topic.name, more[-1] + 1)
    numbers = sorted(
        json.loads(r["value"])["n"]
        for r in await pool.fetch("SELECT trigger_message->>'value' AS value FROM instances")
    )
    assert numbers == list(range(21))
    # The batch admitted before the crash came again and was recorded as duplicates.
    kinds = {ref: [kind for kind, _ in seen] for ref, seen in (await outcomes_by_ref(pool)).items()}
    replayed = {ref for ref, seen in kinds.items() if seen == ["admitted", "duplicate"]}
    assert len(replayed) == admitted_before
    assert all(seen == ["admitted"] for ref, seen in kinds.items() if ref not in replayed)


def load_example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLE / name).read_text())
    return loaded


def sluice_produce(broker: EmbeddedKafka, *args: str) -> list[str]:
    return [SLUICE, "produce", *args, "--bootstrap", broker.bootstrap, "--json"]


async def run_cli(command: list[str], env: dict[str, str], stdin: bytes = b"") -> str:
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=str(ROOT),
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(PROCESS_WAIT_S):
        out, err = await proc.communicate(stdin)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_dataworks_user_behavior_example_end_to_end(
    pool: Pool, db_url: str, kafka_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    trigger = KafkaTriggerSpec.model_validate(load_example("trigger.yaml"))
    flow = WorkflowSpec.model_validate(load_example("workflow.yaml"))
    async with pool.acquire() as conn:
        await add_trigger(conn, trigger)
        await add_workflow(conn, flow)
    await create_topics(kafka_broker.bootstrap, [trigger.topic])
    group = new_group()
    env = listener_env(db_url, kafka_broker, group)
    async with (
        executor(db_url),
        listener_process(db_url, kafka_broker, group, tmp_path / "listener.log"),
    ):
        (tmp_path / "purchase.json").write_text(
            '{"user_id": "u1002", "action_type": "purchase", "item": "book", "amount": 12.5}'
        )
        sent = [
            await run_cli(
                sluice_produce(
                    kafka_broker,
                    trigger.topic,
                    '{"user_id": "u1001", "action_type": "login", "device": "phone"}',
                    "--key",
                    "u1001",
                ),
                env,
            ),
            await run_cli(
                sluice_produce(kafka_broker, trigger.topic, f"@{tmp_path / 'purchase.json'}"),
                env,
            ),
            await run_cli(
                sluice_produce(
                    kafka_broker, trigger.topic, "@-", "--header", "source=web", "--header", "x=1"
                ),
                env,
                stdin=b'{"user_id": "u1001", "action_type": "logout"}',
            ),
        ]
        landed = [json.loads(line) for line in sent]
        await wait_events(pool, 3, subject=trigger.topic)
        instances = await finished(pool, 2)
        await wait_committed(kafka_broker, group, trigger.topic, landed[-1]["offset"] + 1)
    assert [i["state"] for i in instances] == ["succeeded", "succeeded"]
    outputs = [await node_output(pool, i["id"]) for i in instances]
    first, second, third = (f"{trigger.topic}/{m['partition']}/{m['offset']}" for m in landed)
    assert outputs == [
        f"login: user u1001 signed in from phone\nmessage {first}\n",
        f"purchase: user u1002 bought book for 12.5\nmessage {second}\n",
    ]
    found = await outcomes_by_ref(pool)
    assert [found[ref][0][0] for ref in (first, second, third)] == [
        "admitted",
        "admitted",
        "filtered",
    ]
    logout = await pool.fetchval("SELECT payload FROM events WHERE ref = $1", third)
    assert logout["headers"] == {"source": "web", "x": "1"}


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["t", "v", "--header", "novalue"], "header 'novalue' is not name=value"),
        (["t", "@/nonexistent/file"], "/nonexistent/file"),
    ],
)
async def test_produce_rejects_bad_input_with_exit_code_2(args: list[str], stderr: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        SLUICE,
        "produce",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(PROCESS_WAIT_S):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert stderr in err.decode()


async def test_produce_reports_an_unreachable_broker_with_exit_code_1() -> None:
    proc = await asyncio.create_subprocess_exec(
        SLUICE,
        "produce",
        "t",
        "v",
        "--bootstrap",
        "127.0.0.1:1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Resource warnings shown: a producer left unclosed would print one.
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    async with asyncio.timeout(PROCESS_WAIT_S):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    # One line, in the shape of every sluice command's errors, and no library noise after it.
    [line] = err.decode().splitlines()
    assert line.startswith("error: 127.0.0.1:1: KafkaConnectionError: Unable to bootstrap")
