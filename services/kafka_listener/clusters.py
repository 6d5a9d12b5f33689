"""One consumer-group member per Kafka cluster the enabled triggers read from.

The default cluster (`SLUICE_KAFKA_BOOTSTRAP`) always has a member, as before. A cluster named by
triggers through a workspace connection of kind `kafka` gets its own member (its own consumer and
group, under `SLUICE_KAFKA_GROUP_ID` on that cluster) as long as an enabled trigger names it; the
members run independently, so a cluster that is down stalls only its own triggers. A connection is
re-read at every trigger refresh: a changed one restarts its member, a missing or invalid one is
logged (naming the connection and field) and reported in `/readyz` as ``kafka:<cluster>``, and
retried at the next refresh. Its secrets are read through `shared.db.connections.resolve` and
handed to the Kafka client only.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from functools import partial

import structlog

from services.kafka_listener.records import decoder
from services.kafka_listener.subscriptions import Wanted
from shared.backpressure import Backpressure
from shared.db import connections
from shared.db.errors import NotFound
from shared.db.pool import Executor
from shared.intake import admit_batch
from shared.kafka.cluster import KafkaConnectionError, cluster_label, connection_settings
from shared.kafka.config import ListenerSettings
from shared.kafka.member import KafkaListener
from shared.kafka.state import READINESS_COMPONENT, TopicHolds
from shared.probes import READINESS
from shared.secret_box import SecretBox
from shared.settings import KafkaSettings

log = structlog.get_logger("sluice.kafka_listener")

BACKPRESSURE_COMPONENT = "backpressure"
"""The `/readyz` component naming the triggers held back and why (always ready: holding back
is the listener doing its job)."""


@dataclass
class _Member:
    listener: KafkaListener
    settings: KafkaSettings
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Clusters:
    """The members of every wanted cluster; ``apply`` follows the triggers, ``run`` hosts them."""

    def __init__(
        self,
        settings: KafkaSettings,
        config: ListenerSettings,
        pool: Executor,
        box: SecretBox | None = None,
    ) -> None:
        self._settings = settings
        # Opens the secrets of `kafka` connections; None when SLUICE_SECRET_KEY is not set.
        self._box = box
        self._config = config
        self._pool = pool
        self._members: dict[str | None, _Member] = {}
        self._group: asyncio.TaskGroup | None = None
        self._started = asyncio.Event()
        self._stopping = False
        self._broken: set[str] = set()
        """Clusters whose connection could not be used at the last refresh."""
        self._backpressure = Backpressure("kafka-listener", on_change=_report_backpressure)

    async def run(self, stop: asyncio.Event) -> None:
        """Run the members until ``stop``; then each admits and commits what it fetched."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._start(None, self._settings)
            self._started.set()
            await stop.wait()
            # From here on the members drain; a trigger refresh still under way changes nothing.
            self._stopping = True
            for member in self._members.values():
                member.stop.set()
        self._group = None

    async def apply(self, wanted: Wanted) -> None:
        """Give every cluster its topics; start, restart and stop members to match."""
        await self._started.wait()
        if self._stopping:
            return
        default = self._members.get(None)
        if default is not None:
            default.listener.set_topics(wanted.get(None, {}))
        for cluster in sorted(c for c in wanted if c is not None):
            settings = await self._resolve(cluster)
            if self._stopping:
                return
            member = self._members.get(cluster)
            if member is not None and (settings is None or member.settings != settings):
                await self._stop(cluster)
                member = None
            if settings is None:
                continue
            if member is None:
                member = self._start(cluster, settings)
            member.listener.set_topics(wanted[cluster])
        for cluster in [c for c in self._members if c is not None and c not in wanted]:
            await self._stop(cluster)
        for cluster in self._broken - {c for c in wanted if c is not None}:
            READINESS.drop(_component(cluster))
            self._broken.discard(cluster)

    def _start(self, cluster: str | None, settings: KafkaSettings) -> _Member:
        assert self._group is not None
        listener = KafkaListener(
            settings,
            self._config,
            partial(admit_batch, self._pool),
            decoder(self._config.max_message_bytes, cluster),
            cluster=cluster,
            hold_topics=partial(self._topic_holds, cluster),
        )
        member = _Member(listener, settings)
        member.task = self._group.create_task(member.listener.run(member.stop))
        self._members[cluster] = member
        if cluster is not None:
            log.info("kafka_cluster_started", cluster=cluster_label(cluster))
        return member

    async def _topic_holds(self, cluster: str | None) -> TopicHolds:
        """Backpressure for one member's topics: the counts read once per batch (see
        ``Backpressure.refresh`` for when no workflow is bounded)."""
        gate = self._backpressure
        await gate.refresh(self._pool)
        return TopicHolds(
            held=frozenset(gate.held_topics(cluster)),
            bounded=frozenset(gate.bounded_topics(cluster)),
        )

    async def _stop(self, cluster: str) -> None:
        member = self._members.pop(cluster)
        member.stop.set()
        if member.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await member.task
        READINESS.drop(_component(cluster))
        log.info("kafka_cluster_stopped", cluster=cluster)

    async def _resolve(self, cluster: str) -> KafkaSettings | None:
        workspace, _, name = cluster.partition("/")
        try:
            if self._box is None:
                raise KafkaConnectionError(
                    "SLUICE_SECRET_KEY is not set, so the connection's secrets cannot be read"
                )
            resolved = await connections.resolve(self._pool, int(workspace), name, self._box)
            if resolved.kind != "kafka":
                raise KafkaConnectionError(
                    f"connection {name!r} is of kind {resolved.kind!r}, not 'kafka'"
                )
            settings = connection_settings(self._settings, name, resolved.config, resolved.secrets)
        except (NotFound, KafkaConnectionError) as exc:
            reason = (
                f"connection {name!r} does not exist" if isinstance(exc, NotFound) else str(exc)
            )
            if cluster not in self._broken:
                log.error("kafka_connection_unusable", cluster=cluster, error=reason)
            self._broken.add(cluster)
            READINESS.set(_component(cluster), False, reason)
            return None
        self._broken.discard(cluster)
        return settings


def _report_backpressure(gate: Backpressure) -> None:
    READINESS.set(BACKPRESSURE_COMPONENT, True, gate.describe())


def _component(cluster: str) -> str:
    return f"{READINESS_COMPONENT}:{cluster}"
