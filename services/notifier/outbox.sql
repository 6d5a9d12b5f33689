-- name: claim
-- Due pending rows, oldest first, under a lease: a notifier that dies holding them loses them to
-- any notifier once the lease expires (the receiver then sees the same message id again).
-- $1 lease seconds, $2 batch.
WITH due AS (
    SELECT id FROM notifications
    WHERE state = 'pending' AND next_at <= now()
      AND (lease_expires_at IS NULL OR lease_expires_at < now())
    ORDER BY next_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications x
SET lease_token = gen_random_uuid(), lease_expires_at = now() + make_interval(secs => $1),
    attempts = x.attempts + 1
FROM due WHERE x.id = due.id
RETURNING x.id, x.workspace_id, x.instance_id, x.node, x.event, x.channel, x.rule,
          x.message_id::text AS message_id, x.detail, x.attempts, x.lease_token, x.created_at;

-- name: mark_sent
-- Fenced by the lease token: a notifier whose lease was taken over writes nothing.
UPDATE notifications
SET state = 'sent', sent_at = clock_timestamp(), last_error = NULL, lease_token = NULL,
    lease_expires_at = NULL
WHERE id = $1 AND lease_token = $2
RETURNING extract(epoch FROM sent_at - created_at)::float8 AS latency_s;

-- name: mark_failed
-- $3: give up now (dead); else retry after $4 seconds unless that was the last try ($5).
UPDATE notifications
SET state = CASE WHEN $3::bool OR attempts >= $5::int THEN 'dead' ELSE 'pending' END,
    next_at = now() + make_interval(secs => $4::float8),
    last_error = left($6::text, 1000), lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND lease_token = $2
RETURNING state;

-- name: next_due
-- Seconds until the earliest pending row is due (NULL: none pending).
SELECT extract(epoch FROM min(greatest(next_at, coalesce(lease_expires_at, next_at))) - now())
FROM notifications WHERE state = 'pending';

-- name: message_context
-- What the message says about the change: the instance, and the node (the event's node, else
-- for an instance event the node that failed first) with its attempt and the end of its log.
SELECT ws.name AS workspace, w.name AS workflow, i.version, i.state, i.reason,
       i.created_at AS instance_created_at, i.started_at, i.finished_at, i.parameters,
       to_char(i.bizdate, 'YYYYMMDD') AS bizdate,
       to_char(i.cyctime AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS') AS cyctime,
       n.name AS node, n.state AS node_state, a.attempt, a.reason AS attempt_reason,
       a.exit_code, a.started_at AS attempt_started_at, a.finished_at AS attempt_finished_at,
       a.parameters AS attempt_parameters,
       (SELECT string_agg(l.data, '' ORDER BY l.seq)
        FROM (SELECT seq, data FROM attempt_logs WHERE attempt_id = a.id
              ORDER BY seq DESC LIMIT 8) l) AS log_tail
FROM instances i
JOIN workspaces ws ON ws.id = i.workspace_id
JOIN workflows w ON w.id = i.workflow_id
LEFT JOIN LATERAL (
    SELECT * FROM node_instances n
    WHERE n.instance_id = i.id
      AND (n.name = $2::text OR ($2::text IS NULL AND $4::bool AND n.state = 'failed'))
    ORDER BY n.finished_at NULLS LAST, n.id
    LIMIT 1
) n ON true
LEFT JOIN LATERAL (
    SELECT * FROM attempts a
    WHERE a.node_instance_id = n.id AND ($3::int IS NULL OR a.attempt = $3::int)
    ORDER BY a.attempt DESC
    LIMIT 1
) a ON true
WHERE i.id = $1;

-- name: workspace_name
SELECT name FROM workspaces WHERE id = $1;

-- name: prune
-- Delivered and dead rows older than the retention ($1 days), at most $2 per statement. Pending
-- rows are never pruned: they are still owed to a receiver.
DELETE FROM notifications
WHERE id IN (SELECT id FROM notifications
             WHERE state IN ('sent', 'dead')
               AND created_at < now() - make_interval(days => $1::int)
             ORDER BY id
             LIMIT $2)
RETURNING id;
