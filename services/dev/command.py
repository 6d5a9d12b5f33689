"""`sluice dev`: every service in one process on embedded servers under `.sluice/`.

Embedded parts, all children of this process and stopped on Ctrl-C / SIGTERM:
PostgreSQL (pgserver), a Kafka-protocol broker (Tansu; librdkafka's mock as fallback) and an
S3+SQS endpoint (moto) whose trigger buckets notify a dev queue the storage listener reads.
The same `run(settings, stop)` functions as the separate services run side by side.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import structlog

from services.dev import buckets
from services.dev.examples import (
    EXAMPLES_BUCKET,
    EXAMPLES_CONNECTION,
    EXAMPLES_S3_CONNECTION,
    ensure_examples_connection,
    ensure_examples_s3,
    examples_dir,
    load_examples,
)
from services.dev.ports import (
    DevPort,
    DevPorts,
    PortError,
    accepting,
    check_free,
    configured,
    dev_ports,
)
from services.dev.servers.kafka import EmbeddedKafka
from services.dev.servers.postgres import EmbeddedPostgres
from services.dev.servers.s3 import EmbeddedS3
from services.registry import SERVICES, ServiceRun, load_service
from shared.db.migrate import migrate
from shared.db.pool import connect
from shared.db.queries import load
from shared.lifecycle import install_signal_handlers, run_until_stopped
from shared.logging import configure
from shared.probes import READINESS, serve_probes
from shared.secret_box import SecretBox, generate_key
from shared.settings import Settings, load_settings

log = structlog.get_logger("sluice.dev")
STATE_DIR = Path(".sluice")
Main = Callable[[asyncio.Event], Awaitable[None]]


def _secret(state: Path, env_name: str, file_name: str, prefix: str) -> str:
    """The variable's value, else a value generated once and kept in `.sluice/<file_name>`."""
    given = os.environ.get(env_name, "").split(",")[0].strip()
    if given:
        return given
    path = state / file_name
    if path.exists():
        return path.read_text().strip()
    value = prefix + secrets.token_urlsafe(24)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def _secret_key(state: Path) -> str:
    """The key sealing connection secrets: generated once, kept in `.sluice/secret-key` (0600)."""
    path = state / "secret-key"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(generate_key() + "\n")
    return path.read_text().strip()


async def _prepare_s3(dsn: str, s3: EmbeddedS3) -> None:
    conn = await connect(dsn)
    try:
        await ensure_examples_s3(conn, s3, SecretBox.from_text(os.environ.get("SLUICE_SECRET_KEY")))
    finally:
        await conn.close()


def postgres_lines(dsn: str) -> list[str]:
    """How to reach the embedded PostgreSQL: its DSN, socket directory and user."""
    socket_dir = (parse_qs(urlsplit(dsn).query).get("host") or [str(STATE_DIR / "pg")])[0]
    return [
        f"  PostgreSQL: {dsn}",
        f"             (Unix socket in {socket_dir}, user postgres, no password; the connection "
        f"{EXAMPLES_CONNECTION} is its database sluice_examples:",
        f"             psql -h {socket_dir} -U postgres sluice_examples)",
    ]


async def _prepare_database(dsn: str, token: str) -> list[str]:
    conn = await connect(dsn)
    try:
        await migrate(conn)
        from shared.db import tokens as token_repo

        await token_repo.ensure(conn, 1, "bootstrap", "admin", token)
        box = SecretBox.from_text(os.environ.get("SLUICE_SECRET_KEY"))
        await ensure_examples_connection(conn, dsn, box)
        directory = examples_dir()
        return await load_examples(conn, directory) if directory else []
    finally:
        await conn.close()


def banner(
    settings: Settings,
    services: list[str],
    ports: DevPorts,
    examples: list[str],
    dsn: str = "",
) -> str:
    token = settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else ""
    webhook = settings.webhook_token_list[0] if settings.webhook_token_list else ""
    api = f"http://127.0.0.1:{settings.api_port}"
    exports = (
        f"export SLUICE_API_URL={api} SLUICE_TOKEN={token} "
        f"SLUICE_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} "
        f"SLUICE_S3_ENDPOINT=http://127.0.0.1:{ports.s3}"
    )
    lines = [
        "",
        "sluice dev is ready",
        f"  API:       {api}/api/v1   (OpenAPI docs: {api}/docs)",
        f"  console:   {api}/   (sign in with the token below)",
        f"  token:     {token}",
        f"  webhook:   http://127.0.0.1:{settings.webhook_port}/hooks/s3   (Bearer {webhook})",
        f"  Kafka:     {settings.kafka_bootstrap}    S3/SQS: http://127.0.0.1:{ports.s3}",
        f"  S3 keys:   access key {EmbeddedS3.access_key}, secret {EmbeddedS3.secret_key}, "
        f"region {EmbeddedS3.region} (connection {EXAMPLES_S3_CONNECTION}, bucket "
        f"{EXAMPLES_BUCKET})",
        *(postgres_lines(dsn) if dsn else []),
        f"  services:  {', '.join(services)}",
        f"  examples:  {', '.join(examples) or '(none found)'}",
        "",
        "In another terminal (from this directory):",
        f"  {exports}",
        "  # a Kafka message starts the user-behavior workflow",
        """  .venv/bin/sluice produce user-behavior-topic """
        """'{"user_id": "1001", "action_type": "login", "timestamp": 1688888888}'""",
        "  # a file upload starts the file-arrival workflow",
        "  echo 'id,name' > /tmp/a.csv && .venv/bin/sluice upload /tmp/a.csv s3://data/input/a.csv",
        "  # a manual run of the hello-world workflow",
        "  .venv/bin/sluice run-workflow hello_trigger_workflow --wait",
        "  # a value computed in shell, passed through python to sql (see docs/outputs.md)",
        "  .venv/bin/sluice run-workflow node_outputs_example --wait",
        "  .venv/bin/sluice outputs <INSTANCE_ID> store",
        "  # check and sync nodes: PostgreSQL -> CSV in S3 -> PostgreSQL (examples/check_sync)",
        "  .venv/bin/sluice run-workflow check_sync_example --wait",
        "  # watch and read",
        "  .venv/bin/sluice instances",
        "  .venv/bin/sluice logs <INSTANCE_ID> <NODE> --follow",
        "  .venv/bin/sluice events",
        "",
        "Ctrl-C stops everything; state persists in .sluice/ (sluice dev --reset wipes it).",
        "",
    ]
    return "\n".join(lines)


def stopping_line(rows: list[tuple[int, str]], total: int, drain_s: float) -> str:
    """What a stopping `sluice dev` waits for, for how long, and how not to wait."""
    if not total:
        return "stopping (no nodes running)"
    names = ", ".join(f"{instance}/{node}" for instance, node in rows)
    more = f" and {total - len(rows)} more" if total > len(rows) else ""
    return (
        f"stopping: waiting up to {drain_s:g}s for {total} running node(s) to finish "
        f"(instance/node: {names}{more}); press Ctrl-C again to stop at once"
    )


async def _say_what_stopping_waits_for(dsn: str, drain_s: float, stop: asyncio.Event) -> None:
    await stop.wait()
    try:
        conn = await connect(dsn)
        try:
            found = await conn.fetch(load(__file__)["running_nodes"])
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("dev_running_nodes_unknown", error=str(exc))
        return
    rows = [(int(r["instance_id"]), str(r["name"])) for r in found]
    total = int(found[0]["total"]) if found else 0
    # A plain line on stderr: this is for the person at the terminal, not for log collectors.
    print(stopping_line(rows, total, drain_s), file=sys.stderr, flush=True)


def _bind(run: ServiceRun, settings: Settings) -> Main:
    async def main(stop: asyncio.Event) -> None:
        await run(settings, stop)

    return main


async def _serve(
    dsn: str,
    state: Path,
    token: str,
    webhook_token: str,
    ports: DevPorts,
    listeners: list[DevPort],
) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    examples = await _prepare_database(dsn, token)
    kafka = EmbeddedKafka(ports.kafka, log_path=state / "kafka.log")
    s3 = EmbeddedS3(ports.s3, log_path=state / "s3.log")
    async with kafka, s3:
        await _prepare_s3(dsn, s3)
        queue = await buckets.dev_queue(s3)
        settings = load_settings(
            host=os.environ.get("SLUICE_HOST", "127.0.0.1"),
            database_url=dsn,
            bootstrap_token=token,
            webhook_tokens=os.environ.get("SLUICE_WEBHOOK_TOKENS") or webhook_token,
            kafka_bootstrap=kafka.bootstrap,
            sqs_queue_urls=queue.url,
            **s3.settings_overrides(),
        )
        services = list(SERVICES)
        mains = [_bind(load_service(name), settings) for name in services]

        async def wire_buckets(stop: asyncio.Event) -> None:
            await buckets.run(dsn, s3, stop, queue_arn=queue.arn)

        async def probes(stop: asyncio.Event) -> None:
            await serve_probes(dsn, "127.0.0.1", settings.metrics_port, stop)

        async def announce(stop: asyncio.Event) -> None:
            await _announce_when_ready(
                settings, services, ports, examples, listeners, stop, dsn=dsn
            )

        async def farewell(stop: asyncio.Event) -> None:
            await _say_what_stopping_waits_for(dsn, settings.drain_timeout_s, stop)

        await run_until_stopped(stop, *mains, wire_buckets, probes, announce, farewell)
    log.info("dev_stopped")


async def _announce_when_ready(
    settings: Settings,
    services: list[str],
    ports: DevPorts,
    examples: list[str],
    listeners: list[DevPort],
    stop: asyncio.Event,
    *,
    dsn: str = "",
) -> None:
    """Print the banner once every service reports ready and every server it starts accepts
    connections on its port, then stay until `stop`."""
    import httpx

    api = f"http://127.0.0.1:{settings.api_port}/readyz"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    async with httpx.AsyncClient(timeout=2) as client:
        while not stop.is_set():
            if loop.time() > deadline:
                waiting = [k for k, c in READINESS.snapshot().items() if not c.ok]
                log.warning("dev_not_ready", waiting_for=waiting or ["api"])
                break
            components = READINESS.snapshot()
            parts_ok = all(c.ok for c in components.values())
            try:
                api_ok = (await client.get(api)).status_code == 200
            except httpx.HTTPError:
                api_ok = False
            if parts_ok and api_ok:
                bound = await asyncio.gather(*(accepting(item) for item in listeners))
                if all(bound):
                    break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except TimeoutError:
                pass
    if not stop.is_set():
        print(banner(settings, services, ports, examples, dsn), flush=True)
    await stop.wait()


def run_dev(*, reset: bool = False, state: Path = STATE_DIR) -> int:
    """Start the embedded servers and every service until Ctrl-C / SIGTERM."""
    env = os.environ
    configure(env.get("SLUICE_LOG_FORMAT", "console"), env.get("SLUICE_LOG_LEVEL", "info"))
    try:
        ports = dev_ports()
        listeners = configured()
        check_free(listeners)
    except PortError as exc:
        print(f"sluice dev: {exc}", file=sys.stderr)
        return 1
    if reset and state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    state = state.resolve()
    # Fast consumer-group joins on the embedded broker (Tansu joins in session_timeout / 2).
    env.setdefault("SLUICE_KAFKA_SESSION_TIMEOUT_MS", "2000")
    env.setdefault("SLUICE_KAFKA_HEARTBEAT_INTERVAL_MS", "100")
    env.setdefault("SLUICE_STORAGE_KAFKA_SESSION_TIMEOUT_MS", "2000")
    # Local receivers (a webhook on localhost, a dev SMTP server) are what dev is for.
    env.setdefault("SLUICE_NOTIFY_ALLOW_PRIVATE", "true")
    env.setdefault("SLUICE_CONSOLE_URL", f"http://127.0.0.1:{env.get('SLUICE_API_PORT', '8080')}")
    token = _secret(state, "SLUICE_BOOTSTRAP_TOKEN", "token", "slc_dev_")
    webhook_token = _secret(state, "SLUICE_WEBHOOK_TOKENS", "webhook-token", "whk_dev_")
    env.setdefault("SLUICE_SECRET_KEY", _secret_key(state))
    postgres = EmbeddedPostgres(state / "pg")
    dsn = postgres.start()
    try:
        asyncio.run(_serve(dsn, state, token, webhook_token, ports, listeners))
    except (OSError, RuntimeError, ExceptionGroup) as exc:
        # A port taken between the check and the bind: the same one line as above.
        taken = _taken_port(listeners)
        if taken is None:
            raise
        log.error("dev_port_taken", error=type(exc).__name__)
        print(f"sluice dev: {taken}", file=sys.stderr)
        return 1
    finally:
        postgres.stop()
    return 0


def _taken_port(listeners: list[DevPort]) -> str | None:
    try:
        check_free(listeners)
    except PortError as exc:
        return str(exc)
    return None
