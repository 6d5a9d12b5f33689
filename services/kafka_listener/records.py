"""A fetched Kafka record as the event intake admits. Pure: no I/O.

Every record becomes exactly one event, so every offset gets an audit record and can be
committed: a record too large to admit, or one that cannot be stored as a trigger message, is an
event with ``error`` set (intake records it ``invalid`` with that reason) instead of a message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from services.kafka_listener.messages import UnstorableMessage, trigger_message
from shared.models.events import MAX_PAYLOAD_BYTES, IncomingEvent


class KafkaRecord(Protocol):
    """The fields of aiokafka's ``ConsumerRecord`` the listener reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def ref(topic: str, partition: int, offset: int, cluster: str | None = None) -> str:
    """The source position of a record, as events and logs show it: ``topic/partition/offset``,
    prefixed with ``<connection>:`` when read through a workspace's `kafka` connection."""
    position = f"{topic}/{partition}/{offset}"
    return position if cluster is None else f"{cluster.partition('/')[2]}:{position}"


def record_size(record: KafkaRecord) -> int:
    """Bytes of key, value and headers (names and values) of a record."""
    size = len(record.key or b"") + len(record.value or b"")
    for name, value in record.headers:
        size += len(name.encode("utf-8", "surrogatepass")) + len(value or b"")
    return size


def to_event(
    record: KafkaRecord, received_at: datetime, max_bytes: int, cluster: str | None = None
) -> IncomingEvent:
    """The event of one record: its trigger message, or the reason it cannot have one.

    ``cluster``: the cluster key it was read from (``shared.kafka.cluster``; None: default)."""
    position = ref(record.topic, record.partition, record.offset, cluster)
    size = record_size(record)
    if size > max_bytes:
        return IncomingEvent(
            source="kafka",
            subject=record.topic,
            ref=position,
            error=(
                f"message is {size} bytes (key, value and headers), over the limit of "
                f"{max_bytes} bytes (SLUICE_KAFKA_MAX_MESSAGE_BYTES)"
            ),
            raw=_head(record.value),
            received_at=received_at,
            cluster=cluster,
        )
    try:
        message = trigger_message(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            record.headers,
            nul_as_binary=True,
        )
    except UnstorableMessage as exc:
        return IncomingEvent(
            source="kafka",
            subject=record.topic,
            ref=position,
            error=f"message cannot be stored: {exc}",
            received_at=received_at,
            cluster=cluster,
        )
    # Validation would copy the message for nothing: it was built above, with the right types.
    return IncomingEvent.model_construct(
        source="kafka",
        subject=record.topic,
        ref=position,
        message=message,
        error=None,
        raw=None,
        received_at=received_at,
        cluster=cluster,
    )


def _head(value: bytes | None) -> str | None:
    """The start of an over-size value for the audit record (intake flags it as truncated)."""
    if value is None:
        return None
    # One byte past the stored maximum, so intake sees it is over and flags the truncation.
    text = value[: MAX_PAYLOAD_BYTES + 1].decode("utf-8", "replace")
    # U+0000 cannot be stored in jsonb; U+FFFD already marks bytes that were replaced.
    return text.replace("\x00", "\ufffd")


def decoder(
    max_bytes: int, cluster: str | None
) -> Callable[[KafkaRecord, datetime], list[IncomingEvent]]:
    """The intake member's ``decode`` for trigger messages: one event per record."""

    def decode(record: KafkaRecord, received_at: datetime) -> list[IncomingEvent]:
        return [to_event(record, received_at, max_bytes, cluster)]

    return decode
