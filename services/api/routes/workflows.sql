-- name: workflow_status
-- Instance counts per state, unfinished work per node state, and the latest outcomes of one
-- workflow; the (workflow_id, state) index serves every part.
SELECT
  (SELECT coalesce(jsonb_object_agg(s.state, s.n), '{}'::jsonb)
   FROM (SELECT state, count(*) AS n FROM instances WHERE workflow_id = $1 GROUP BY state) s
  ) AS instances,
  (SELECT coalesce(jsonb_object_agg(s.state, s.n), '{}'::jsonb)
   FROM (SELECT n.state, count(*) AS n
         FROM instances i JOIN node_instances n ON n.instance_id = i.id
         WHERE i.workflow_id = $1 AND i.state IN ('waiting', 'running')
           AND n.state IN ('ready', 'running')
         GROUP BY n.state) s
  ) AS nodes,
  (SELECT max(finished_at) FROM instances WHERE workflow_id = $1 AND state = 'succeeded')
    AS last_succeeded_at,
  (SELECT max(finished_at) FROM instances WHERE workflow_id = $1 AND state = 'failed')
    AS last_failed_at;

-- name: last_instance
SELECT id, kind, state, created_at, finished_at
FROM instances WHERE workflow_id = $1 ORDER BY id DESC LIMIT 1;
