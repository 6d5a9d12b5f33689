-- name: due_schedules
-- Workflows that owe a tick at $1: published and not yet seen at this published version, or a
-- fire time has come. Frozen ones are included so their fire times are accounted for as they
-- pass. $3: workflows already settled in this tick.
SELECT w.id AS workflow_id, s.workflow_id IS NOT NULL AS has_state
FROM workflows w
LEFT JOIN schedule_state s ON s.workflow_id = w.id
WHERE w.published_version IS NOT NULL
  AND (s.workflow_id IS NULL
       OR s.version IS DISTINCT FROM w.published_version
       OR s.next_fire_at <= $1)
  AND w.id <> ALL($3::bigint[])
ORDER BY s.next_fire_at NULLS FIRST, w.id
LIMIT $2;

-- name: ensure_state
INSERT INTO schedule_state (workflow_id) VALUES ($1) ON CONFLICT (workflow_id) DO NOTHING;

-- name: lock_state
-- One replica at a time per workflow; the others skip it rather than wait for a stale answer.
SELECT w.name, w.frozen, w.published_version AS version, w.updated_at AS changed_at,
       v.spec->>'type' AS type, v.spec->'schedule' AS schedule, s.last_fire_at,
       s.schedule IS NOT DISTINCT FROM v.spec->'schedule' AS same_schedule
FROM schedule_state s
JOIN workflows w ON w.id = s.workflow_id
JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.published_version
WHERE s.workflow_id = $1
FOR UPDATE OF s SKIP LOCKED;

-- name: save_state
UPDATE schedule_state s
SET last_fire_at = $2,
    next_fire_at = $3,
    version = $4,
    schedule = (SELECT v.spec->'schedule' FROM workflow_versions v
                WHERE v.workflow_id = s.workflow_id AND v.version = $4),
    updated_at = now()
WHERE s.workflow_id = $1;

-- name: next_due
SELECT min(next_fire_at) FROM schedule_state;

-- name: database_clock
SELECT clock_timestamp();
