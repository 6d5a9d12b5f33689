"""Stall detection of a consumer-group member: no partitions while a backlog stands still."""

from __future__ import annotations

import pytest

from shared.kafka.stall import StallWatch


def watch() -> StallWatch[str]:
    return StallWatch(report_after_s=10, rejoin_after_s=30)


def test_a_member_with_partitions_is_never_stalled() -> None:
    stall = watch()
    for now in range(0, 100, 5):
        assert stall.observe(now, 3, {"t/0": (0, 50)}).verdict == "ok"


def test_no_partitions_and_nothing_waiting_is_normal() -> None:
    stall = watch()
    for now in range(0, 100, 5):
        state = stall.observe(now, 0, {"t/0": (50, 50)})
        assert (state.verdict, state.unconsumed) == ("ok", 0)


def test_a_standing_backlog_is_reported_then_rejoined_once_then_watched_afresh() -> None:
    stall = watch()
    backlog = {"t/0": (10, 15), "t/1": (0, 2)}
    assert stall.observe(0, 0, backlog).verdict == "waiting"
    assert stall.observe(9.9, 0, backlog).verdict == "waiting"
    reported = stall.observe(10, 0, backlog)
    assert (reported.verdict, reported.unconsumed, reported.stalled_s) == ("stalled", 7, 10)
    assert stall.observe(29, 0, backlog).verdict == "stalled"
    assert stall.observe(30, 0, backlog).verdict == "rejoin"
    # after the rejoin the clock starts over
    assert stall.observe(31, 0, backlog).verdict == "waiting"
    assert stall.observe(41, 0, backlog).verdict == "stalled"


def test_progress_by_other_members_restarts_the_clock() -> None:
    stall = watch()
    assert stall.observe(0, 0, {"t/0": (10, 20)}).verdict == "waiting"
    # another member commits: the backlog moves, nobody is stalled
    assert stall.observe(9, 0, {"t/0": (12, 25)}).verdict == "waiting"
    assert stall.observe(18, 0, {"t/0": (12, 25)}).verdict == "waiting"
    assert stall.observe(19, 0, {"t/0": (12, 25)}).verdict == "stalled"


def test_getting_partitions_ends_a_stall() -> None:
    stall = watch()
    stall.observe(0, 0, {"t/0": (0, 5)})
    assert stall.observe(15, 0, {"t/0": (0, 5)}).verdict == "stalled"
    assert stall.observe(16, 1, {}).verdict == "ok"
    assert stall.observe(17, 0, {"t/0": (0, 5)}).verdict == "waiting"


def test_rejoin_before_report_is_refused() -> None:
    with pytest.raises(ValueError, match="rejoin_after_s"):
        StallWatch(report_after_s=10, rejoin_after_s=5)


def test_a_join_that_does_not_complete_is_reported_then_rejoined() -> None:
    stall = watch()
    assert stall.joining(9.9, since=0).verdict == "waiting"
    reported = stall.joining(12, since=0)
    assert (reported.verdict, reported.joining, reported.stalled_s) == ("stalled", True, 12)
    assert stall.joining(30, since=0).verdict == "rejoin"
    # a new attempt (a new session) is timed from its own start
    assert stall.joining(31, since=30).verdict == "waiting"
