-- name: record_parameters
-- What the attempt ran with (secrets redacted); fenced like every write of a running attempt.
UPDATE attempts SET parameters = $3 WHERE id = $1 AND lease_token = $2;

-- name: record_outputs
-- Written before the attempt's finish, so a descendant made ready by that finish finds them.
UPDATE attempts SET outputs = $3 WHERE id = $1 AND lease_token = $2 AND state = 'running';

-- name: ancestor_outputs
-- The outputs each ancestor of node $1 produced in its latest succeeded attempt: a rerun of an
-- ancestor replaces what its descendants see, earlier attempts keep theirs.
WITH RECURSIVE ancestors(name) AS (
    SELECT u.name FROM node_instances n, unnest(n.upstream) AS u(name) WHERE n.id = $1
    UNION
    SELECT u.name
    FROM ancestors a
    JOIN node_instances n ON n.instance_id = $2 AND n.name = a.name
    CROSS JOIN LATERAL unnest(n.upstream) AS u(name)
)
SELECT n.name, o.outputs
FROM ancestors a
JOIN node_instances n ON n.instance_id = $2 AND n.name = a.name
CROSS JOIN LATERAL (
    SELECT outputs FROM attempts
    WHERE node_instance_id = n.id AND state = 'succeeded'
    ORDER BY attempt DESC LIMIT 1
) o;
