-- name: log_target
SELECT n.id AS node_id, n.state AS node_state, a.id AS attempt_id, a.state AS attempt_state
FROM instances i
LEFT JOIN node_instances n ON n.instance_id = i.id AND n.name = $3
LEFT JOIN LATERAL (
    SELECT id, state FROM attempts
    WHERE node_instance_id = n.id AND ($4::int IS NULL OR attempt = $4)
    ORDER BY attempt DESC LIMIT 1
) a ON true
WHERE i.id = $1 AND i.workspace_id = $2;

-- name: log_chunks
SELECT seq, data FROM attempt_logs
WHERE attempt_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3;
