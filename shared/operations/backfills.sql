-- name: insert_backfill
INSERT INTO backfills (workspace_id, workflow_id, start_at, end_at, parallelism, priority, ordering,
                       group_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id, created_at;

-- name: start_group
-- The first backfill of workflows backfilled together names the group.
UPDATE backfills SET group_id = id WHERE id = $1;

-- name: list_backfills
-- Instances in the order the executor starts them: queue priority DESC, created_at ASC, id ASC.
SELECT b.id, w.name AS workflow, b.start_at AS start, b.end_at AS "end", b.parallelism,
       b.priority, b.ordering AS "order", b.created_at,
       ARRAY(SELECT i.id FROM instances i WHERE i.backfill_id = b.id
             ORDER BY i.queue_priority DESC, i.created_at, i.id) AS instance_ids,
       coalesce((SELECT jsonb_object_agg(c.state, c.n)
                 FROM (SELECT i.state, count(*) AS n FROM instances i
                       WHERE i.backfill_id = b.id GROUP BY i.state) c),
                '{}'::jsonb) AS states
FROM backfills b
JOIN workflows w ON w.id = b.workflow_id
WHERE b.workspace_id = $1
  AND ($2::text IS NULL OR w.name = $2)
  AND ($3::bigint IS NULL OR b.id = $3)
  AND ($4::bigint IS NULL OR b.id < $4)
ORDER BY b.id DESC
LIMIT $5;

-- name: backfill_instances
SELECT i.id FROM instances i
JOIN backfills b ON b.id = i.backfill_id
WHERE b.id = $1 AND b.workspace_id = $2
  AND ($3::text[] IS NULL OR i.state = ANY($3::text[]))
ORDER BY i.queue_priority DESC, i.created_at, i.id;
