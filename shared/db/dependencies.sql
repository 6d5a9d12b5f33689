-- name: workspace_dependencies
-- The depends_on of the latest version of every workflow in a workspace (cycle validation).
SELECT w.name, coalesce(v.spec -> 'depends_on', '[]'::jsonb) AS depends_on
FROM workflows w
JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.current_version
WHERE w.workspace_id = $1;

-- name: upstream_workflows
SELECT w.id, w.name FROM workflows w WHERE w.workspace_id = $1 AND w.name = ANY($2::text[]);

-- name: insert_dependencies
-- One row per (instance, upstream cycle). `pin`: instances of the same backfill, or of a backfill
-- created together with it, wait for that backfill's own upstream run. A row is created closed
-- when its upstream already succeeded, and for a `previous` cycle the upstream never had (the
-- first cycle has no previous one).
WITH t AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::text[], $5::text[],
                         $6::date[], $7::timestamptz[])
           AS t(instance_id, seq, upstream_workflow_id, upstream_name, cycle, bizdate, cyctime)
),
pinned AS (
    SELECT t.*, (
        SELECT u.id
        FROM instances me
        JOIN backfills mb ON mb.id = me.backfill_id
        JOIN instances u ON u.workflow_id = t.upstream_workflow_id AND u.bizdate = t.bizdate
                        AND (t.cyctime IS NULL OR u.cyctime = t.cyctime)
        JOIN backfills ub ON ub.id = u.backfill_id AND (ub.id = mb.id OR ub.group_id = mb.group_id)
        WHERE me.id = t.instance_id AND u.id <> t.instance_id
        ORDER BY u.id DESC LIMIT 1) AS pin
    FROM t
),
decided AS (
    SELECT p.*,
           CASE WHEN p.pin IS NOT NULL THEN
                    (SELECT u.id FROM instances u WHERE u.id = p.pin AND u.state = 'succeeded')
                ELSE (SELECT u.id FROM instances u
                      WHERE u.workflow_id = p.upstream_workflow_id AND u.state = 'succeeded'
                        AND u.bizdate = p.bizdate
                        AND (p.cyctime IS NULL OR u.cyctime = p.cyctime)
                      ORDER BY u.id LIMIT 1)
           END AS done_by,
           p.cycle = 'previous' AND p.pin IS NULL AND NOT EXISTS (
               SELECT 1 FROM instances u
               WHERE u.workflow_id = p.upstream_workflow_id AND u.bizdate <= p.bizdate
                 AND u.id <> p.instance_id) AS first_cycle
    FROM pinned p
)
INSERT INTO instance_dependencies (instance_id, seq, upstream_workflow_id, upstream_name, cycle,
                                   bizdate, cyctime, upstream_instance_id, satisfied_by,
                                   satisfied_at)
SELECT d.instance_id, d.seq, d.upstream_workflow_id, d.upstream_name, d.cycle, d.bizdate,
       d.cyctime, d.pin, d.done_by,
       CASE WHEN d.done_by IS NOT NULL OR d.first_cycle THEN clock_timestamp() END
FROM decided d
RETURNING instance_id, seq, upstream_name, bizdate, satisfied_at IS NULL AS open;

-- name: set_reasons
UPDATE instances i SET reason = t.reason, blocked = true
FROM unnest($1::bigint[], $2::text[]) AS t(id, reason)
WHERE i.id = t.id AND i.state = 'waiting';

-- name: release_missed
-- The fallback of the release: open rows of recent dependants whose upstream has succeeded.
-- Only a dependant created while its upstream was finishing (neither transaction saw the other's
-- rows) can miss the release by trigger, so only recent dependants are looked at.
WITH found AS (
    SELECT d.instance_id, d.seq, coalesce(
               (SELECT u.id FROM instances u
                WHERE u.id = d.upstream_instance_id AND u.state = 'succeeded'),
               (SELECT u.id FROM instances u
                WHERE d.upstream_instance_id IS NULL AND u.workflow_id = d.upstream_workflow_id
                  AND u.bizdate = d.bizdate AND (d.cyctime IS NULL OR u.cyctime = d.cyctime)
                  AND u.state = 'succeeded'
                ORDER BY u.id LIMIT 1)) AS by
    FROM instance_dependencies d
    JOIN instances i ON i.id = d.instance_id
    WHERE d.satisfied_at IS NULL AND i.state = 'waiting'
      AND i.created_at > now() - make_interval(secs => $1)
),
closed AS (
    UPDATE instance_dependencies d SET satisfied_by = f.by, satisfied_at = clock_timestamp()
    FROM found f
    WHERE f.by IS NOT NULL AND d.instance_id = f.instance_id AND d.seq = f.seq
      AND d.satisfied_at IS NULL
    RETURNING d.instance_id
)
SELECT DISTINCT instance_id FROM closed;

-- name: unblock
UPDATE instances i SET blocked = false, reason = NULL
WHERE i.id = ANY($1::bigint[]) AND i.blocked AND i.state = 'waiting'
  AND NOT EXISTS (SELECT 1 FROM instance_dependencies o
                  WHERE o.instance_id = i.id AND o.satisfied_at IS NULL)
RETURNING i.id;

-- name: instance_waits
-- What an instance waits (or waited) for, with the upstream run that decides it: the pinned
-- instance, else the latest instance of the upstream workflow for that cycle.
SELECT d.seq, d.upstream_name AS workflow, d.cycle, d.bizdate, d.cyctime,
       d.satisfied_by, d.satisfied_at,
       w.id IS NOT NULL AS workflow_exists, coalesce(w.frozen, false) AS frozen,
       u.id AS upstream_instance_id, u.state AS upstream_state
FROM instance_dependencies d
LEFT JOIN workflows w ON w.id = d.upstream_workflow_id
LEFT JOIN LATERAL (
    SELECT x.id, x.state FROM instances x
    WHERE (d.upstream_instance_id IS NOT NULL AND x.id = d.upstream_instance_id)
       OR (d.upstream_instance_id IS NULL AND x.workflow_id = d.upstream_workflow_id
           AND x.bizdate = d.bizdate AND (d.cyctime IS NULL OR x.cyctime = d.cyctime))
    ORDER BY (x.id = d.satisfied_by) DESC, (x.state = 'succeeded') DESC, x.id DESC
    LIMIT 1
) u ON true
WHERE d.instance_id = $1
ORDER BY d.seq;
