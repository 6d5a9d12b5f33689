-- name: list_instances
-- Newest first; $2 is the cursor (the last id of the previous page).
SELECT i.id, w.name AS workflow, i.version, i.kind, i.state, i.priority, i.cyctime, i.bizdate,
       i.event_id, i.backfill_id, i.rerun_of, i.reason, i.created_at, i.started_at,
       i.finished_at,
       (SELECT coalesce(jsonb_object_agg(s.state, s.n), '{}'::jsonb)
        FROM (SELECT n.state, count(*) AS n FROM node_instances n
              WHERE n.instance_id = i.id GROUP BY n.state) s) AS node_states
FROM instances i JOIN workflows w ON w.id = i.workflow_id
WHERE i.workspace_id = $1
  AND ($2::bigint IS NULL OR i.id < $2)
  AND ($3::text IS NULL OR w.name = $3)
  AND ($4::text[] IS NULL OR i.state = ANY($4))
  AND ($5::text[] IS NULL OR i.kind = ANY($5))
  AND ($6::timestamptz IS NULL OR i.created_at >= $6)
  AND ($7::bigint IS NULL OR i.backfill_id = $7)
ORDER BY i.id DESC
LIMIT $8;

-- name: instance_extra
SELECT reason, rerun_of FROM instances WHERE id = $1 AND workspace_id = $2;

-- name: instance_state
SELECT state FROM instances WHERE id = $1 AND workspace_id = $2;

-- name: node_progress
-- Where one node of an instance stands: its state, its instance's state, its latest attempt.
SELECT n.state AS node_state, i.state AS instance_state,
       (SELECT max(a.attempt) FROM attempts a WHERE a.node_instance_id = n.id) AS latest_attempt,
       EXISTS (SELECT 1 FROM attempts a WHERE a.node_instance_id = n.id AND a.attempt = $4)
         AS has_attempt
FROM node_instances n JOIN instances i ON i.id = n.instance_id
WHERE i.id = $1 AND i.workspace_id = $2 AND n.name = $3;
