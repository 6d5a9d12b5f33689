"""`sluice dev` and its ports: a taken port is one line naming it and its variable, exit 1, no
traceback, nothing started; "ready" is printed only once every server accepts connections."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from services.dev.servers.process import free_port
from tests.e2e.test_dev import dev_process, read_banner

SLUICE = str(Path(sys.executable).with_name("sluice"))
VARIABLES = (
    "SLUICE_DEV_KAFKA_PORT",
    "SLUICE_DEV_S3_PORT",
    "SLUICE_API_PORT",
    "SLUICE_WEBHOOK_PORT",
    "SLUICE_METRICS_PORT",
)


def free_ports() -> dict[str, str]:
    return {name: str(free_port()) for name in VARIABLES}


@contextmanager
def held(port: int, host: str = "127.0.0.1") -> Iterator[socket.socket]:
    """Another program listening on `port`."""
    sock = socket.socket()
    sock.bind((host, port))
    sock.listen(1)
    try:
        yield sock
    finally:
        sock.close()


async def sluice_dev(cwd: Path, ports: dict[str, str]) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "AWS_"))}
    env.update(ports)
    proc = await asyncio.create_subprocess_exec(
        SLUICE,
        "dev",
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("variable", VARIABLES)
async def test_a_taken_port_is_one_line_naming_it_and_its_variable(
    tmp_path: Path, variable: str
) -> None:
    ports = free_ports()
    with held(int(ports[variable])):
        code, out, err = await sluice_dev(tmp_path, ports)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sluice dev: port {ports[variable]} (")
    assert f"set {variable} to a free port" in lines[0]
    assert "Traceback" not in err and "ready" not in out
    # Nothing was started: no embedded PostgreSQL, broker or S3 left behind or even begun.
    assert not (tmp_path / ".sluice" / "pg").exists()


async def test_a_port_given_to_two_servers_is_refused_naming_both_variables(
    tmp_path: Path,
) -> None:
    ports = free_ports()
    ports["SLUICE_WEBHOOK_PORT"] = ports["SLUICE_API_PORT"]
    code, _, err = await sluice_dev(tmp_path, ports)
    assert code == 1
    (line,) = err.strip().splitlines()
    assert "SLUICE_API_PORT" in line and "SLUICE_WEBHOOK_PORT" in line


@pytest.mark.timeout(400)
async def test_ready_means_every_server_accepts_connections(tmp_path: Path) -> None:
    async with dev_process(tmp_path) as (proc, lines):
        try:
            banner = await read_banner(proc, lines)
        except AssertionError as exc:
            stderr = (tmp_path / "dev.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}\nstderr:\n{stderr}") from None
        assert "sluice dev is ready" in banner
        env = psutil.Process(proc.pid).environ()
        for variable in VARIABLES:
            port = int(env[variable])
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
        proc.send_signal(2)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
