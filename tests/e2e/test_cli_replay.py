"""`sluice replay` end to end: the real client binary, the API, a Kafka listener carrying the job
out against a real broker, and PostgreSQL."""

from __future__ import annotations

import pytest

from services.api.replay_commands import bound_arg
from services.dev.servers.kafka import EmbeddedKafka
from shared.client.commands import UsageError
from tests.integration.kafka_support import TopicFactory
from tests.support.api import ApiServer, sluice_cli
from tests.support.kafka_listener import (
    Pool,
    bind,
    running_listener,
    send,
    wait_committed,
    wait_events,
)


@pytest.mark.timeout(180)
async def test_replay_wait_prints_the_counts_and_the_final_state(
    api_server: ApiServer,
    pool: Pool,
    db_url: str,
    kafka_broker: EmbeddedKafka,
    kafka_topics: TopicFactory,
) -> None:
    topic = await kafka_topics()
    await bind(pool, topic.name, trigger="kt")
    async with running_listener(
        db_url, kafka_broker, settings={"replay_poll_interval_s": 0.05}
    ) as listener:
        offsets = await send(kafka_broker, topic.name, [b"{}"] * 4)
        await wait_events(pool, 4)
        await wait_committed(kafka_broker, listener.group, topic.name, offsets[-1] + 1)
        end = offsets[-1] + 1
        missing = await sluice_cli(
            api_server, "replay", "kt", "--from", f"0:{offsets[0]}", "--to", f"0:{end}", "--wait"
        )
        assert missing.code == 0, missing.err
        lines = missing.out.strip().splitlines()
        replay_id = lines[0].split()[1]
        assert lines[0] == f"replay {replay_id} pending"
        assert f"replay {replay_id}: read 4, admitted 0, duplicate 4, filtered 0, other 0" in lines
        assert lines[-1] == f"replay {replay_id} succeeded"

        every = await sluice_cli(
            api_server,
            "replay",
            "kt",
            "--from",
            f"0:{offsets[0]}",
            "--to",
            f"0:{end}",
            "--mode",
            "all",
            "--wait",
            "--json",
        )
        assert every.code == 0, every.err
        shown = every.json()
        assert (shown["state"], shown["read"], shown["admitted"]) == ("succeeded", 4, 4)

        refused = await sluice_cli(
            api_server,
            "replay",
            "kt",
            "--from",
            "2026-11-02T00:00:00Z",
            "--to",
            "2026-11-01T00:00:00Z",
        )
        assert refused.code == 1
        assert "to: must be after from" in refused.err

    kinds = await pool.fetch("SELECT kind, count(*) AS n FROM instances GROUP BY kind ORDER BY 1")
    assert [(r["kind"], r["n"]) for r in kinds] == [("replay", 4), ("triggered", 4)]

    # `sluice instance` and `sluice event` name the replay and the original event.
    row = await pool.fetchrow(
        "SELECT i.id, e.id AS event_id, e.replay_of FROM instances i "
        "JOIN events e ON e.id = i.event_id WHERE i.kind = 'replay' ORDER BY i.id LIMIT 1"
    )
    assert row is not None and row["replay_of"] is not None
    instance = await sluice_cli(api_server, "instance", str(row["id"]))
    assert f"replay:    {shown['id']}\n" in instance.out
    assert f"original:  {row['replay_of']}\n" in instance.out
    event = await sluice_cli(api_server, "event", str(row["event_id"]))
    assert f"original:  {row['replay_of']}\n" in event.out
    assert f"replay {shown['id']} of event {row['replay_of']}" in event.out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:10", {"0": 10}),
        ("0:10, 3:7", {"0": 10, "3": 7}),
        ("2026-11-01T00:00:00Z", "2026-11-01T00:00:00Z"),
        ("2026-11-01T00:00:00+08:00", "2026-11-01T00:00:00+08:00"),
    ],
)
def test_bound_arg(text: str, expected: object) -> None:
    assert bound_arg("--from", text) == expected


def test_a_partition_given_twice_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--from: partition 0 is given twice"):
        bound_arg("--from", "0:1,0:2")
