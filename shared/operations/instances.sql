-- name: notify
SELECT pg_notify($1, $2);

-- name: lock_instance
SELECT id, state FROM instances WHERE id = $1 AND workspace_id = $2 FOR UPDATE;

-- name: terminate_nodes
UPDATE node_instances
SET state = 'terminated', finished_at = clock_timestamp(), lease_token = NULL,
    lease_expires_at = NULL, not_before = NULL
WHERE instance_id = $1 AND state IN ('pending', 'ready', 'running')
RETURNING id;

-- name: terminate_attempts
UPDATE attempts a
SET state = 'terminated', reason = 'terminated', finished_at = clock_timestamp()
FROM node_instances n
WHERE n.instance_id = $1 AND a.node_instance_id = n.id AND a.state = 'running'
RETURNING a.id;

-- name: terminate_instance
UPDATE instances
SET state = 'terminated', finished_at = clock_timestamp(), reason = $2
WHERE id = $1
RETURNING id;

-- name: reset_nodes
-- Rerun: `all` starts every node over, `failed` only the nodes that did not succeed.
UPDATE node_instances
SET state = 'pending', retries_used = 0, not_before = NULL, lease_token = NULL,
    lease_expires_at = NULL, ready_at = NULL, started_at = NULL, finished_at = NULL,
    claimed_at = NULL, last_heartbeat = NULL
WHERE instance_id = $1
  AND ($2::text = 'all' OR state IN ('failed', 'upstream_failed', 'terminated'))
RETURNING id;

-- name: requeue_instance
UPDATE instances
SET state = 'waiting', started_at = NULL, finished_at = NULL, reason = $2
WHERE id = $1
RETURNING id;
