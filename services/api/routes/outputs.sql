-- name: node_outputs
-- One node of an instance with each of its attempts' outputs, oldest first. A node whose
-- instance is not in workspace $2 is not found.
SELECT n.id AS node_id, n.state AS node_state, a.attempt, a.state, a.finished_at, a.outputs
FROM node_instances n
JOIN instances i ON i.id = n.instance_id
LEFT JOIN attempts a ON a.node_instance_id = n.id
WHERE i.id = $1 AND i.workspace_id = $2 AND n.name = $3
ORDER BY a.attempt;

-- name: instance_exists
SELECT 1 FROM instances WHERE id = $1 AND workspace_id = $2;
