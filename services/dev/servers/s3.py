"""Embedded S3 + SQS endpoint for `sluice dev` and the test suite: moto's server, a child process.

One moto server serves S3, SQS and SNS on one port, and delivers S3 bucket notifications to its
own SQS queues, which is what the storage listener's `sqs` source reads.

Typical use (asyncio)::

    async with EmbeddedS3(port=19000) as s3:              # or EmbeddedS3() for a free port
        async with s3.client("sqs") as sqs:
            queue = await ensure_queue(sqs, "sluice-dev")  # Queue(name, url, arn)
        async with s3.client("s3") as client:
            await wire_bucket(client, "data", queue.arn)   # bucket exists, notifies the queue
        settings = load_settings(**s3.settings_overrides(), sqs_queue_urls=queue.url)

moto accepts any credentials; `EmbeddedS3.access_key`/`secret_key` are what sluice hands to
clients. moto keeps everything in memory: objects and queues do not survive a restart. Like the
embedded Kafka broker, the server runs in its own process group and, on Linux, is killed by the
kernel when the thread that started it ends, so it never outlives sluice.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Self

from services.dev.servers.process import (
    ChildServer,
    die_with_parent,
    free_port,
    log_tail,
    stop_process,
)
from shared.settings import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY

REGION: Final = "us-east-1"
# What `sluice dev` wires every trigger bucket to: anything an s3 trigger may ask for.
NOTIFY_EVENTS: Final = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
NOTIFICATION_ID: Final = "sluice"

_PROBE_INTERVAL_S = 0.05
_AUTO_PORT_ATTEMPTS = 3


class EmbeddedS3Error(RuntimeError):
    """The embedded S3 server could not be started."""


@dataclass(frozen=True)
class Queue:
    """An SQS queue: `url` for consumers, `arn` for notification configurations."""

    name: str
    url: str
    arn: str


class EmbeddedS3(ChildServer):
    """moto's S3/SQS/SNS server on `host:port` as a child process.

    `async with EmbeddedS3() as s3` or `start()`/`stop()` (also `with`). Start it from a thread
    that lives as long as the server should (the event loop's thread in asyncio code).
    """

    access_key: Final = DEV_S3_ACCESS_KEY
    secret_key: Final = DEV_S3_SECRET_KEY
    region: Final = REGION

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        """Configure the server; nothing runs until it is started.

        `port`: where to listen (None: a free port). `log_path`: file receiving the server's
        output (None: a new file in the temporary directory, kept after stop).
        """
        self._requested_port = port
        self._host = host
        self._log_path = log_path
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None or self._process is None:
            raise RuntimeError("the embedded S3 server is not running")
        return self._port

    @property
    def endpoint(self) -> str:
        """`http://host:port` of the running server (S3, SQS and SNS alike)."""
        return f"http://{self._host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for `session.create_client(service, **options)`."""
        return {
            "endpoint_url": self.endpoint,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }

    def settings_overrides(self) -> dict[str, str]:
        """`load_settings(**overrides)` values pointing sluice's S3 clients at this server."""
        return {
            "s3_endpoint": self.endpoint,
            "s3_region": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def environment(self) -> dict[str, str]:
        """The same as environment variables, for child processes (`sluice run ...`)."""
        return {
            "SLUICE_S3_ENDPOINT": self.endpoint,
            "SLUICE_S3_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def client(self, service: str) -> AbstractAsyncContextManager[Any]:
        """An aiobotocore client of this server: `async with s3.client("s3") as client:`."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(s3={"addressing_style": "path"})
        manager: AbstractAsyncContextManager[Any] = get_session().create_client(
            service, config=config, **self.options()
        )
        return manager

    def start(self) -> str:
        """Start the server, wait until it answers HTTP and return its endpoint."""
        attempts = 1 if self._requested_port is not None else _AUTO_PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._launch()
            try:
                self._wait_until_ready()
            except EmbeddedS3Error:
                self.stop()
                if attempt == attempts:
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            return self.endpoint
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after `stop_timeout_s`."""
        process, self._process = self._process, None
        self._port = None
        if process is not None:
            stop_process(process, self._stop_timeout_s)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def __aenter__(self) -> Self:
        # Spawned on the loop's thread (see die_with_parent); only the probe runs elsewhere.
        attempts = 1 if self._requested_port is not None else _AUTO_PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._launch()
            try:
                await asyncio.to_thread(self._wait_until_ready)
            except EmbeddedS3Error:
                self.stop()
                if attempt == attempts:
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            return self
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        if self._process is not None:
            raise RuntimeError("the embedded S3 server is already running")
        if self._log_path is None:
            handle, name = tempfile.mkstemp(prefix="sluice-s3-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self._log_path.open("ab")
        self._port = self._requested_port or free_port(self._host)
        command = [sys.executable, "-m", "moto.server", "-H", self._host, "-p", str(self._port)]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )

    def _wait_until_ready(self) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self._start_timeout_s
        url = f"http://{self._host}:{self._port}/moto-api/"
        while True:
            if process.poll() is not None:
                raise EmbeddedS3Error(
                    f"moto server exited with status {process.returncode}:\n"
                    + log_tail(self._log_path)
                )
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers HTTP: ready
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise EmbeddedS3Error(
                    f"moto server did not answer on port {self._port} within "
                    f"{self._start_timeout_s:g} s:\n" + log_tail(self._log_path)
                )
            time.sleep(_PROBE_INTERVAL_S)


async def ensure_bucket(s3: Any, bucket: str) -> bool:
    """Create `bucket` unless it exists; True when it was created."""
    try:
        await s3.head_bucket(Bucket=bucket)
        return False
    except Exception as exc:
        if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        await s3.create_bucket(Bucket=bucket)
    except Exception as exc:
        if _error_code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise
    return True


async def ensure_queue(sqs: Any, name: str) -> Queue:
    """Create (or find) the SQS queue `name`."""
    created = await sqs.create_queue(QueueName=name)
    url = str(created["QueueUrl"])
    attributes = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return Queue(name=name, url=url, arn=str(attributes["Attributes"]["QueueArn"]))


async def notify_queue(
    s3: Any,
    bucket: str,
    queue_arn: str,
    *,
    events: Sequence[str] = NOTIFY_EVENTS,
    prefix: str | None = None,
    suffix: str | None = None,
    config_id: str = NOTIFICATION_ID,
) -> None:
    """Make `bucket` send notifications of `events` to the queue (replacing its configuration).

    `prefix`/`suffix` become S3 key filter rules, as a store-side pre-filter.
    """
    config: dict[str, Any] = {"Id": config_id, "QueueArn": queue_arn, "Events": list(events)}
    rules = [
        {"Name": name, "Value": value}
        for name, value in (("prefix", prefix), ("suffix", suffix))
        if value
    ]
    if rules:
        config["Filter"] = {"Key": {"FilterRules": rules}}
    await s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [config]}
    )


async def wire_bucket(s3: Any, bucket: str, queue_arn: str) -> bool:
    """Ensure `bucket` exists and notifies `queue_arn` of every object event (`sluice dev`).

    Returns True when the bucket was created.
    """
    created = await ensure_bucket(s3, bucket)
    await notify_queue(s3, bucket, queue_arn)
    return created


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
