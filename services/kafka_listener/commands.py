"""`sluice produce TOPIC VALUE`: send one Kafka message, e.g. to trigger a workflow.

Talks to the brokers of `SLUICE_KAFKA_BOOTSTRAP` (with its TLS/SASL settings), or `--bootstrap`;
with neither, to the embedded broker of `sluice dev` (127.0.0.1:$SLUICE_DEV_KAFKA_PORT, default
19092):

    sluice produce user-behavior-topic '{"user_id": "u1", "action_type": "login"}'
    sluice produce user-behavior-topic --key u1 --header message-id=m-1 @event.json
    echo '{"action_type": "purchase"}' | sluice produce user-behavior-topic @-

Prints where the message landed (topic, partition, offset). Exit codes: 0 sent, 1 the broker
refused or could not be reached, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from shared.client.commands import add_documented, run_local, say_error
from shared.kafka.config import client_options
from shared.settings import KafkaSettings, SettingsError, load_settings

DEV_KAFKA_PORT = 19092
_SEND_TIMEOUT_S = 30.0


class InputError(ValueError):
    """Bad command-line input (exit code 2)."""


def parse_headers(items: list[str]) -> list[tuple[str, bytes]]:
    """`name=value` items as Kafka headers, in order (a name may repeat, as Kafka allows)."""
    headers = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"header {item!r} is not name=value")
        headers.append((name, value.encode()))
    return headers


def read_value(value: str, stdin: Any = None) -> bytes:
    """The message value: the text itself, `@path` for a file's bytes, `@-` for standard input."""
    if value == "@-":
        source = stdin if stdin is not None else sys.stdin.buffer
        data: bytes = source.read()
        return data
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from None
    return value.encode()


def producer_settings(bootstrap: str | None) -> KafkaSettings:
    """Kafka settings from the environment; `bootstrap` or the dev broker when none is set."""
    settings: KafkaSettings = load_settings()
    if bootstrap:
        return settings.model_copy(update={"kafka_bootstrap": bootstrap})
    if not settings.kafka_bootstrap:
        port = os.environ.get("SLUICE_DEV_KAFKA_PORT") or str(DEV_KAFKA_PORT)
        return settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"})
    return settings


async def produce(
    settings: KafkaSettings,
    topic: str,
    value: bytes,
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
) -> dict[str, Any]:
    """Send one message and wait for the broker's acknowledgement; returns where it landed."""
    from aiokafka import AIOKafkaProducer

    # Not idempotent: the embedded broker (Tansu) does not support idempotent producers.
    client = AIOKafkaProducer(
        enable_idempotence=False,
        request_timeout_ms=int(_SEND_TIMEOUT_S * 1000),
        **client_options(settings),
    )
    try:
        async with asyncio.timeout(_SEND_TIMEOUT_S):
            # start() inside the try: a producer that failed to start is still closed, else
            # its finalizer prints "Unclosed AIOKafkaProducer" after the error line.
            await client.start()
            sent = await client.send_and_wait(
                topic, value, key=key, headers=headers or [], partition=partition
            )
    finally:
        await client.stop()
    return {
        "topic": sent.topic,
        "partition": sent.partition,
        "offset": sent.offset,
        "timestamp": sent.timestamp,
    }


def _cmd_produce(args: argparse.Namespace) -> int:
    try:
        headers = parse_headers(args.header or [])
        value = read_value(args.value)
        settings = producer_settings(args.bootstrap)
        client_options(settings)
    except (InputError, SettingsError) as exc:
        say_error(str(exc))
        return 2
    key = None if args.key is None else args.key.encode()
    # The failure is reported below in one line; aiokafka's own error lines would repeat it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    return run_local(
        produce(settings, args.topic, value, key=key, headers=headers, partition=args.partition),
        settings.kafka_bootstrap,
        args.json,
        lambda sent: (
            f"sent to {sent['topic']} partition {sent['partition']} "
            f"offset {sent['offset']} ({len(value)} bytes)"
        ),
    )


def register(subparsers: Any) -> None:
    """Add `sluice produce` to the CLI."""
    parser = add_documented(
        subparsers,
        "produce",
        "send one Kafka message (to the sluice dev broker unless configured otherwise)",
        __doc__,
    )
    parser.add_argument("topic", help="topic to send to")
    parser.add_argument(
        "value", help="the message value: text, @path for a file's bytes, @- for standard input"
    )
    parser.add_argument("--key", help="message key (UTF-8 text)")
    parser.add_argument(
        "--header",
        action="append",
        metavar="NAME=VALUE",
        help="a header; repeat for more (a name may repeat)",
    )
    parser.add_argument("--partition", type=int, help="partition (default: chosen by the key)")
    parser.add_argument(
        "--bootstrap",
        help=f"host:port of the brokers (default: SLUICE_KAFKA_BOOTSTRAP, else "
        f"127.0.0.1:{DEV_KAFKA_PORT} of sluice dev)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=_cmd_produce)
