"""`console`: server time per console page with 10,000 instances, 100,000 events, 10,000
notifications and a 400-node DAG in the database.

Each page is requested `--repeat` times through the application's ASGI interface (no socket, so
the figure is the server's own time: routing, queries, layout and templating) after two warm-up
requests, signed in as the workspace admin. One JSON line per page with the median and p95 in
milliseconds and whether both are under the 100 ms target.

    python -m bench.console [--instances 10000] [--events 100000] [--notifications 10000]
                            [--nodes 400] [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.common import emit, fresh_database, postgres_server
from services.api.app import create_app
from services.api.console import session
from shared.db import tokens as token_repo
from shared.db import triggers as trigger_repo
from shared.db import workflows as workflow_repo
from shared.db.instances import NewInstance, create_instances
from shared.db.pool import connect
from shared.logging import configure as configure_logging
from shared.models.triggers import KafkaTriggerSpec
from shared.models.workflows import WorkflowSpec
from shared.settings import load_settings

TARGET_MS = 100.0
WS = 1
SMALL_WORKFLOWS = 20
TRIGGERS = 10


def big_spec(nodes: int) -> WorkflowSpec:
    """`nodes` shell nodes in layers of 20; each node depends on one or two of the layer above."""
    width = 20
    items: list[dict[str, Any]] = []
    for i in range(nodes):
        layer, pos = divmod(i, width)
        ups = []
        if layer:
            ups.append(f"n{(layer - 1) * width + pos}")
            if pos % 3 == 0:
                ups.append(f"n{(layer - 1) * width + (pos + 7) % width}")
        items.append({"name": f"n{i}", "type": "shell", "code": "true", "upstream": ups})
    return WorkflowSpec.model_validate({"name": "big", "type": "manual", "nodes": items})


def small_spec(index: int) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "name": f"wf{index:02d}",
            "type": "triggered",
            "trigger": f"t{index % TRIGGERS}",
            "nodes": [{"name": "a", "type": "shell", "code": "true"}],
        }
    )


SEED_INSTANCES = """
INSERT INTO instances (workspace_id, workflow_id, version, kind, state, cyctime, created_at,
                       started_at, finished_at)
SELECT 1, w.id, 1, 'triggered',
       (ARRAY['succeeded','succeeded','succeeded','failed','running','waiting'])[1 + g % 6],
       now() - g * interval '1 minute', now() - g * interval '1 minute',
       now() - g * interval '1 minute', now() - g * interval '1 minute' + interval '5 seconds'
FROM generate_series(1, $1) g
JOIN workflows w ON w.name = 'wf' || lpad((g % $2)::text, 2, '0') AND w.workspace_id = 1
"""
SEED_NODES = """
INSERT INTO node_instances (instance_id, name, type, state, priority, weight, resource_group,
                            upstream)
SELECT i.id, 'a', 'shell',
       CASE i.state WHEN 'waiting' THEN 'pending' WHEN 'running' THEN 'running' ELSE i.state END,
       1, 1, 'default', '{}'
FROM instances i LEFT JOIN node_instances n ON n.instance_id = i.id
WHERE n.id IS NULL
"""
SEED_EVENTS = """
WITH e AS (
  INSERT INTO events (workspace_id, source, subject, ref, received_at, payload)
  SELECT 1, 'kafka', 'topic' || (g % $2), 'topic/0/' || g, now() - g * interval '1 second',
         jsonb_build_object('topic', 'topic' || (g % $2), 'offset', g,
                            'value', '{"action_type": "login", "user": ' || g || '}')
  FROM generate_series(1, $1) g
  RETURNING id, subject
)
INSERT INTO event_outcomes (event_id, seq, trigger_id, trigger_name, workflow_name, outcome,
                            detail)
SELECT e.id, 0, t.id, t.name, NULL,
       (ARRAY['admitted','duplicate','filtered','filtered'])[1 + e.id % 4],
       CASE WHEN e.id % 4 >= 2 THEN 'filter value.action_type == ''login'' was false' END
FROM e JOIN triggers t ON t.subject = e.subject AND t.workspace_id = 1
"""

# Notifications over the instances, mostly sent, some retrying, some given up (`dead`); the big
# instance gets every 500th, so its page lists some too.
SEED_NOTIFICATIONS = """
INSERT INTO notifications (workspace_id, instance_id, node, event, rule_no, channel, rule,
                           message_id, state, attempts, last_error, created_at, sent_at)
SELECT 1, CASE WHEN g % 500 = 0 THEN $2 ELSE 1 + g % $3 END, 'a',
       (ARRAY['failure','success','retry','timeout'])[1 + g % 4], 0,
       (ARRAY['webhook','email','slack','feishu'])[1 + g % 4], '{}'::jsonb, gen_random_uuid(),
       (ARRAY['sent','sent','sent','sent','sent','sent','sent','pending','dead'])[1 + g % 9],
       1 + g % 8, CASE WHEN g % 9 >= 7 THEN 'HTTP 503 from receiver' END,
       now() - g * interval '1 second', CASE WHEN g % 9 < 7 THEN now() END
FROM generate_series(1, $1) g
"""


async def seed(
    dsn: str, instances: int, events: int, nodes: int, notifications: int
) -> tuple[str, int, int]:
    """Fill the database; the admin token, the big instance's id and one event's id."""
    conn = await connect(dsn)
    try:
        for t in range(TRIGGERS):
            spec = KafkaTriggerSpec(name=f"t{t}", type="kafka", topic=f"topic{t}")
            await trigger_repo.upsert(conn, "default", WS, spec)
        for w in range(SMALL_WORKFLOWS):
            await workflow_repo.save(conn, WS, small_spec(w), publish=True)
        saved = await workflow_repo.save(conn, WS, big_spec(nodes), publish=True)
        version = await workflow_repo.load_version(conn, saved.workflow.id, saved.version)
        await conn.execute(SEED_INSTANCES, instances - 1, SMALL_WORKFLOWS)
        await conn.execute(SEED_NODES)
        made = await create_instances(
            conn, [NewInstance(version=version, kind="api", cyctime=datetime.now(UTC))]
        )
        big = made[0]
        assert big is not None
        # Half the big DAG has run: succeeded attempts with parameters and outputs each.
        await conn.execute(
            """UPDATE node_instances SET state = CASE WHEN id % 2 = 0 THEN 'succeeded'
                                                      ELSE 'pending' END
               WHERE instance_id = $1""",
            big.id,
        )
        await conn.execute(
            """INSERT INTO attempts (node_instance_id, attempt, state, exit_code, lease_token,
                                     started_at, finished_at, parameters, outputs)
               SELECT id, 1, 'succeeded', 0, gen_random_uuid(),
                      now() - (id % 60) * interval '1 second', now(), '{"region": "eu"}',
                      jsonb_build_object('rows', id, 'path', 's3://lake/part-' || id)
               FROM node_instances WHERE instance_id = $1 AND state = 'succeeded'""",
            big.id,
        )
        await conn.execute(SEED_EVENTS, events, TRIGGERS)
        await conn.execute(SEED_NOTIFICATIONS, notifications, big.id, instances - 1)
        await conn.execute("ANALYZE")
        _, token = await token_repo.create(conn, WS, "bench", "admin")
        event_id = await conn.fetchval("SELECT max(id) FROM events")
        return token, big.id, int(event_id)
    finally:
        await conn.close()


async def measure(client: httpx.AsyncClient, path: str, repeat: int) -> dict[str, Any]:
    for _ in range(2):
        warm = await client.get(path)
        assert warm.status_code == 200, (path, warm.status_code, warm.text[:300])
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = await client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200
    times.sort()
    median = statistics.median(times)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {
        "scenario": "console",
        "page": path,
        "median_ms": round(median, 2),
        "p95_ms": round(p95, 2),
        "bytes": len(answer.content),
        "target_ms": TARGET_MS,
        "met": p95 < TARGET_MS,
    }


async def main(args: argparse.Namespace) -> None:
    # Only results on stdout: the per-request log lines are at info level.
    configure_logging("json", "warning")
    with postgres_server() as server:
        async with fresh_database(server, "sluice_bench_console") as dsn:
            token, big, event = await seed(
                dsn, args.instances, args.events, args.nodes, args.notifications
            )
            settings = load_settings(database_url=dsn, log_level="warning")
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport,
                    base_url="http://bench",
                    cookies={session.COOKIE: token},
                ) as client:
                    pages = [
                        "/",
                        "/workflows/big",
                        "/workflows/wf01",
                        "/instances",
                        "/instances?state=failed",
                        "/instances?workflow=wf03",
                        f"/instances/{big}",
                        f"/instances/{big}/live",
                        "/events",
                        "/events?outcome=filtered",
                        "/events?trigger=t3",
                        f"/events/{event}",
                        "/triggers",
                        "/resource-groups",
                        "/notifications",
                        "/notifications?state=dead",
                        f"/notifications?instance={big}",
                    ]
                    for path in pages:
                        result = await measure(client, path, args.repeat)
                        result.update(
                            instances=args.instances,
                            events=args.events,
                            notifications=args.notifications,
                            dag_nodes=args.nodes,
                        )
                        emit(result)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=30)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
