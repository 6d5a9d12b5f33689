-- name: list_events
SELECT e.id, w.name AS workspace, e.source, e.subject, e.ref, e.received_at, e.payload,
       e.payload_truncated, e.error, e.replay_id, e.replay_of
FROM events e JOIN workspaces w ON w.id = e.workspace_id
WHERE e.workspace_id = $1
  AND ($2::bigint IS NULL OR e.id < $2)
  AND ($3::timestamptz IS NULL OR e.received_at >= $3)
  AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM event_outcomes o
                                   WHERE o.event_id = e.id AND o.trigger_name = $4))
  AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM event_outcomes o
                                   WHERE o.event_id = e.id AND o.outcome = $5))
  AND (NOT e.platform_only OR $7)
ORDER BY e.id DESC
LIMIT $6;

-- name: get_event
SELECT e.id, w.name AS workspace, e.source, e.subject, e.ref, e.received_at, e.payload,
       e.payload_truncated, e.error, e.replay_id, e.replay_of
FROM events e JOIN workspaces w ON w.id = e.workspace_id
WHERE e.id = $1 AND e.workspace_id = $2 AND (NOT e.platform_only OR $3);

-- name: outcomes_of
SELECT event_id, trigger_name AS trigger, workflow_name AS workflow, outcome, instance_ids, detail
FROM event_outcomes WHERE event_id = ANY($1::bigint[]) ORDER BY event_id, seq;

-- name: prune_admissions
DELETE FROM admissions WHERE created_at < now() - make_interval(days => $1);

-- name: watching_triggers
-- A workspace's triggers on an event's topic / bucket that existed when it arrived: those with
-- no stored verdict (not index candidates, DESIGN.md 7.1) are explained when the event is read.
SELECT name, enabled, spec FROM triggers
WHERE workspace_id = $1 AND type = $2 AND subject = $3 AND created_at <= $4
ORDER BY name;
