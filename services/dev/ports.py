"""The ports `sluice dev` listens on, checked before anything starts.

A taken port used to show up as a 40-line traceback after the "ready" banner. Checking every
port first gives one line naming the port and the variable that moves it; checking that each one
accepts connections before the banner makes "ready" mean every server is there.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from dataclasses import dataclass


class PortError(Exception):
    """A port `sluice dev` needs is unusable; `str()` is the one line to print."""


@dataclass(frozen=True)
class DevPort:
    """One server of `sluice dev`: where it listens and the variable that moves it."""

    what: str
    variable: str
    host: str
    port: int


def _port(variable: str, default: int, *, allow_zero: bool = False) -> int:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise PortError(f"invalid configuration: {variable}: not a port number: {raw!r}") from None
    if not (0 if allow_zero else 1) <= value < 65536:
        raise PortError(f"invalid configuration: {variable}: {value} is not a port number")
    return value


@dataclass(frozen=True)
class DevPorts:
    """Where the embedded broker and S3 listen (always on 127.0.0.1)."""

    kafka: int
    s3: int


def dev_ports() -> DevPorts:
    return DevPorts(
        kafka=_port("SLUICE_DEV_KAFKA_PORT", 19092), s3=_port("SLUICE_DEV_S3_PORT", 19000)
    )


def configured() -> list[DevPort]:
    """Every TCP port `sluice dev` binds, as configured by the environment."""
    host = os.environ.get("SLUICE_HOST", "").strip() or "127.0.0.1"
    servers = dev_ports()
    found = [
        DevPort("the Kafka broker", "SLUICE_DEV_KAFKA_PORT", "127.0.0.1", servers.kafka),
        DevPort("the S3/SQS endpoint", "SLUICE_DEV_S3_PORT", "127.0.0.1", servers.s3),
        DevPort("the API", "SLUICE_API_PORT", host, _port("SLUICE_API_PORT", 8080)),
        DevPort("the webhook", "SLUICE_WEBHOOK_PORT", host, _port("SLUICE_WEBHOOK_PORT", 8081)),
    ]
    metrics = _port("SLUICE_METRICS_PORT", 9090, allow_zero=True)
    if metrics:  # 0 turns the probe server off
        found.append(DevPort("the probes and metrics", "SLUICE_METRICS_PORT", "127.0.0.1", metrics))
    return found


def _bindable(host: str, port: int) -> OSError | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the servers bind: a port in TIME_WAIT is usable, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def check_free(ports: list[DevPort]) -> None:
    """PortError naming the first port that two servers share or that cannot be bound."""
    seen: dict[int, DevPort] = {}
    for item in ports:
        other = seen.get(item.port)
        if other is not None:
            raise PortError(
                f"port {item.port} is set for both {other.what} ({other.variable}) and "
                f"{item.what} ({item.variable}); set one of them to another port"
            )
        seen[item.port] = item
    for item in ports:
        problem = _bindable(item.host, item.port)
        if problem is None:
            continue
        if problem.errno == errno.EADDRINUSE:
            raise PortError(
                f"port {item.port} ({item.what}) is already in use; stop what holds it or set "
                f"{item.variable} to a free port"
            )
        raise PortError(
            f"cannot listen on {item.host}:{item.port} ({item.what}): {problem.strerror}; "
            f"set {item.variable} to another port"
        )


async def accepting(item: DevPort, timeout_s: float = 1.0) -> bool:
    """Whether a server accepts connections on the port now."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(item.host, item.port), timeout_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True
