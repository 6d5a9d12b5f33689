-- name: claim_finishes
-- Finished instances some workflow trigger watches, oldest first; replicas skip rows another
-- holds. The row is deleted in the transaction that admits it.
SELECT f.id, f.workspace_id, f.instance_id, f.workflow, f.state, f.generation, f.created_at,
       i.bizdate
FROM workflow_finishes f
LEFT JOIN instances i ON i.id = f.instance_id
ORDER BY f.id
LIMIT $1
FOR UPDATE OF f SKIP LOCKED;

-- name: leaf_outputs
-- The outputs of an instance's leaf nodes (no node lists them upstream), each from its latest
-- succeeded attempt.
SELECT n.name,
       (SELECT a.outputs FROM attempts a
        WHERE a.node_instance_id = n.id AND a.state = 'succeeded'
        ORDER BY a.attempt DESC LIMIT 1) AS outputs
FROM node_instances n
WHERE n.instance_id = $1
  AND NOT EXISTS (SELECT 1 FROM node_instances c
                  WHERE c.instance_id = n.instance_id AND n.name = ANY(c.upstream))
ORDER BY n.name;

-- name: delete_finishes
DELETE FROM workflow_finishes WHERE id = ANY($1::bigint[]);
