"""admit(event): the one transactional path from an event to workflow instances.

For a batch of events, in ONE transaction: record each event (once per workspace that has a
trigger on its source), evaluate every candidate trigger, insert one admission per (trigger, dedup
key) with ON CONFLICT DO NOTHING, create the instances of every published, unfrozen workflow bound
to each newly admitted trigger, write one audit outcome per trigger (and per workflow), NOTIFY.

Contract 2: the admission UNIQUE constraint and the instance rows share the transaction, so a
redelivered event can never make a second instance, and a crash before commit leaves nothing.
Contract 3 is the caller's: acknowledge the source only after this returns.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from logging import INFO
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from shared import metrics
from shared.coalesce import coalesce_of
from shared.db import coalesce_windows
from shared.db import triggers as trigger_repo
from shared.db import workflows as workflow_repo
from shared.db.errors import Invalid
from shared.db.instances import Created, NewInstance, create_instances
from shared.db.pool import Connection, Executor, acquire, json_text, next_ids
from shared.db.queries import load
from shared.db.workflows import LoadedVersion
from shared.dedup import DedupError, dedup_key, legacy_kafka_key, same_record
from shared.matching import match
from shared.models.events import MAX_PAYLOAD_BYTES, AdmitResult, IncomingEvent, OutcomeOut
from shared.models.instances import RunRequest
from shared.models.workflows import WorkflowSpec
from shared.trigger_set import current as current_triggers

Q = load(__file__)
log = structlog.get_logger("sluice.intake")


@dataclass
class _Outcome:
    trigger_id: int | None
    trigger: str | None
    workflow: str | None
    outcome: str
    detail: str | None = None
    instance_ids: list[int] = field(default_factory=list)


@dataclass
class _Record:
    """One event as recorded in one workspace."""

    event: IncomingEvent
    workspace_id: int
    id: int = 0
    outcomes: list[_Outcome] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    # Matched no workspace's trigger: audited in `default`, readable by platform admins only.
    platform_only: bool = False
    # A replayed record: the event that admitted it first, if any.
    replay_of: int | None = None
    # The message as stored (JSON text), for the instances it creates; None when truncated.
    message_json: str | None = None


@dataclass
class _Pending:
    """A matched trigger waiting for its admission insert."""

    record: _Record
    trigger: trigger_repo.CandidateTrigger
    key: str | None
    workflows: list[LoadedVersion]
    outcome: _Outcome


def _payload(event: IncomingEvent) -> tuple[str | None, bool]:
    """The audit copy of a payload as JSON text: over 1 MiB it is stored as a truncated string,
    flagged. Encoded once here; the same text goes into the event's instances."""
    value: Any = event.message if event.message is not None else event.raw
    if value is None:
        return None, False
    text = json_text(value)
    # A character takes at most 4 bytes in UTF-8: only long texts need their bytes counted.
    if len(text) * 4 <= MAX_PAYLOAD_BYTES:
        return text, False
    raw = value if isinstance(value, str) else text
    encoded = raw.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_PAYLOAD_BYTES:
        return text, False
    return json_text(encoded[:MAX_PAYLOAD_BYTES].decode("utf-8", "ignore")), True


async def _default_workspace(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT id FROM workspaces WHERE name = 'default'"))


async def admit(pool: Executor, event: IncomingEvent) -> list[AdmitResult]:
    """Admit one event; see `admit_batch`."""
    return (await admit_batch(pool, [event]))[0]


async def admit_batch(pool: Executor, events: list[IncomingEvent]) -> list[list[AdmitResult]]:
    """Admit a batch of events in one transaction; per event, one result per workspace."""
    if not events:
        return []
    async with acquire(pool) as conn:
        return await _admit_in(conn, events)


async def _admit_in(conn: Connection, events: list[IncomingEvent]) -> list[list[AdmitResult]]:
    async with conn.transaction():
        records_per_event = await _evaluate(conn, events)
        records = [r for rs in records_per_event for r in rs]
        await _insert_events(conn, records)
        pending = [p for r in records for p in r.pending]
        await _link_replays(conn, records, pending)
        await _admit_pending(conn, pending)
        await _insert_outcomes(conn, records)
    results = []
    received: Counter[str] = Counter(e.source for e in events)
    outcome_counts: Counter[str] = Counter()
    logging = log.is_enabled_for(INFO)
    for recs in records_per_event:
        out = []
        for r in recs:
            outcomes = [
                OutcomeOut(
                    trigger=o.trigger,
                    workflow=o.workflow,
                    outcome=o.outcome,
                    instance_ids=o.instance_ids,
                    detail=o.detail,
                )
                for o in r.outcomes
            ]
            outcome_counts.update(o.outcome for o in outcomes)
            out.append(AdmitResult(event_id=r.id, workspace_id=r.workspace_id, outcomes=outcomes))
            if logging:
                _log(r, outcomes)
        results.append(out)
    # One labelled increment per batch: a labels() lookup per event costs more than the event.
    for source, n in received.items():
        metrics.EVENTS_RECEIVED.labels(source).inc(n)
    for outcome, n in outcome_counts.items():
        metrics.EVENT_OUTCOMES.labels(outcome).inc(n)
    return results


# Triggers named in one event's log line. With thousands of triggers on one bucket, naming every
# outcome made lines of ~40 KB per event; the full record is in the event's stored outcomes.
LOGGED_OUTCOMES = 5


def _log(record: _Record, outcomes: list[OutcomeOut]) -> None:
    kinds = {o.outcome for o in outcomes}
    headline = "admitted" if "admitted" in kinds else (outcomes[0].outcome if outcomes else "none")
    # Admissions first: they are what a reader of the log looks for.
    shown = sorted(outcomes, key=lambda o: o.outcome != "admitted")[:LOGGED_OUTCOMES]
    extra: dict[str, Any] = {}
    if len(outcomes) > len(shown):
        extra["outcome_counts"] = dict(Counter(o.outcome for o in outcomes))
    log.info(
        f"event_{headline}",
        event_id=record.id,
        source=record.event.source,
        ref=record.event.ref,
        trigger=sorted({o.trigger for o in shown if o.trigger}),
        outcomes=[f"{o.trigger or '-'}/{o.workflow or '-'}:{o.outcome}" for o in shown],
        instance_ids=[i for o in outcomes for i in o.instance_ids],
        **extra,
    )


async def _evaluate(conn: Connection, events: list[IncomingEvent]) -> list[list[_Record]]:
    """Match every event against its candidate triggers (pure work after two queries).

    Candidates come from the in-memory trigger set (`shared.trigger_set`), checked current with
    one primary-key read per batch.
    """
    watchers = await current_triggers(conn)
    per_event = [watchers.to_evaluate(e) for e in events]
    trigger_ids = sorted({t.id for by_ws in per_event for ts in by_ws.values() for t in ts})
    published: dict[int, list[LoadedVersion]] = defaultdict(list)
    blocked: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    if trigger_ids:
        specs: dict[tuple[int, int], WorkflowSpec] = {}
        for w in await conn.fetch(Q["bound_workflows"], trigger_ids):
            if w["published_version"] is not None and w["trigger_id"] is not None:
                if w["frozen"]:
                    blocked[w["trigger_id"]].append(
                        (w["name"], "frozen", "workflow is frozen: events are recorded, not run")
                    )
                else:
                    key = (w["id"], w["published_version"])
                    if key not in specs:
                        specs[key] = WorkflowSpec.model_validate(w["spec"])
                    published[w["trigger_id"]].append(
                        LoadedVersion(
                            workflow_id=w["id"],
                            workspace_id=w["workspace_id"],
                            name=w["name"],
                            type=w["type"],
                            frozen=False,
                            version=w["published_version"],
                            spec=specs[key],
                            nodes=w["plan"],
                        )
                    )
            draft = w["draft_trigger_id"]
            if draft is not None and draft != w["trigger_id"]:
                detail = (
                    "workflow has no published version"
                    if w["published_version"] is None
                    else f"the latest version binds this trigger but version "
                    f"{w['published_version']} is published"
                )
                blocked[draft].append((w["name"], "unpublished", detail))
    default_ws: int | None = None
    out: list[list[_Record]] = []
    for event, by_ws in zip(events, per_event, strict=True):
        if not by_ws:
            if default_ws is None:
                default_ws = await _default_workspace(conn)
            record = _Record(event, default_ws, platform_only=True)
            if event.error:
                record.outcomes.append(_Outcome(None, None, None, "invalid", event.error))
            else:
                record.outcomes.append(
                    _Outcome(
                        None, None, None, "no_trigger", f"no trigger watches {event.subject!r}"
                    )
                )
            out.append([record])
            continue
        records = []
        for ws_id, ws_triggers in sorted(by_ws.items()):
            record = _Record(event, ws_id)
            if event.error or event.message is None:
                record.outcomes.append(
                    _Outcome(None, None, None, "invalid", event.error or "event has no message")
                )
            elif not ws_triggers:
                # Many triggers watch this source and none can match: one summary row; each
                # trigger's own reason is worked out when the event is read.
                record.outcomes.append(
                    _Outcome(
                        None,
                        None,
                        None,
                        "filtered",
                        f"none of the {watchers.watching(event, ws_id)} triggers on "
                        f"{event.subject!r} can match this event; read the event for each "
                        "trigger's reason",
                    )
                )
            else:
                for t in ws_triggers:
                    record.pending.extend(
                        _evaluate_trigger(record, t, published[t.id], blocked[t.id])
                    )
            records.append(record)
        out.append(records)
    return out


def _evaluate_trigger(
    record: _Record,
    t: trigger_repo.CandidateTrigger,
    runnable: list[LoadedVersion],
    blocked: list[tuple[str, str, str]],
) -> list[_Pending]:
    message = record.event.message
    assert message is not None
    if not t.enabled:
        record.outcomes.append(_Outcome(t.id, t.name, None, "disabled", "trigger is disabled"))
        return []
    verdict = match(t.spec, message)
    if not verdict.matched:
        kind = "invalid" if verdict.error else "filtered"
        record.outcomes.append(_Outcome(t.id, t.name, None, kind, verdict.reason))
        return []
    for name, kind, detail in blocked:
        record.outcomes.append(_Outcome(t.id, t.name, name, kind, detail))
    if not runnable:
        if not blocked:
            record.outcomes.append(
                _Outcome(t.id, t.name, None, "no_workflow", "no workflow is bound to this trigger")
            )
        return []
    try:
        key = dedup_key(t.spec, message)
    except DedupError as exc:
        record.outcomes.append(_Outcome(t.id, t.name, None, "invalid", str(exc)))
        return []
    outcome = _Outcome(t.id, t.name, None, "admitted")
    record.outcomes.append(outcome)
    return [_Pending(record, t, key, runnable, outcome)]


async def _insert_events(conn: Connection, records: list[_Record]) -> None:
    ids = await next_ids(conn, "events_id_seq", len(records))
    cols: list[list[Any]] = [[] for _ in range(10)]
    for rid, r in zip(ids, records, strict=True):
        r.id = rid
        payload, truncated = _payload(r.event)
        e = r.event
        if e.message is not None and not truncated:
            r.message_json = payload
        row = (
            rid,
            r.workspace_id,
            e.source,
            e.subject,
            e.ref,
            e.received_at,
            payload,
            truncated,
            e.error,
            r.platform_only,
        )
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    await conn.execute(Q["insert_events"], *cols)


async def _admit_pending(conn: Connection, pending: list[_Pending]) -> None:
    if not pending:
        return
    for p in pending:
        if p.key is None:
            # dedup "none": every delivery is its own admission.
            p.key = f"none:{p.record.id}"
    await _match_legacy_keys(conn, pending)
    rows = await conn.fetch(
        Q["insert_admissions"],
        [p.trigger.id for p in pending],
        [p.key for p in pending],
        [p.record.id for p in pending],
    )
    won: dict[tuple[int, str], tuple[int, int]] = {
        (r["trigger_id"], r["dedup_key"]): (r["id"], r["event_id"]) for r in rows
    }
    creations: list[tuple[_Pending, NewInstance]] = []
    lost: list[_Pending] = []
    joining: list[tuple[_Pending, int]] = []
    for p in pending:
        assert p.key is not None
        hit = won.get((p.trigger.id, p.key))
        if hit is None or hit[1] != p.record.id:
            lost.append(p)
            continue
        if coalesce_of(p.trigger.spec) is not None:
            joining.append((p, hit[0]))
            continue
        for version in p.workflows:
            creations.append(
                (
                    p,
                    NewInstance(
                        version=version,
                        kind="triggered" if p.record.event.replay is None else "replay",
                        cyctime=p.record.event.received_at,
                        trigger_message=p.record.event.message,
                        trigger_message_json=p.record.message_json,
                        event_id=p.record.id,
                        admission_id=hit[0],
                    ),
                )
            )
    created = await create_instances(conn, [c for _, c in creations])
    for (p, item), made in zip(creations, created, strict=True):
        assert made is not None
        metrics.INSTANCES_CREATED.labels(item.kind).inc()
        if made.state == "cancelled":
            p.record.outcomes.append(
                _Outcome(
                    p.trigger.id,
                    p.trigger.name,
                    item.version.name,
                    "overflow",
                    "max_parallel_instances reached; instance created cancelled (cancel_new)",
                    [made.id],
                )
            )
        else:
            p.outcome.instance_ids.append(made.id)
    await _coalesce(conn, joining)
    if lost:
        rows = await conn.fetch(
            Q["admitted_instances"], [p.trigger.id for p in lost], [p.key for p in lost]
        )
        first: dict[tuple[int, str], Any] = {(r["trigger_id"], r["dedup_key"]): r for r in rows}
        windows = await coalesce_windows.earlier_instances(
            conn, [(p.trigger.id, p.key) for p in lost if coalesce_of(p.trigger.spec) and p.key]
        )
        for p in lost:
            assert p.key is not None
            prior = first.get((p.trigger.id, p.key))
            p.outcome.outcome = "duplicate"
            if prior is not None and (p.trigger.id, p.key) in windows:
                prior = {**prior, "instance_ids": windows[(p.trigger.id, p.key)]}
            if prior is not None:
                p.outcome.instance_ids = list(prior["instance_ids"])
                p.outcome.detail = (
                    f"dedup key {p.key!r} first admitted by event {prior['event_id']}"
                )
            else:
                p.outcome.detail = f"dedup key {p.key!r} already admitted"
    for p in pending:
        if p.outcome.outcome == "admitted" and not p.outcome.instance_ids:
            p.outcome.outcome = "overflow"
            p.outcome.detail = "every bound workflow was at its limit (cancel_new)"


# Admission keys of `mode: all` replays: `replay:<replay id>:<source position>`. Unique per replay
# and record, so a replay creates its instances once even when its job is carried out again.
REPLAY_KEY_PREFIX = "replay:"


async def _link_replays(conn: Connection, records: list[_Record], pending: list[_Pending]) -> None:
    """Link replayed events to the events that first admitted their records (under the trigger's
    normal dedup key); for `mode: all`, give their admissions the replay's own key."""
    replayed = [r for r in records if r.event.replay is not None]
    if not replayed:
        return
    keyed = [p for p in pending if p.record.event.replay is not None and p.key is not None]
    if keyed:
        rows = await conn.fetch(
            Q["original_admissions"], [p.trigger.id for p in keyed], [p.key for p in keyed]
        )
        first = {(r["trigger_id"], r["dedup_key"]): r["event_id"] for r in rows}
        for p in keyed:
            p.record.replay_of = first.get((p.trigger.id, p.key))
    for p in pending:
        replay = p.record.event.replay
        if replay is not None and replay.mode == "all":
            p.key = f"{REPLAY_KEY_PREFIX}{replay.replay_id}:{p.record.event.ref}"
            if p.record.replay_of is not None:
                p.outcome.detail = f"replay {replay.replay_id} of event {p.record.replay_of}"
    await conn.execute(
        Q["mark_replayed_events"],
        [r.id for r in replayed],
        [r.event.replay.replay_id for r in replayed if r.event.replay is not None],
        [r.replay_of for r in replayed],
    )


async def _coalesce(conn: Connection, joining: list[tuple[_Pending, int]]) -> None:
    """Admissions of triggers with `coalesce` join their workflows' open windows instead of
    creating instances; the outcome names the instance each window closes into."""
    items = [
        coalesce_windows.Joining(
            trigger_id=p.trigger.id,
            option=option,
            version=version,
            admission_id=admission_id,
            event_id=p.record.id,
            message=p.record.event.message,
        )
        for p, admission_id in joining
        if (option := coalesce_of(p.trigger.spec)) is not None
        for version in p.workflows
    ]
    joined = iter(await coalesce_windows.join(conn, items))
    for p, _ in joining:
        places = [next(joined) for _ in p.workflows]
        p.outcome.outcome = "coalesced"
        p.outcome.instance_ids = [j.instance_id for j in places]
        p.outcome.detail = "; ".join(
            f"event {j.seq} of at most {j.max_events} in window {j.window_id} "
            + ("(closed)" if j.closed else "(the instance is created when the window closes)")
            for j in places
        )


async def _match_legacy_keys(conn: Connection, pending: list[_Pending]) -> None:
    """Admissions written before Kafka `offset` keys identified records are keyed by position
    alone. A delivery of a record admitted that way takes that key (and so is a duplicate) when
    the stored message is the same record; a new record at a reused offset keeps its own key."""
    legacy: dict[tuple[int, str], list[_Pending]] = {}
    for p in pending:
        if p.key is not None and p.key.startswith(REPLAY_KEY_PREFIX):
            continue
        message = p.record.event.message
        old = legacy_kafka_key(p.trigger.spec, message) if message is not None else None
        if old is not None:
            legacy.setdefault((p.trigger.id, old), []).append(p)
    if not legacy:
        return
    rows = await conn.fetch(Q["legacy_admissions"], [k[0] for k in legacy], [k[1] for k in legacy])
    for r in rows:
        for p in legacy[(r["trigger_id"], r["dedup_key"])]:
            message = p.record.event.message
            if message is not None and same_record(r["payload"], message):
                p.key = r["dedup_key"]


async def _insert_outcomes(conn: Connection, records: list[_Record]) -> None:
    cols: list[list[Any]] = [[] for _ in range(8)]
    for r in records:
        for seq, o in enumerate(r.outcomes):
            row = (
                r.id,
                seq,
                o.trigger_id,
                o.trigger,
                o.workflow,
                o.outcome,
                ",".join(map(str, o.instance_ids)),
                o.detail,
            )
            for col, value in zip(cols, row, strict=True):
                col.append(value)
    if cols[0]:
        await conn.execute(Q["insert_outcomes"], *cols)


def cyctime_for(bizdate: date | None, now: datetime, zone: str) -> datetime:
    """The base time of a run: now, or for a requested business date the day after it at the
    current wall time in the workflow's zone, so `${cyctime}` and `$[...]` agree with `${bizdate}`.
    """
    if bizdate is None:
        return now
    local = now.astimezone(ZoneInfo(zone))
    day = bizdate + timedelta(days=1)
    return local.replace(year=day.year, month=day.month, day=day.day)


async def request_run(
    conn: Connection,
    workspace_id: int,
    workflow: str,
    request: RunRequest,
    *,
    kind: str = "api",
    now: datetime,
) -> Created:
    """Create one instance for a manual/API run: same creation path as events, no dedup.

    The version is the request's `version`, else the latest draft with `draft`, else the
    published one; a workflow that was never published needs one of the first two.
    """
    async with conn.transaction():
        wf = await workflow_repo.get(conn, workspace_id, workflow)
        if request.version is not None:
            version = request.version
        elif request.draft:
            version = wf.current_version
        elif wf.published_version is not None:
            version = wf.published_version
        else:
            raise Invalid(
                "version",
                f"workflow {workflow!r} has no published version; publish it or run with "
                "draft=true or an explicit version",
            )
        loaded = await workflow_repo.load_version(conn, wf.id, version)
        made = await create_instances(
            conn,
            [
                NewInstance(
                    version=loaded,
                    kind=kind,
                    cyctime=cyctime_for(request.bizdate, now, loaded.spec.zone),
                    bizdate=request.bizdate,
                    priority=request.priority,
                    parameters=request.parameters,
                    trigger_message=request.trigger_message,
                )
            ],
        )
    created = made[0]
    assert created is not None
    metrics.INSTANCES_CREATED.labels(kind).inc()
    log.info("instance_created", instance_id=created.id, workflow=workflow, kind=kind)
    return created
