"""`sluice`: run services, migrate, the embedded dev stack, and the API client commands."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from services.registry import COMMAND_MODULES, SERVICES, load_service
from shared.settings import SettingsError, load_settings


def _cmd_migrate(args: argparse.Namespace) -> int:
    from shared.db.migrate import migrate
    from shared.db.pool import connect
    from shared.logging import configure

    settings = load_settings()
    configure(settings.log_format, settings.log_level)
    if not settings.database_url:
        raise SettingsError("invalid configuration: SLUICE_DATABASE_URL: must be set")

    async def go() -> list[int]:
        conn = await connect(settings.database_url)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(go())
    print(f"applied migrations: {applied}" if applied else "schema is current")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from shared.lifecycle import install_signal_handlers, run_until_stopped
    from shared.logging import configure
    from shared.probes import serve_probes

    settings = load_settings()
    configure(settings.log_format, settings.log_level)
    if not settings.database_url:
        raise SettingsError("invalid configuration: SLUICE_DATABASE_URL: must be set")
    run = load_service(args.service)

    async def go() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)

        async def service(stop: asyncio.Event) -> None:
            await run(settings, stop)

        async def probes(stop: asyncio.Event) -> None:
            await serve_probes(settings.database_url, settings.host, settings.metrics_port, stop)

        await run_until_stopped(stop, service, probes)

    try:
        asyncio.run(go())
    except* SettingsError as group:
        # A service found its configuration invalid after start: one line, not a traceback.
        raise group.exceptions[0] from None
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    from services.dev import run_dev

    return run_dev(reset=args.reset)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = sub.add_parser("dev", help="run everything locally on embedded PostgreSQL, Kafka and S3")
    dev.add_argument("--reset", action="store_true", help="wipe .sluice/ state first")
    dev.set_defaults(func=_cmd_dev)
    run = sub.add_parser("run", help="run one service")
    run.add_argument("service", choices=list(SERVICES))
    run.set_defaults(func=_cmd_run)
    mig = sub.add_parser("migrate", help="apply database migrations (SLUICE_DATABASE_URL)")
    mig.set_defaults(func=_cmd_migrate)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
