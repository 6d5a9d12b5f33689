"""Whether a consumer-group member is stalled: connected, no partitions, messages waiting. Pure.

A member can stay in its group with nothing assigned while its topics hold messages nobody reads
(seen after repeated kill -9s of members: the group settled on an assignment that left every
partition to a member that no longer existed). Nothing fails, so nothing would say so. A member
with no partitions is normal when other members own them; it is stalled only when the backlog of
its topics also stops moving, i.e. nobody in the group commits progress on it.

``StallWatch.observe`` is called at every probe with the member's assignment size and, when that
is zero, each partition's (consumed position, end offset). After ``report_after_s`` of a standing
backlog it says ``stalled`` (the caller logs it, sets its metric and readiness); after
``rejoin_after_s`` it says ``rejoin`` once (the caller leaves the group and joins again) and starts
over. ``joining`` applies the same limits to a join (or rebalance) that does not complete.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

P = TypeVar("P", bound=Hashable)

Verdict = Literal["ok", "waiting", "stalled", "rejoin"]
"""``waiting``: a backlog stands but not for long enough to report it yet."""


@dataclass(frozen=True)
class StallState:
    verdict: Verdict
    unconsumed: int
    """Messages between the consumed positions and the ends of the member's topics."""
    stalled_s: float
    """For how long the backlog has stood without progress (0 when it does not)."""
    joining: bool = False
    """The member has not completed a join (or rebalance) for that long: no backlog is known."""


class StallWatch(Generic[P]):
    """Tracks one group member across probes (see the module docstring)."""

    def __init__(self, report_after_s: float, rejoin_after_s: float) -> None:
        if rejoin_after_s < report_after_s:
            raise ValueError("rejoin_after_s must not be below report_after_s")
        self._report_after_s = report_after_s
        self._rejoin_after_s = rejoin_after_s
        self._since: float | None = None
        self._positions: dict[P, int] = {}

    def observe(
        self, now: float, assigned: int, backlog: Mapping[P, tuple[int, int]]
    ) -> StallState:
        """One probe: ``assigned`` partitions; ``backlog`` maps partition → (position, end)."""
        unconsumed = sum(max(0, end - position) for position, end in backlog.values())
        positions = {tp: position for tp, (position, _) in backlog.items()}
        moved = positions != self._positions
        self._positions = positions
        if assigned or not unconsumed:
            self._since = None
            return StallState("ok", unconsumed, 0.0)
        if self._since is None or moved:
            self._since = now
        stalled_s = now - self._since
        if stalled_s >= self._rejoin_after_s:
            self._since = None
            self._positions = {}
            return StallState("rejoin", unconsumed, stalled_s)
        if stalled_s >= self._report_after_s:
            return StallState("stalled", unconsumed, stalled_s)
        return StallState("waiting", unconsumed, stalled_s)

    def joining(self, now: float, since: float) -> StallState:
        """One probe of a member whose join (or rebalance) has not completed since ``since``:
        a join that never completes leaves it without partitions just as well."""
        stalled_s = now - since
        if stalled_s >= self._rejoin_after_s:
            verdict: Verdict = "rejoin"
        elif stalled_s >= self._report_after_s:
            verdict = "stalled"
        else:
            verdict = "waiting"
        return StallState(verdict, 0, stalled_s, joining=True)
