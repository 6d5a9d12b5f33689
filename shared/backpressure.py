"""Backpressure (`policy.max_waiting`): which triggers their sources must hold back, and why.

A workflow with `policy.max_waiting` is *full* once that many of its instances are `waiting`;
its sources then stop feeding it instead of growing the queue, and start again once the waiting
count is below 80 % of the bound (hysteresis, so a queue hovering at the bound does not make the
sources flap). "Its sources" are the enabled triggers bound to the published version: every
trigger of a full workflow is *held*.

Admission is per event, so an event is held whole: an event matching a held trigger is not
admitted at all, not even for the other triggers or workflows it matches (a trigger feeding two
workflows of which one is full feeds neither until it drains). Holding part of an event would
need a second admission of the same event later, which dedup would count as a duplicate.

How each source holds (see docs/event-semantics.md): the Kafka listener pauses the partitions
of the held triggers' topics (the whole topic: a partition cannot be half paused); the webhook
answers 503 with `Retry-After`; SQS leaves the messages in the queue; the poll source skips the
held targets' listing. Nothing is dropped, and dedup still absorbs redeliveries.

Each source process keeps one `Backpressure`: `refresh` runs one query (per batch or interval,
never per event) that counts, for every bounded workflow, its waiting instances up to the bound;
the decision itself (`paused_next`) is pure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Gauge
from pydantic import TypeAdapter

from shared.db.pool import Executor
from shared.db.queries import load
from shared.kafka.cluster import cluster_of
from shared.matching import match
from shared.models.common import Record
from shared.models.events import IncomingEvent
from shared.models.triggers import AnyTriggerSpec, KafkaTriggerSpec, TriggerSpec

Q = load(__file__)
log = structlog.get_logger("sluice.backpressure")

RESUME_FRACTION = 0.8
"""Sources of a full workflow resume once its waiting count is below this share of the bound."""

PAUSED = Gauge(
    "sluice_backpressure_paused",
    "1 while the source holds back the trigger's events because a workflow it feeds has "
    "policy.max_waiting instances waiting (resumes below 80 %), else 0",
    ["source", "workspace_id", "trigger"],
)

_SPECS: TypeAdapter[AnyTriggerSpec] = TypeAdapter(TriggerSpec)


def resume_below(max_waiting: int) -> int:
    """The waiting count under which a full workflow's sources resume: 80 % of the bound."""
    return max(1, math.ceil(max_waiting * RESUME_FRACTION))


def paused_next(paused: bool, waiting: int, max_waiting: int) -> bool:
    """Whether the sources of a workflow hold back after seeing `waiting` instances waiting.

    Pause at the bound; once paused, stay paused until the count is below 80 % of it.
    """
    if waiting >= max_waiting:
        return True
    return paused and waiting >= resume_below(max_waiting)


@dataclass(frozen=True)
class Bounded:
    """One (trigger, workflow) binding of a workflow with `policy.max_waiting`, as counted."""

    trigger_id: int
    workspace_id: int
    trigger: str
    type: str
    subject: str
    spec: AnyTriggerSpec
    workflow_id: int
    workflow: str
    max_waiting: int
    waiting: int
    """Waiting instances, counted up to `max_waiting` (all the decision needs)."""


@dataclass(frozen=True)
class Hold:
    """A trigger whose events its sources hold back, with the full workflows that say so."""

    trigger_id: int
    workspace_id: int
    trigger: str
    type: str
    subject: str
    cluster: str | None
    spec: AnyTriggerSpec
    full: tuple[tuple[str, int, int], ...]
    """(workflow, waiting, max_waiting) of each full workflow the trigger feeds."""

    @property
    def reason(self) -> str:
        # Counts stop at the bound (the query needs no more), so a full workflow reads "at".
        parts = [
            f"workflow {name!r} "
            + (
                f"is at max_waiting {bound} waiting instances"
                if waiting >= bound
                else f"has {waiting} of max_waiting {bound} instances waiting"
            )
            + f" (resumes below {resume_below(bound)})"
            for name, waiting, bound in self.full
        ]
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "trigger": self.trigger,
            "type": self.type,
            "subject": self.subject,
            "reason": self.reason,
        }


class WorkflowBackpressure(Record):
    """A workflow's queue against its bound, as the API and the console show it."""

    waiting: int
    max_waiting: int
    resumes_below: int
    state: str
    """`holding` (at the bound: its sources hold back), `draining` (at 80 % or more: sources
    that hold stay so until below it), `open`."""


def workflow_state(waiting: int, max_waiting: int) -> str:
    if waiting >= max_waiting:
        return "holding"
    return "draining" if waiting >= resume_below(max_waiting) else "open"


async def of_workflow(pool: Executor, workflow_id: int) -> WorkflowBackpressure | None:
    """The backpressure of one workflow (its published version's bound), None when unbounded."""
    row = await pool.fetchrow(Q["workflow_backpressure"], workflow_id)
    if row is None or row["max_waiting"] is None:
        return None
    waiting, bound = int(row["waiting"]), int(row["max_waiting"])
    return WorkflowBackpressure(
        waiting=waiting,
        max_waiting=bound,
        resumes_below=resume_below(bound),
        state=workflow_state(waiting, bound),
    )


async def bounded(pool: Executor) -> list[Bounded]:
    """Every binding of a published, unfrozen workflow with `max_waiting` to an enabled trigger,
    with the workflow's waiting count: one query."""
    rows = await pool.fetch(Q["bounded_triggers"])
    return [
        Bounded(
            trigger_id=r["trigger_id"],
            workspace_id=r["workspace_id"],
            trigger=r["trigger"],
            type=r["type"],
            subject=r["subject"],
            spec=_SPECS.validate_python(r["trigger_spec"]),
            workflow_id=r["workflow_id"],
            workflow=r["workflow"],
            max_waiting=r["max_waiting"],
            waiting=r["waiting"],
        )
        for r in rows
    ]


RETRY_AFTER_S = 5
"""What a held webhook request is told to wait (`Retry-After`): a few draining runs' time."""


class HeldBack(Exception):
    """A submission was not admitted: an event of it matches a held trigger. Nothing of it was
    recorded; the source keeps it (Kafka offset not committed, SQS message not deleted, webhook
    answered 503) and offers it again later."""

    def __init__(self, hold: Hold, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(f"held back by trigger {hold.trigger!r}: {hold.reason}")
        self.hold = hold
        self.retry_after_s = retry_after_s


class Backpressure:
    """The held triggers of one source process, with the hysteresis state behind them.

    `refresh(pool)` (one query) or `apply(rows)` (pure) updates it; `holds()`, `holding(event)`
    and `held_topics(cluster)` answer the sources; `as_dict()` is the `/readyz` detail.
    """

    def __init__(
        self,
        source: str,
        *,
        idle_every_s: float = 1.0,
        on_change: Callable[[Backpressure], None] | None = None,
    ) -> None:
        self._source = source
        self._idle_every_s = idle_every_s
        self._on_change = on_change
        self._refreshed_at: float | None = None
        self._paused: set[int] = set()
        """Workflow ids whose sources hold back."""
        self._holds: dict[int, Hold] = {}
        self._by_subject: dict[tuple[str, str], list[Hold]] = {}
        self._labels: set[tuple[str, str]] = set()
        """The gauge series this process set (workspace id, trigger)."""
        self._bounded: list[Bounded] = []

    async def refresh(self, pool: Executor) -> None:
        """Count again and update which triggers are held. While no workflow sets
        `max_waiting` the count is read at most every `idle_every_s`, so sources that call this
        per batch cost nothing extra when the feature is not used."""
        now = time.monotonic()
        if (
            self.idle
            and self._refreshed_at is not None
            and now - self._refreshed_at < self._idle_every_s
        ):
            return
        self.apply(await bounded(pool))
        self._refreshed_at = now

    def apply(self, rows: list[Bounded]) -> None:
        """Update the held triggers from freshly counted bindings."""
        paused: set[int] = set()
        full: dict[int, list[Bounded]] = {}
        labels: dict[tuple[str, str], int] = {}
        for row in rows:
            labels[(str(row.workspace_id), row.trigger)] = row.trigger_id
            if paused_next(row.workflow_id in self._paused, row.waiting, row.max_waiting):
                paused.add(row.workflow_id)
                full.setdefault(row.trigger_id, []).append(row)
        holds: dict[int, Hold] = {}
        for trigger_id, rows_of in full.items():
            first = rows_of[0]
            holds[trigger_id] = Hold(
                trigger_id=trigger_id,
                workspace_id=first.workspace_id,
                trigger=first.trigger,
                type=first.type,
                subject=first.subject,
                cluster=_cluster(first),
                spec=first.spec,
                full=tuple((r.workflow, r.waiting, r.max_waiting) for r in rows_of),
            )
        for trigger_id in holds.keys() - self._holds.keys():
            log.warning("backpressure_paused", source=self._source, **holds[trigger_id].as_dict())
        for trigger_id in self._holds.keys() - holds.keys():
            log.info(
                "backpressure_resumed", source=self._source, trigger=self._holds[trigger_id].trigger
            )
        for (workspace, trigger), trigger_id in labels.items():
            PAUSED.labels(self._source, workspace, trigger).set(1 if trigger_id in holds else 0)
        for workspace, trigger in self._labels - labels.keys():
            try:
                PAUSED.remove(self._source, workspace, trigger)
            except KeyError:
                pass
        self._labels = set(labels)
        self._bounded = list(rows)
        self._paused = paused
        self._holds = holds
        by_subject: dict[tuple[str, str], list[Hold]] = {}
        for hold in holds.values():
            by_subject.setdefault((hold.type, hold.subject), []).append(hold)
        self._by_subject = by_subject
        if self._on_change is not None:
            self._on_change(self)

    def holds(self) -> list[Hold]:
        return sorted(self._holds.values(), key=lambda h: (h.workspace_id, h.trigger))

    def holding(self, event: IncomingEvent) -> Hold | None:
        """The held trigger that holds `event` back (it would match it), or None.

        Invalid events are never held: they create no instances, and recording them keeps a
        poison message from cycling through a queue.
        """
        if event.message is None or event.error:
            return None
        for hold in self._by_subject.get((event.source, event.subject), ()):
            if event.source == "kafka" and hold.cluster != event.cluster:
                continue
            if match(hold.spec, event.message).matched:
                return hold
        return None

    def held_topics(self, cluster: str | None) -> set[str]:
        """The topics of the cluster whose partitions the Kafka listener pauses."""
        return {
            h.subject for h in self._holds.values() if h.type == "kafka" and h.cluster == cluster
        }

    def bounded_topics(self, cluster: str | None) -> set[str]:
        """The topics of the cluster that feed any workflow with `max_waiting`."""
        return {r.subject for r in self._bounded if r.type == "kafka" and _cluster(r) == cluster}

    def bounds(self, type_: str) -> bool:
        """Whether any trigger of this type feeds a workflow with `max_waiting`."""
        return any(r.type == type_ for r in self._bounded)

    @property
    def idle(self) -> bool:
        """No workflow sets `max_waiting`: nothing to hold, so sources may check less often."""
        return not self._bounded

    def as_dict(self) -> dict[str, Any]:
        return {"paused": [h.as_dict() for h in self.holds()]}

    def describe(self) -> str:
        """One line for `/readyz`: what is held and why."""
        if not self._holds:
            return "no trigger held (no workflow at policy.max_waiting)"
        return "holding back " + "; ".join(
            f"trigger {h.trigger!r} ({h.subject}): {h.reason}" for h in self.holds()
        )


def _cluster(row: Bounded) -> str | None:
    connection = row.spec.connection if isinstance(row.spec, KafkaTriggerSpec) else None
    return cluster_of(row.workspace_id, connection) if row.type == "kafka" else None
