-- name: running_nodes
-- What a stopping `sluice dev` waits for: every running node is this process's executor's.
SELECT instance_id, name, count(*) OVER () AS total
FROM node_instances
WHERE state = 'running'
ORDER BY id
LIMIT 5;
