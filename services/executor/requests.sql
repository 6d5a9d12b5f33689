-- name: next_request
-- One pending request, locked so that one executor carries it out (the others skip it).
SELECT id, workspace_id, instance_id, action, mode FROM instance_requests
WHERE state = 'pending'
ORDER BY id
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: finish_request
UPDATE instance_requests
SET state = $2, reason = $3, finished_at = clock_timestamp(),
    instance_state = (SELECT i.state FROM instances i WHERE i.id = instance_requests.instance_id)
WHERE id = $1;
