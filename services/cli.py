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
        from shared.db.connections import open_secrets

        conn = await connect(settings.database_url)
        try:
            applied = await migrate(conn)
            # SQL cannot encrypt: secrets stored before sealing existed are sealed here.
            await open_secrets(conn, settings)
            return applied
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


def _cmd_rotate_secrets(args: argparse.Namespace) -> int:
    from shared.db.connections import rotate
    from shared.db.pool import connect
    from shared.secret_box import SecretKeyError, generate_key

    if args.new_key:
        print(generate_key())
        return 0

    settings = load_settings()
    if not settings.database_url:
        raise SettingsError("invalid configuration: SLUICE_DATABASE_URL: must be set")
    box = settings.secret_box()

    async def go() -> int:
        conn = await connect(settings.database_url)
        try:
            async with conn.transaction():
                return await rotate(conn, box)
        finally:
            await conn.close()

    try:
        count = asyncio.run(go())
    except SecretKeyError as exc:
        raise SettingsError(f"invalid configuration: {exc}") from None
    print(f"re-sealed {count} connection secret(s) with the first key of SLUICE_SECRET_KEY")
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    from services.dev.command import run_dev

    return run_dev(reset=args.reset)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="`sluice COMMAND --help` tells more"
    )
    dev = sub.add_parser("dev", help="run everything locally on embedded PostgreSQL, Kafka and S3")
    dev.add_argument("--reset", action="store_true", help="wipe .sluice/ state first")
    dev.set_defaults(func=_cmd_dev)
    run = sub.add_parser("run", help="run one service")
    run.add_argument("service", choices=list(SERVICES), help="which service")
    run.set_defaults(func=_cmd_run)
    mig = sub.add_parser("migrate", help="apply database migrations (SLUICE_DATABASE_URL)")
    mig.set_defaults(func=_cmd_migrate)
    rot = sub.add_parser(
        "rotate-secrets",
        help="re-seal connection secrets with the first key of SLUICE_SECRET_KEY ('new,old')",
    )
    rot.add_argument("--new-key", action="store_true", help="print a fresh key and exit")
    rot.set_defaults(func=_cmd_rotate_secrets)
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
