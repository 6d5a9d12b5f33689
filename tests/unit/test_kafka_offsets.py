"""OffsetTracker and start_offset: what the Kafka listener may commit, and where it starts."""

from __future__ import annotations

from typing import Literal

import pytest

from shared.kafka.offsets import OffsetTracker, start_offset

A = ("orders", 0)
B = ("orders", 1)
C = ("payments", 0)

Partition = tuple[str, int]
Step = (
    tuple[Literal["out", "ok"], Partition, list[int]]
    | tuple[Literal["commit"]]
    | tuple[Literal["commit_at"], dict[Partition, int]]
    | tuple[Literal["forget"], list[Partition]]
)


def apply(tracker: OffsetTracker[Partition], step: Step) -> None:
    if step[0] == "out":
        tracker.handed_out(step[1], step[2])
    elif step[0] == "ok":
        tracker.admitted(step[1], step[2])
    elif step[0] == "commit":
        tracker.mark_committed(tracker.committable())
    elif step[0] == "commit_at":
        tracker.mark_committed(step[1])
    else:
        tracker.forget(step[1])


# Each case: a sequence of (step, committable() right after it).
CASES: dict[str, list[tuple[Step, dict[Partition, int]]]] = {
    "handed out, nothing admitted": [
        (("out", A, [0, 1, 2]), {}),
    ],
    "admitted in order": [
        (("out", A, [0, 1, 2]), {}),
        (("ok", A, [0, 1, 2]), {A: 3}),
    ],
    "out of order completion waits for the gap": [
        (("out", A, [0, 1, 2, 3]), {}),
        (("ok", A, [2]), {}),
        (("ok", A, [3]), {}),
        (("ok", A, [0]), {A: 1}),
        (("ok", A, [1]), {A: 4}),
    ],
    "batches completing in reverse": [
        (("out", A, [0, 1]), {}),
        (("out", A, [2, 3]), {}),
        (("ok", A, [2, 3]), {}),
        (("ok", A, [0, 1]), {A: 4}),
    ],
    "offsets with gaps (compaction) are contiguous as handed out": [
        (("out", A, [0, 5, 9]), {}),
        (("ok", A, [9, 5]), {}),
        (("ok", A, [0]), {A: 10}),
    ],
    "first offset need not be zero": [
        (("out", A, [1000, 1001]), {}),
        (("ok", A, [1000]), {A: 1001}),
    ],
    "partitions are independent": [
        (("out", A, [0, 1]), {}),
        (("out", B, [7]), {}),
        (("out", C, [3]), {}),
        (("ok", B, [7]), {B: 8}),
        (("ok", A, [1]), {B: 8}),
        (("ok", A, [0]), {A: 2, B: 8}),
        (("ok", C, [3]), {A: 2, B: 8, C: 4}),
    ],
    "a reported commit is not offered again": [
        (("out", A, [0, 1]), {}),
        (("ok", A, [0]), {A: 1}),
        (("commit",), {}),
        (("ok", A, [1]), {A: 2}),
        (("commit",), {}),
    ],
    "a failed commit (never reported) is offered again": [
        (("out", A, [0, 1]), {}),
        (("ok", A, [0, 1]), {A: 2}),
        (("out", A, [2]), {A: 2}),
    ],
    "a stale commit report does not move the mark back": [
        (("out", A, [0, 1, 2]), {}),
        (("ok", A, [0, 1, 2]), {A: 3}),
        (("commit_at", {A: 3}), {}),
        (("commit_at", {A: 1}), {}),
    ],
    "commit reports for unknown partitions are ignored": [
        (("commit_at", {A: 5}), {}),
        (("out", A, [0]), {}),
        (("ok", A, [0]), {A: 1}),
    ],
    "forget drops a revoked partition and its late admissions": [
        (("out", A, [0, 1, 2]), {}),
        (("out", B, [0]), {}),
        (("ok", A, [0]), {A: 1}),
        (("forget", [A]), {}),
        (("ok", A, [1, 2]), {}),
        (("ok", B, [0]), {B: 1}),
    ],
    "forget of an unknown partition is harmless": [
        (("forget", [C]), {}),
    ],
    "reassigned partition starts over after forget": [
        (("out", A, [0, 1]), {}),
        (("forget", [A]), {}),
        (("out", A, [0, 1]), {}),
        (("ok", A, [0]), {A: 1}),
    ],
    "admissions of offsets never handed out are ignored": [
        (("out", A, [0]), {}),
        (("ok", A, [7]), {}),
        (("ok", B, [0]), {}),
        (("ok", A, [0]), {A: 1}),
    ],
    "a repeated admission is harmless": [
        (("out", A, [0, 1]), {}),
        (("ok", A, [0]), {A: 1}),
        (("ok", A, [0]), {A: 1}),
        (("ok", A, [1]), {A: 2}),
    ],
    "moving back restarts the partition at the lower offset": [
        (("out", A, [0, 1, 2, 3, 4]), {}),
        (("ok", A, [0, 1, 2, 3, 4]), {A: 5}),
        (("commit",), {}),
        (("out", A, [2, 3]), {}),
        (("ok", A, [2]), {A: 3}),
    ],
    "admissions pending from before a restart are ignored": [
        (("out", A, [5, 6]), {}),
        (("out", A, [2]), {}),
        (("ok", A, [5, 6]), {}),
        (("ok", A, [2]), {A: 3}),
    ],
    "a repeated offset within one batch restarts at it": [
        (("out", A, [0, 1, 1]), {}),
        (("ok", A, [1]), {A: 2}),
    ],
}


@pytest.mark.parametrize("steps", list(CASES.values()), ids=list(CASES))
def test_committable_after_each_step(steps: list[tuple[Step, dict[Partition, int]]]) -> None:
    tracker: OffsetTracker[Partition] = OffsetTracker()
    for number, (step, expected) in enumerate(steps, start=1):
        apply(tracker, step)
        assert tracker.committable() == expected, f"after step {number}: {step}"


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], 0),
        ([("out", A, [0, 1, 2])], 3),
        ([("out", A, [0, 1, 2]), ("ok", A, [1])], 2),
        ([("out", A, [0, 1, 2]), ("ok", A, [0, 1, 2])], 0),
        ([("out", A, [0, 1]), ("out", B, [0]), ("ok", B, [0])], 2),
        ([("out", A, [0, 1]), ("forget", [A])], 0),
    ],
)
def test_outstanding_counts_offsets_awaiting_admission(steps: list[Step], expected: int) -> None:
    tracker: OffsetTracker[Partition] = OffsetTracker()
    for step in steps:
        apply(tracker, step)
    assert tracker.outstanding() == expected


def test_committable_returns_the_callers_partition_objects() -> None:
    class TopicPartition(tuple[str, int]):
        pass

    tp = TopicPartition(("orders", 3))
    tracker: OffsetTracker[TopicPartition] = OffsetTracker()
    tracker.handed_out(tp, [10])
    tracker.admitted(tp, [10])
    [(key, position)] = tracker.committable().items()
    assert key is tp
    assert position == 11


CREATED = 1_767_225_600_000


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (None, None),  # Kafka: no message at or after created_at yet
        ((0, -1), None),  # Tansu's answer for the same situation
        ((-1, -1), None),  # the raw "unknown offset" answer
        ((5, CREATED - 1), None),  # an answer from before created_at is not an answer
        ((5, CREATED), 5),
        ((0, CREATED + 10), 0),
        ((1234, CREATED + 86_400_000), 1234),
    ],
)
def test_start_offset(found: tuple[int, int] | None, expected: int | None) -> None:
    assert start_offset(found, CREATED) == expected
