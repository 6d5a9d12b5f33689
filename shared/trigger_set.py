"""Every trigger in memory, grouped by what events name, with the compiled index (DESIGN.md 7.1).

Intake reads the trigger table once per change instead of once per batch: `current` checks the
generation token (one primary-key read, migration 0019) and reloads only when it moved, so the
triggers a batch is matched against are always those of the latest commit.

Which triggers an event is evaluated against, per workspace watching its source: all of them
while the workspace has few on that topic / bucket (`FULLY_AUDITED`), so a small setup reads
every trigger's verdict in the stored outcomes; beyond that only the index's candidates (same
topic and key, or same bucket and literal key prefix), and the others are explained when the
event is read (`shared.db.events.get`). So an event costs per candidate, not per trigger.
"""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

from shared.db import triggers as trigger_repo
from shared.db.pool import Connection
from shared.kafka.cluster import cluster_of
from shared.matching import TriggerIndex
from shared.models.events import IncomingEvent
from shared.models.triggers import KafkaTriggerSpec, S3TriggerSpec

CandidateTrigger = trigger_repo.CandidateTrigger

# Up to this many triggers of one workspace on one topic / bucket, each one's verdict is stored.
FULLY_AUDITED = 16
# Trigger sets kept per process: one per database a process admits into is enough; tests and
# benchmarks that use several databases in one process would otherwise reload on every batch.
_KEPT = 4
_sets: OrderedDict[UUID, TriggerSet] = OrderedDict()


def _cluster(t: CandidateTrigger) -> str | None:
    connection = t.spec.connection if isinstance(t.spec, KafkaTriggerSpec) else None
    return cluster_of(t.workspace_id, connection)


class TriggerSet:
    """The triggers of one generation; pure, built once, shared by every batch until a change."""

    def __init__(self, token: UUID, triggers: list[CandidateTrigger]) -> None:
        self.token = token
        # (source, subject, kafka cluster) -> workspace id -> its triggers there, by name
        self._watching: dict[tuple[str, str, str | None], dict[int, list[CandidateTrigger]]] = {}
        indexed: list[tuple[KafkaTriggerSpec | S3TriggerSpec, CandidateTrigger]] = []
        for t in sorted(triggers, key=lambda t: t.name):
            key = (t.type, t.subject, _cluster(t))
            self._watching.setdefault(key, {}).setdefault(t.workspace_id, []).append(t)
            if isinstance(t.spec, KafkaTriggerSpec | S3TriggerSpec):
                indexed.append((t.spec, t))
        self._index = TriggerIndex(indexed)

    def to_evaluate(self, event: IncomingEvent) -> dict[int, list[CandidateTrigger]]:
        """Per workspace watching the event's source: the triggers to evaluate it against.

        A workspace maps to an empty list when it watches the source but none of its triggers
        can match (it still records the event). An event with no message gets every
        workspace and no triggers: it is recorded as invalid, nothing is evaluated.
        """
        cluster = event.cluster if event.source == "kafka" else None
        by_ws = self._watching.get((event.source, event.subject, cluster))
        if event.replay is not None:
            # A replay re-reads a source for one trigger (evaluated like a small workspace, every
            # outcome stored); the others saw these records live.
            wanted = event.replay.trigger_id
            by_ws = {
                ws: kept
                for ws, triggers in (by_ws or {}).items()
                if (kept := [t for t in triggers if t.id == wanted])
            }
        if not by_ws:
            return {}
        message = event.message
        if event.error or message is None:
            return {ws: [] for ws in by_ws}
        candidates: list[CandidateTrigger] | None = None
        out: dict[int, list[CandidateTrigger]] = {}
        for ws, triggers in by_ws.items():
            if len(triggers) <= FULLY_AUDITED or event.source not in ("kafka", "s3"):
                out[ws] = triggers
                continue
            if candidates is None:
                # Walked instead of the workspace's triggers: the cost is per candidate.
                candidates = sorted(
                    (
                        t
                        for t in self._index.candidates(event.source, message)
                        if t.subject == event.subject and _cluster(t) == cluster
                    ),
                    key=lambda t: t.name,
                )
            out[ws] = [t for t in candidates if t.workspace_id == ws]
        return out

    def watching(self, event: IncomingEvent, workspace_id: int) -> int:
        """How many triggers of the workspace watch the event's source (for audit summaries)."""
        cluster = event.cluster if event.source == "kafka" else None
        return len(
            self._watching.get((event.source, event.subject, cluster), {}).get(workspace_id, ())
        )


async def current(conn: Connection) -> TriggerSet:
    """The trigger set as of now: cached while the generation token is unchanged."""
    token = await trigger_repo.generation(conn)
    found = _sets.get(token)
    if found is None:
        token, triggers = await trigger_repo.load_all(conn)
        found = TriggerSet(token, triggers)
        _sets[token] = found
        while len(_sets) > _KEPT:
            _sets.popitem(last=False)
    _sets.move_to_end(token)
    return found
