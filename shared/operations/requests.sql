-- name: insert_request
-- A pending request of the same action on the instance is answered instead of a new one.
WITH made AS (
    INSERT INTO instance_requests (workspace_id, instance_id, action, mode, token_id, requested_by)
    VALUES ($1, $2, $3, $4, $5, (SELECT t.name FROM tokens t WHERE t.id = $5))
    ON CONFLICT (instance_id, action) WHERE state = 'pending' DO NOTHING
    RETURNING id
)
SELECT id, pg_notify($6, id::text) FROM made;

-- name: pending_request
SELECT id FROM instance_requests WHERE instance_id = $1 AND action = $2 AND state = 'pending';

-- name: get_request
SELECT r.id, r.instance_id, r.action, r.mode, r.state, r.reason, r.requested_by, r.requested_at,
       r.finished_at, coalesce(r.instance_state, i.state) AS instance_state
FROM instance_requests r
JOIN instances i ON i.id = r.instance_id
WHERE r.id = $1 AND r.workspace_id = $2 AND ($3::bigint IS NULL OR r.instance_id = $3);

-- name: instance_state
SELECT state FROM instances WHERE id = $1 AND workspace_id = $2;
