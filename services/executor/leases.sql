-- name: renew_leases
-- Extends the leases this executor still holds, on the database clock. A row another transaction
-- is changing (terminate, sweep) is skipped rather than waited for: it is reported `held` when it
-- was still ours at the start of the statement and will be renewed or found lost next time.
WITH t AS (
    SELECT * FROM unnest($1::bigint[], $2::uuid[]) AS t(id, token)
),
mine AS (
    SELECT n.id FROM node_instances n JOIN t ON t.id = n.id
    WHERE n.lease_token = t.token AND n.state = 'running'
    FOR UPDATE OF n SKIP LOCKED
),
renewed AS (
    UPDATE node_instances n
    SET lease_expires_at = now() + make_interval(secs => $3), last_heartbeat = now()
    FROM mine WHERE n.id = mine.id
    RETURNING n.id
)
SELECT t.id, t.id IN (SELECT id FROM renewed) AS renewed
FROM t JOIN node_instances n ON n.id = t.id
WHERE n.lease_token = t.token AND n.state = 'running';

-- name: expired_leases
SELECT n.id AS node_id, n.lease_token, a.id AS attempt_id
FROM node_instances n
JOIN attempts a ON a.node_instance_id = n.id AND a.attempt = n.attempt
WHERE n.state = 'running' AND n.lease_expires_at < now()
ORDER BY n.lease_expires_at
LIMIT $1;

-- name: slots_in_use
SELECT g.name AS resource_group, count(n.id) AS n
FROM resource_groups g
LEFT JOIN node_instances n ON n.resource_group = g.name AND n.state = 'running'
GROUP BY g.name;
