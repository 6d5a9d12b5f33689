"""Which Kafka offsets may be committed, and where a partition without a commit starts. Pure.

Key contract 3: an offset is committed only after the admission of every message before it has
committed. Admission may finish out of order (batches admitted concurrently, a retried batch), so
the listener records each partition's offsets as they are handed out and as they are admitted, and
commits, per partition, the position after the longest admitted run at the front. Kafka offsets
need not be consecutive (compaction, transaction markers), so "contiguous" means contiguous among
the offsets actually handed out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)
"""A partition key, e.g. aiokafka's ``TopicPartition``."""


@dataclass
class _Partition:
    handed_out: deque[int] = field(default_factory=deque)
    """Offsets handed out and not yet folded into ``position``, in hand-out (ascending) order."""
    members: set[int] = field(default_factory=set)
    """The offsets of ``handed_out``, for membership tests."""
    admitted: set[int] = field(default_factory=set)
    """Members of ``handed_out`` whose admission has committed."""
    position: int | None = None
    """The offset after the last admitted offset of the front run: what may be committed."""
    committed: int | None = None
    """The last position the caller reported as committed to Kafka."""

    def fold(self) -> None:
        while self.handed_out and self.handed_out[0] in self.admitted:
            offset = self.handed_out.popleft()
            self.members.discard(offset)
            self.admitted.discard(offset)
            self.position = offset + 1


class OffsetTracker(Generic[P]):
    """Per-partition bookkeeping of handed-out and admitted offsets, safe for any completion order.

    Use: ``handed_out(tp, offsets)`` when a fetched batch goes to admission, ``admitted(tp,
    offsets)`` when its transaction has committed (a message recorded as invalid counts as
    admitted), commit ``committable()`` and report it with ``mark_committed``; ``forget`` the
    partitions a rebalance revokes.
    """

    def __init__(self) -> None:
        self._partitions: dict[P, _Partition] = {}

    def handed_out(self, partition: P, offsets: Iterable[int]) -> None:
        """Record offsets of ``partition`` that were handed to admission, in fetch order.

        Offsets must keep increasing. One that does not (the consumer was moved back, e.g. by a
        seek) restarts the partition's bookkeeping at that offset: admissions still pending for the
        old offsets are ignored, and the position only moves on from the new ones. Committing a
        lower offset is safe; the messages come again and deduplication absorbs them. This covers
        moves the listener does not make itself (aiokafka resetting an out-of-range position);
        before seeking a partition back on purpose, wait for its pending admissions or ``forget``
        it, since a restart stops them from holding the commit back.
        """
        state = self._partitions.setdefault(partition, _Partition())
        for offset in offsets:
            last = state.handed_out[-1] if state.handed_out else None
            if (last is not None and offset <= last) or (
                state.position is not None and offset < state.position
            ):
                state.handed_out.clear()
                state.members.clear()
                state.admitted.clear()
                state.position = None
                state.committed = None
            state.handed_out.append(offset)
            state.members.add(offset)

    def admitted(self, partition: P, offsets: Iterable[int]) -> None:
        """Record that the admission of these offsets has committed.

        Offsets that are not outstanding (already admitted, from a forgotten partition, or from
        before a restart) are ignored.
        """
        state = self._partitions.get(partition)
        if state is None:
            return
        state.admitted.update(offset for offset in offsets if offset in state.members)
        state.fold()

    def committable(self) -> dict[P, int]:
        """Per partition, the offset to commit: one past the last offset of the longest run of
        admitted offsets at the front. Partitions with nothing new since their last reported commit
        are left out.
        """
        return {
            partition: state.position
            for partition, state in self._partitions.items()
            if state.position is not None
            and (state.committed is None or state.position > state.committed)
        }

    def mark_committed(self, positions: Mapping[P, int]) -> None:
        """Report positions Kafka accepted, so ``committable`` stops offering them."""
        for partition, position in positions.items():
            state = self._partitions.get(partition)
            if state is not None and (state.committed is None or position > state.committed):
                state.committed = position

    def forget(self, partitions: Iterable[P]) -> None:
        """Drop all bookkeeping of ``partitions`` (revoked by a rebalance)."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def outstanding(self) -> int:
        """How many handed-out offsets await admission, over all partitions (for backpressure)."""
        return sum(
            len(state.handed_out) - len(state.admitted) for state in self._partitions.values()
        )


def start_offset(found: tuple[int, int] | None, created_at_ms: int) -> int | None:
    """Where a partition without a committed offset starts reading, or None for "at its end".

    ``found`` is the broker's (offset, timestamp) answer to ``offsets_for_times`` for
    ``created_at_ms`` (the earliest creation time of the enabled triggers on the topic): the first
    message at or after that time. An answer whose timestamp is before ``created_at_ms`` means no
    such message: Tansu answers (0, -1) where Kafka answers nothing, and reading from 0 would replay
    the whole partition.
    """
    if found is None:
        return None
    offset, timestamp = found
    if offset < 0 or timestamp < created_at_ms:
        return None
    return offset
