"""The Kafka intake's consumer-group member: fetch → admit → commit.

Both Kafka sources use it: the kafka_listener (trigger messages, one member per cluster) and the
storage listener's `kafka` source (S3 event records). What differs is given to it: ``decode``
turns a record into its events (poison included: a record that cannot be read is an event with
``error`` set, so it gets an audit row), ``submit`` admits a list of events in one transaction.

One ``AIOKafkaConsumer`` (manual commits, ``auto_offset_reset="none"``) follows the topics it is
given (``set_topics``). Four loops share it:

- fetch: ``getmany()`` batches become events (``decode``) and are queued for admission. At
  most ``in_flight_batches`` wait; when admission falls behind, fetching waits too
  (backpressure), and if it waits long the assigned partitions are paused while ``getmany()``
  keeps the group membership alive.
- admission: one intake transaction per batch (``admission.admit``), then the offsets of every
  partition are committed up to the longest admitted run (``offsets.OffsetTracker``). A database
  failure retries the batch with backoff; nothing is committed before its admission commits.
- subscription: applies the topics the trigger watcher asks for. Offsets admitted so far are
  committed first: aiokafka cannot commit the old assignment once the subscription changed.
- probe: broker reachability, lag, logs reset under the member, stalls (``shared.kafka.stall``).

Backpressure of the workflows fed (``policy.max_waiting``, ``shared.backpressure``): given
``hold_topics``, the fetch loop reads the counts once before handing out each batch (and every
``HOLD_RECHECK_S`` while paused). The partitions of held topics are paused (``getmany()`` goes on,
so the membership stays and no rebalance happens); their records fetched but not handed out are
put back by seeking the partition to the first of them, so they are neither admitted nor
committed and come again on resume. Batches of bounded topics go one at a time, so a full
workflow overshoots its bound by one batch at most.

Rebalances (``on_partitions_revoked`` / ``on_partitions_assigned``; aiokafka swallows what they
raise, so they handle their own errors): a revocation waits (up to ``revoke_wait_s``) for the
batch being admitted, commits what is admitted and drops the rest of the revoked partitions' work;
it is fetched again by whoever gets them and deduplication absorbs it. An assignment positions
each partition: its committed offset, else the first message at or after the start time given
for its topic (the creation of the earliest enabled trigger on it; ``offsets_for_times``), else
its end; until then ``getmany()`` raises ``NoOffsetForPartitionError``, and the fetch loop waits
for the callback. Records are never dropped for being older than that start: whatever is read is
admitted and audited.

The class is assembled from one module per concern (see ``shared.kafka.state``): ``commits``,
``rebalance``, ``fetch`` and ``probe``; this module adds construction and the consumer's
lifecycle (connect with backoff, one session per consumer, rejoin after a stall).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    KafkaError,
)

from shared.kafka import admission
from shared.kafka import metrics as listener_metrics
from shared.kafka.admission import Submit
from shared.kafka.cluster import cluster_label
from shared.kafka.config import ListenerSettings, client_options, describe_connection
from shared.kafka.offsets import OffsetTracker
from shared.kafka.probe import Probing
from shared.kafka.retry import Backoff, sleep_or_stop
from shared.kafka.stall import StallWatch
from shared.kafka.state import (
    READINESS_COMPONENT,
    Decode,
    HoldTopics,
    ReadinessSink,
    TopicHolds,
    Work,
    log,
    utcnow,
)
from shared.probes import READINESS
from shared.settings import KafkaSettings


class KafkaListener(Probing):
    """The consumer-group member of one listener process (see the module docstring).

    ``set_topics`` tells it what to follow; ``run(stop)`` consumes until ``stop`` is set, then
    admits and commits what it fetched (the caller bounds that drain) and leaves the group.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        config: ListenerSettings,
        submit: Submit,
        decode: Decode,
        *,
        clock: Callable[[], datetime] = utcnow,
        readiness: ReadinessSink = READINESS,
        cluster: str | None = None,
        component: str | None = None,
        on_assignment: Callable[[Collection[TopicPartition]], None] | None = None,
        hold_topics: HoldTopics | None = None,
    ) -> None:
        self._cluster = cluster
        self._label = cluster_label(cluster)
        self._component = component or (
            READINESS_COMPONENT if cluster is None else f"{READINESS_COMPONENT}:{cluster}"
        )
        self._submit = submit
        self._decode = decode
        self._on_assignment = on_assignment
        self._hold_topics = hold_topics
        self._holds = TopicHolds()
        self._holds_checked_at = 0.0
        self._kafka = kafka
        self._config = config
        self._clock = clock
        self._readiness = readiness
        self._wanted: dict[str, int | None] = {}
        """Topic → start time (epoch ms) for partitions without a commit; None: their end."""
        self._wanted_changed = asyncio.Event()
        self._refused: dict[str, float] = {}
        """Topics the broker refused to serve (authorization) → when to try them again."""
        self._batches_admitted = 0
        self._stall: StallWatch[TopicPartition] = StallWatch(
            config.stall_report_s, config.stall_rejoin_s
        )
        self._stalled = False
        self._rejoin = asyncio.Event()
        """Set to end the current consumer session so that a new one joins the group afresh."""
        # Per consumer session (reset when the consumer is recreated):
        self._consumer: AIOKafkaConsumer | None = None
        self._subscribed: list[str] = []
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._generation: defaultdict[TopicPartition, int] = defaultdict(int)
        """Bumped when a partition is revoked: work fetched before is stale."""
        self._held: dict[TopicPartition, list[Any]] = {}
        """Fetched records not yet handed to admission."""
        self._held_count = 0
        self._positioned: set[TopicPartition] = set()
        self._committed: dict[TopicPartition, int] = {}
        """Last committed (or start) offset per assigned partition, for the lag metric."""
        self._queue: asyncio.Queue[Work | None] = asyncio.Queue()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._busy = asyncio.Lock()
        """Held while a batch is admitted and committed; rebalances wait for it."""
        self._settled = asyncio.Event()
        """Clear from a revocation until the next assignment has positioned its partitions."""
        self._has_topics = asyncio.Event()
        """Set while the consumer is subscribed to at least one topic."""
        self._settled.set()
        self._joined = False
        """Whether the last rebalance completed (an assignment, possibly empty, was received)."""
        self._unjoined_since: float | None = None
        """Since when (loop time) the member waits for a join or rebalance to complete."""
        self._reset_suspects: set[TopicPartition] = set()
        """Partitions whose log was seen ending below the commit at the last probe."""

    # ---------------------------------------------------------------------------------------
    # What to follow

    def set_topics(self, topics: Mapping[str, int | None]) -> None:
        """Follow these topics from now on: topic → the time (epoch ms) a partition without a
        committed offset starts at (the earliest trigger's creation), None for its end."""
        wanted = dict(topics)
        if wanted != self._wanted:
            self._wanted = wanted
            self._wanted_changed.set()

    # ---------------------------------------------------------------------------------------
    # Lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``; a broker that cannot be reached is retried with backoff."""
        with structlog.contextvars.bound_contextvars(cluster=self._label):
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self._config.backoff_max_s)
        while not stop.is_set():
            consumer = self._new_consumer()
            try:
                await consumer.start()
            except (KafkaError, OSError) as exc:
                await self._stop_consumer(consumer)
                delay = backoff.next()
                listener_metrics.ERRORS.labels("connect").inc()
                listener_metrics.BROKER_UP.labels(self._label).set(0)
                self._readiness.set(self._component, False, f"cannot connect: {type(exc).__name__}")
                log.warning(
                    "kafka_connect_failed",
                    error=admission.describe(exc),
                    retry_in_s=delay,
                    **describe_connection(self._kafka),
                )
                await sleep_or_stop(stop, delay)
                continue
            backoff.reset()
            listener_metrics.BROKER_UP.labels(self._label).set(1)
            self._readiness.set(
                self._component, True, f"connected as group {self._kafka.kafka_group_id}"
            )
            log.info(
                "kafka_listener_connected",
                group=self._kafka.kafka_group_id,
                **describe_connection(self._kafka),
            )
            try:
                await self._session(consumer, stop)
            finally:
                await self._stop_consumer(consumer)
                self._consumer = None
        log.info("kafka_listener_stopped", group=self._kafka.kafka_group_id)

    def _new_consumer(self) -> AIOKafkaConsumer:
        config = self._config
        return AIOKafkaConsumer(
            group_id=self._kafka.kafka_group_id,
            enable_auto_commit=False,
            auto_offset_reset="none",
            fetch_max_wait_ms=self._kafka.kafka_fetch_max_wait_ms,
            max_poll_records=self._kafka.kafka_max_batch,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            metadata_max_age_ms=config.metadata_max_age_ms,
            request_timeout_ms=config.request_timeout_ms,
            # A record as large as the listener accepts must fit in one fetch, or the partition
            # could not move past it (records over the limit are recorded invalid).
            max_partition_fetch_bytes=max(1 << 20, config.max_message_bytes + (64 << 10)),
            **client_options(self._kafka),
        )

    async def _stop_consumer(self, consumer: AIOKafkaConsumer) -> None:
        try:
            async with asyncio.timeout(self._config.commit_timeout_s):
                await consumer.stop()
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("kafka_consumer_stop_failed", error=admission.describe(exc))

    def _reset_session_state(self) -> None:
        self._consumer = None
        self._subscribed = []
        self._tracker = OffsetTracker()
        self._generation = defaultdict(int)
        self._held = {}
        self._held_count = 0
        self._positioned = set()
        self._committed = {}
        self._queue = asyncio.Queue()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._busy = asyncio.Lock()
        self._settled = asyncio.Event()
        self._settled.set()
        self._has_topics = asyncio.Event()
        self._joined = False
        self._unjoined_since = asyncio.get_running_loop().time()
        self._reset_suspects = set()

    async def _session(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """One consumer's membership: until ``stop``, or until a stall asks for a rejoin (the
        session then ends like a shutdown, and ``run`` starts a new consumer)."""
        self._reset_session_state()
        self._consumer = consumer
        listener_metrics.SUBSCRIBED_TOPICS.labels(self._label).set(0)
        self._wanted_changed.set()
        ending = asyncio.Event()
        self._rejoin = ending
        relay = asyncio.ensure_future(self._relay_stop(stop, ending))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._admission_loop())
                group.create_task(self._fetch_loop(consumer, ending))
                group.create_task(self._subscription_loop(consumer, ending))
                group.create_task(self._probe_loop(consumer, ending))
        finally:
            relay.cancel()
        # Every admitted offset is committed by now unless the broker refused; leaving the group
        # (consumer.stop) hands the partitions over.
        await self._commit(consumer)
        for tp in list(self._committed):
            self._drop_lag(tp)
        listener_metrics.SUBSCRIBED_TOPICS.labels(self._label).set(0)

    @staticmethod
    async def _relay_stop(stop: asyncio.Event, ending: asyncio.Event) -> None:
        await stop.wait()
        ending.set()

    # ---------------------------------------------------------------------------------------
