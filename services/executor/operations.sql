-- name: lock_admission
-- One admitter at a time across replicas; the promotion statement that follows counts running
-- instances with a snapshot taken after the previous admitter committed (contract 5).
SELECT pg_advisory_xact_lock($1);

-- name: promote_instances
-- waiting -> running under max_parallel_instances (the published version's policy, else the
-- latest version's) and backfill parallelism, in order queue_priority DESC, created_at ASC.
-- $1: at most this many instances per workflow per statement.
--
-- Queue tables change faster than their statistics: right after a burst was analyzed the planner
-- believes most rows are waiting even when none are. Every probe of waiting rows is therefore
-- written as an ordered LIMIT scan of a partial index (a sequential scan would need a sort), and
-- the distinct waiting workflows / backfills are found by skipping through those indexes.
WITH RECURSIVE waiting_workflows(id) AS (
    (SELECT workflow_id FROM instances WHERE state = 'waiting'
     ORDER BY workflow_id, queue_priority DESC, created_at, id LIMIT 1)
    UNION ALL
    SELECT (SELECT i.workflow_id FROM instances i
            WHERE i.state = 'waiting' AND i.workflow_id > w.id
            ORDER BY i.workflow_id, i.queue_priority DESC, i.created_at, i.id LIMIT 1)
    FROM waiting_workflows w WHERE w.id IS NOT NULL
),
waiting_backfills(id) AS (
    (SELECT backfill_id FROM instances WHERE state = 'waiting' AND backfill_id IS NOT NULL
     ORDER BY backfill_id LIMIT 1)
    UNION ALL
    SELECT (SELECT i.backfill_id FROM instances i
            WHERE i.state = 'waiting' AND i.backfill_id IS NOT NULL AND i.backfill_id > b.id
            ORDER BY i.backfill_id LIMIT 1)
    FROM waiting_backfills b WHERE b.id IS NOT NULL
),
limits AS (
    SELECT w.id AS workflow_id,
           (v.spec -> 'policy' ->> 'max_parallel_instances')::int AS max_parallel
    FROM waiting_workflows q
    JOIN workflows w ON w.id = q.id
    JOIN workflow_versions v
      ON v.workflow_id = w.id AND v.version = coalesce(w.published_version, w.current_version)
),
places AS (
    SELECT l.workflow_id,
           CASE WHEN l.max_parallel IS NULL THEN $1::int
                ELSE GREATEST(LEAST($1::int, l.max_parallel - (
                    SELECT count(*) FROM instances r
                    WHERE r.workflow_id = l.workflow_id AND r.state = 'running')), 0)::int
           END AS free
    FROM limits l
),
backfill_places AS (
    SELECT b.id, GREATEST(b.parallelism - (
               SELECT count(*) FROM instances r WHERE r.backfill_id = b.id AND r.state = 'running'
           ), 0) AS free
    FROM waiting_backfills q JOIN backfills b ON b.id = q.id
),
-- Lanes (policy.lane): only the head of a lane (its lowest waiting id) may start, and only while
-- no instance of the lane runs; one admitter at a time, so two heads never start together.
-- Aging (policy.aging_s) only raises a row: the head by aging rank is within the head by static
-- priority plus the head of the aging rows (see claim_nodes); `queue_priority` below is the rank.
candidates AS (
    SELECT p.workflow_id, p.free, c.*
    FROM places p
    CROSS JOIN LATERAL (
        SELECT i.id, i.backfill_id, i.created_at,
               sluice_aging_rank(i.queue_priority, extract(epoch FROM now() - i.created_at),
                                 i.aging_s) AS queue_priority
        FROM instances i
        WHERE i.workflow_id = p.workflow_id AND i.state = 'waiting'
          AND (i.backfill_id IS NULL OR EXISTS (
                SELECT 1 FROM backfill_places bp WHERE bp.id = i.backfill_id AND bp.free > 0))
          -- dependencies between workflows (migration 0013): wait for the upstream cycles
          AND NOT i.blocked
          AND (i.lane IS NULL OR NOT EXISTS (
                SELECT 1 FROM instances o
                WHERE o.workflow_id = i.workflow_id AND o.lane = i.lane
                  AND (o.state = 'running' OR (o.state = 'waiting' AND o.id < i.id))))
        ORDER BY i.queue_priority DESC, i.created_at, i.id
        LIMIT p.free
        FOR UPDATE OF i SKIP LOCKED
    ) c
    UNION
    SELECT p.workflow_id, p.free, c.*
    FROM places p
    CROSS JOIN LATERAL (
        SELECT i.id, i.backfill_id, i.created_at,
               sluice_aging_rank(i.queue_priority, extract(epoch FROM now() - i.created_at),
                                 i.aging_s) AS queue_priority
        FROM instances i
        WHERE i.workflow_id = p.workflow_id AND i.state = 'waiting' AND i.aging_s IS NOT NULL
          AND (i.backfill_id IS NULL OR EXISTS (
                SELECT 1 FROM backfill_places bp WHERE bp.id = i.backfill_id AND bp.free > 0))
          AND NOT i.blocked
          AND (i.lane IS NULL OR NOT EXISTS (
                SELECT 1 FROM instances o
                WHERE o.workflow_id = i.workflow_id AND o.lane = i.lane
                  AND (o.state = 'running' OR (o.state = 'waiting' AND o.id < i.id))))
        ORDER BY 4 DESC, i.created_at, i.id
        LIMIT p.free
        FOR UPDATE OF i SKIP LOCKED
    ) c
),
picked AS (
    SELECT c.id, c.created_at
    FROM (SELECT c.*, row_number() OVER (PARTITION BY c.backfill_id
                                         ORDER BY c.queue_priority DESC, c.created_at, c.id) AS nth,
                 row_number() OVER (PARTITION BY c.workflow_id
                                    ORDER BY c.queue_priority DESC, c.created_at, c.id) AS rank
          FROM candidates c) c
    LEFT JOIN backfill_places bp ON bp.id = c.backfill_id
    WHERE (c.backfill_id IS NULL OR c.nth <= bp.free) AND c.rank <= c.free
)
-- `candidates` locked the rows and re-checked they are waiting: they are updated by id alone.
UPDATE instances i SET state = 'running', started_at = clock_timestamp(), finished_at = NULL
FROM picked WHERE i.id = picked.id
RETURNING i.id;

-- name: release_ready
-- pending -> ready for every node of these running instances (locked by the caller) whose
-- upstream all succeeded. Rows are reached by instance id only: state indexes can be misjudged
-- by stale statistics (see promote_instances).
WITH pending AS MATERIALIZED (
    SELECT n.id, n.instance_id, n.upstream FROM node_instances n
    WHERE n.instance_id = ANY($1::bigint[]) AND n.state = 'pending'
)
UPDATE node_instances n
SET state = 'ready', ready_at = clock_timestamp(),
    instance_created_at = (SELECT i.created_at FROM instances i WHERE i.id = p.instance_id)
FROM pending p
WHERE n.id = p.id
  AND NOT EXISTS (
      SELECT 1 FROM node_instances u
      WHERE u.instance_id = p.instance_id AND u.name = ANY(p.upstream)
        AND u.state <> 'succeeded')
RETURNING n.id;

-- name: mark_upstream_failed
-- Every pending descendant of a failed node can no longer run.
WITH RECURSIVE down(instance_id, name) AS (
    SELECT instance_id, name FROM node_instances
    WHERE instance_id = ANY($1::bigint[]) AND state IN ('failed', 'upstream_failed')
    UNION
    SELECT c.instance_id, c.name
    FROM down d
    JOIN node_instances c ON c.instance_id = d.instance_id AND d.name = ANY(c.upstream)
)
UPDATE node_instances n SET state = 'upstream_failed', finished_at = clock_timestamp()
FROM down d
WHERE n.instance_id = d.instance_id AND n.name = d.name AND n.state = 'pending'
RETURNING n.id;

-- name: complete_instances
-- A running instance with nothing left to run ends: failed if any node failed, else succeeded.
-- Instances are reached through their ids only (a state index can be misjudged by stale
-- statistics); they are locked by the caller, so the state read here stays true.
WITH targets AS MATERIALIZED (
    SELECT id, state FROM instances WHERE id = ANY($1::bigint[])
)
UPDATE instances i
SET state = CASE WHEN EXISTS (
                     SELECT 1 FROM node_instances f
                     WHERE f.instance_id = i.id
                       AND f.state IN ('failed', 'upstream_failed', 'terminated'))
                 THEN 'failed' ELSE 'succeeded' END,
    finished_at = clock_timestamp()
FROM targets t
WHERE i.id = t.id AND t.state = 'running'
  AND NOT EXISTS (
      SELECT 1 FROM node_instances n
      WHERE n.instance_id = i.id AND n.state IN ('pending', 'ready', 'running'))
RETURNING i.id, i.state,
          -- whether the place it frees is wanted: admission only has work if so
          (SELECT w.id FROM instances w
           WHERE w.workflow_id = i.workflow_id AND w.state = 'waiting'
           ORDER BY w.workflow_id, w.queue_priority DESC, w.created_at, w.id
           LIMIT 1) IS NOT NULL AS queued;

-- name: lock_instances_of_nodes
-- Every transition of an instance's nodes holds the instance row: two upstream nodes finishing
-- at once must see each other's result before deciding whether a successor is ready.
SELECT i.id FROM instances i
WHERE i.id = ANY(ARRAY(SELECT instance_id FROM node_instances WHERE id = ANY($1::bigint[])))
ORDER BY i.id
FOR UPDATE;

-- name: finish_attempts
-- Fenced by lease token. Outcomes: succeeded, failed, lost (lease expired), released (graceful
-- shutdown: re-queued at once, not charged against retries). $7: only leases already expired.
WITH t AS (
    SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::bigint[], $4::text[], $5::int[],
                         $6::text[])
           AS t(node_id, token, attempt_id, outcome, exit_code, reason)
),
done AS (
    UPDATE node_instances n
    SET state = CASE
            WHEN t.outcome = 'succeeded' THEN 'succeeded'
            WHEN t.outcome = 'released' OR n.retries_used < n.retries THEN 'ready'
            ELSE 'failed' END,
        retries_used = n.retries_used + CASE
            WHEN t.outcome IN ('failed', 'lost') AND n.retries_used < n.retries THEN 1
            ELSE 0 END,
        not_before = CASE
            WHEN t.outcome IN ('failed', 'lost') AND n.retries_used < n.retries
            THEN now() + make_interval(secs => n.retry_delay_s) END,
        ready_at = CASE
            WHEN t.outcome = 'released' THEN clock_timestamp()
            WHEN t.outcome IN ('failed', 'lost') AND n.retries_used < n.retries
            THEN now() + make_interval(secs => n.retry_delay_s)
            ELSE n.ready_at END,
        finished_at = CASE
            WHEN t.outcome = 'succeeded' OR (t.outcome IN ('failed', 'lost')
                                             AND n.retries_used >= n.retries)
            THEN clock_timestamp() END,
        lease_token = NULL, lease_expires_at = NULL
    FROM t
    WHERE n.id = t.node_id AND n.lease_token = t.token AND n.state = 'running'
      AND (NOT $7::bool OR n.lease_expires_at < now())
    RETURNING n.id, n.instance_id, n.state, n.not_before, t.attempt_id, t.outcome,
              t.exit_code, t.reason
),
ended AS (
    UPDATE attempts a
    SET state = CASE d.outcome WHEN 'released' THEN 'lost' ELSE d.outcome END,
        reason = d.reason, exit_code = d.exit_code, finished_at = clock_timestamp()
    FROM done d
    WHERE a.id = d.attempt_id AND a.state = 'running'
    RETURNING a.id
)
SELECT d.id AS node_id, d.instance_id, d.state, d.not_before, d.attempt_id, d.outcome,
       d.reason
FROM done d;

-- name: notify
SELECT pg_notify($1, $2);
