"""`sluice dev`: every service in one process on embedded servers under `.sluice/`."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from services.registry import ServiceRun, available_services, load_service
from shared.db import tokens as token_repo
from shared.db.migrate import migrate
from shared.db.pool import connect
from shared.embedded.postgres import EmbeddedPostgres
from shared.lifecycle import install_signal_handlers, run_until_stopped
from shared.logging import configure
from shared.settings import Settings, load_settings

log = structlog.get_logger("sluice.dev")
STATE_DIR = Path(".sluice")


def _dev_token(state: Path) -> str:
    """SLUICE_BOOTSTRAP_TOKEN, else a token generated once and kept in .sluice/token."""
    given = os.environ.get("SLUICE_BOOTSTRAP_TOKEN")
    if given:
        return given
    path = state / "token"
    if path.exists():
        return path.read_text().strip()
    token = "slc_dev_" + secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


async def _prepare_database(dsn: str, token: str) -> None:
    conn = await connect(dsn)
    try:
        await migrate(conn)
        await token_repo.ensure(conn, 1, "bootstrap", "admin", token)
    finally:
        await conn.close()


async def _serve(settings: Settings, services: list[str]) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    mains = [_bind(load_service(name), settings) for name in services]
    print(_banner(settings, services), flush=True)
    if mains:
        await run_until_stopped(stop, *mains)
    else:
        await stop.wait()
    log.info("dev_stopped")


def _bind(run: ServiceRun, settings: Settings) -> Callable[[asyncio.Event], Awaitable[None]]:
    async def main(stop: asyncio.Event) -> None:
        await run(settings, stop)

    return main


def _banner(settings: Settings, services: list[str]) -> str:
    token = settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else ""
    lines = [
        "",
        "sluice dev is ready",
        f"  database:  {settings.database_url}",
        f"  services:  {', '.join(services) or '(none)'}",
        f"  API:       http://127.0.0.1:{settings.api_port}/api/v1   (docs: /docs)",
        f"  token:     {token}",
        f"  export SLUICE_API_URL=http://127.0.0.1:{settings.api_port} SLUICE_TOKEN={token}",
        "  Ctrl-C stops everything; state persists in .sluice/ (sluice dev --reset wipes it)",
        "",
    ]
    return "\n".join(lines)


def run_dev(*, reset: bool = False, state: Path = STATE_DIR) -> int:
    """Start embedded PostgreSQL, migrate, run every available service until Ctrl-C."""
    if reset and state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    configure(
        os.environ.get("SLUICE_LOG_FORMAT", "console"), os.environ.get("SLUICE_LOG_LEVEL", "info")
    )
    postgres = EmbeddedPostgres(state.resolve() / "pg")
    dsn = postgres.start()
    try:
        token = _dev_token(state)
        asyncio.run(_prepare_database(dsn, token))
        settings = load_settings(database_url=dsn, bootstrap_token=token)
        asyncio.run(_serve(settings, available_services()))
    finally:
        postgres.stop()
    return 0
