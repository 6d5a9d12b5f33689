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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import TypeAdapter, ValidationError

from services.dev_ports import DevPort, PortError, accepting, check_free, configured
from services.registry import SERVICES, ServiceRun, load_service
from shared.db import connections as connection_repo
from shared.db import triggers as trigger_repo
from shared.db import workflows as workflow_repo
from shared.db.migrate import migrate
from shared.db.pool import Connection, connect
from shared.db.queries import load
from shared.embedded.kafka import EmbeddedKafka
from shared.embedded.postgres import EmbeddedPostgres, with_database
from shared.embedded.s3 import EmbeddedS3
from shared.lifecycle import install_signal_handlers, run_until_stopped
from shared.logging import configure
from shared.models.triggers import TriggerSpec
from shared.models.workflows import WorkflowSpec
from shared.probes import READINESS, serve_probes
from shared.secret_box import SecretBox, generate_key
from shared.settings import Settings, SettingsError, load_settings

log = structlog.get_logger("sluice.dev")
STATE_DIR = Path(".sluice")
_TRIGGERS: TypeAdapter[Any] = TypeAdapter(TriggerSpec)
Main = Callable[[asyncio.Event], Awaitable[None]]


@dataclass(frozen=True)
class DevPorts:
    kafka: int
    s3: int


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"invalid configuration: {name}: not a port number: {raw!r}") from None
    if not 0 < value < 65536:
        raise SettingsError(f"invalid configuration: {name}: {value} is not a port number")
    return value


def dev_ports() -> DevPorts:
    return DevPorts(
        kafka=_port("SLUICE_DEV_KAFKA_PORT", 19092), s3=_port("SLUICE_DEV_S3_PORT", 19000)
    )


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


def examples_dir() -> Path | None:
    """`examples/` of the working directory, else the one beside the installed sources."""
    for candidate in (Path("examples"), Path(__file__).resolve().parents[1] / "examples"):
        if candidate.is_dir():
            return candidate
    return None


def read_specs(directory: Path) -> list[dict[str, Any]]:
    """Every spec document in the YAML/JSON files below `directory`, triggers first."""
    docs: list[dict[str, Any]] = []
    for path in sorted(
        [*directory.rglob("*.yaml"), *directory.rglob("*.yml"), *directory.rglob("*.json")]
    ):
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            items = doc if isinstance(doc, list) else [doc]
            for item in items:
                if isinstance(item, dict):
                    docs.append({**item, "__file__": str(path)})
    docs.sort(key=lambda d: 0 if d.get("type") in ("kafka", "s3", "workflow") else 1)
    return docs


async def load_examples(conn: Connection, directory: Path) -> list[str]:
    """Create or update every example trigger and workflow in `default`, workflows published."""
    loaded: list[str] = []
    for doc in read_specs(directory):
        origin = doc.pop("__file__")
        try:
            if doc.get("type") in ("kafka", "s3", "workflow"):
                trigger = _TRIGGERS.validate_python(doc)
                await trigger_repo.upsert(conn, "default", 1, trigger)
                loaded.append(f"trigger {trigger.name}")
            else:
                spec = WorkflowSpec.model_validate(doc)
                await workflow_repo.save(conn, 1, spec, publish=True)
                loaded.append(f"workflow {spec.name}")
        except (ValidationError, ValueError) as exc:
            log.warning("example_rejected", file=origin, error=str(exc).splitlines()[0])
    return loaded


EXAMPLES_CONNECTION = "examples_pg"


async def ensure_examples_connection(conn: Connection, dsn: str, box: SecretBox) -> None:
    """The `examples_pg` postgres connection of workspace `default`, to a database of its own on
    the embedded server, for the examples' sql nodes."""
    queries = load(__file__)
    if not await conn.fetchval(queries["examples_database_exists"]):
        await conn.execute(queries["create_examples_database"])
    spec = connection_repo.ConnectionSpec(
        name=EXAMPLES_CONNECTION,
        kind="postgres",
        config={"dsn": with_database(dsn, "sluice_examples")},
    )
    await connection_repo.upsert(conn, 1, spec, box)


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


def banner(settings: Settings, services: list[str], ports: DevPorts, examples: list[str]) -> str:
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
        "  # watch and read",
        "  .venv/bin/sluice instances",
        "  .venv/bin/sluice logs <INSTANCE_ID> <NODE> --follow",
        "  .venv/bin/sluice events",
        "",
        "Ctrl-C stops everything; state persists in .sluice/ (sluice dev --reset wipes it).",
        "",
    ]
    return "\n".join(lines)


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
        from services.storage_listener import dev_buckets

        queue = await dev_buckets.dev_queue(s3)
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

        async def buckets(stop: asyncio.Event) -> None:
            await dev_buckets.run(settings, stop, queue_arn=queue.arn)

        async def probes(stop: asyncio.Event) -> None:
            await serve_probes(dsn, "127.0.0.1", settings.metrics_port, stop)

        async def announce(stop: asyncio.Event) -> None:
            await _announce_when_ready(settings, services, ports, examples, listeners, stop)

        await run_until_stopped(stop, *mains, buckets, probes, announce)
    log.info("dev_stopped")


async def _announce_when_ready(
    settings: Settings,
    services: list[str],
    ports: DevPorts,
    examples: list[str],
    listeners: list[DevPort],
    stop: asyncio.Event,
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
        print(banner(settings, services, ports, examples), flush=True)
    await stop.wait()


def run_dev(*, reset: bool = False, state: Path = STATE_DIR) -> int:
    """Start the embedded servers and every service until Ctrl-C / SIGTERM."""
    env = os.environ
    configure(env.get("SLUICE_LOG_FORMAT", "console"), env.get("SLUICE_LOG_LEVEL", "info"))
    ports = dev_ports()
    listeners = configured()
    try:
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
