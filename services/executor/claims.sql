-- name: lock_claims
-- A claim locks only the resource groups it takes from, each by a transaction-scoped advisory
-- lock ($1: the lock class, the group's name hash). Here: every group with ready nodes whose lock
-- is free now, tried in name order; a group another replica is claiming from right now is
-- skipped (`locked` false) rather than waited for. Taken in their own statement: the claim
-- statement that follows gets a snapshot taken after the previous claimer of each locked group
-- committed, so the running counts it subtracts from their slots are never stale upward. Ready
-- groups are found by skipping through the ready index one group at a time.
WITH RECURSIVE ready_groups(name) AS (
    (SELECT resource_group FROM node_instances WHERE state = 'ready'
     ORDER BY resource_group, priority DESC, weight DESC, instance_created_at, id LIMIT 1)
    UNION ALL
    SELECT (SELECT n.resource_group FROM node_instances n
            WHERE n.state = 'ready' AND n.resource_group > g.name
            ORDER BY n.resource_group, n.priority DESC, n.weight DESC, n.instance_created_at, n.id
            LIMIT 1)
    FROM ready_groups g WHERE g.name IS NOT NULL
),
ordered AS (
    -- OFFSET 0 keeps the sort below the locking projection: locks are tried in this order.
    SELECT r.name FROM ready_groups r JOIN resource_groups g ON g.name = r.name
    ORDER BY r.name OFFSET 0
)
SELECT name, pg_try_advisory_xact_lock($1::int, hashtext(name)) AS locked FROM ordered;

-- name: wait_claim_lock
-- Every ready group is being claimed from by another replica: wait for one of them (holding no
-- other claim lock, so no cycle can form).
SELECT pg_advisory_xact_lock($1::int, hashtext($2));

-- name: claim_nodes
-- $1 executor id, $2 lease seconds, $3 nodes this process can start now, $4 its concurrency,
-- $5 batch cap, $6 the resource groups locked for this claim (only those are claimed from).
-- Free slots of those groups and of this executor are decided here.
WITH running AS (
    SELECT resource_group, count(*) AS n,
           count(*) FILTER (WHERE executor = $1) AS mine
    FROM node_instances WHERE state = 'running'
    GROUP BY resource_group
),
budget AS (
    SELECT GREATEST(LEAST($3::int, $5::int,
                          $4::int - coalesce((SELECT sum(mine) FROM running), 0)), 0)::int AS n
),
groups AS (
    SELECT g.name, GREATEST(g.slots - coalesce(r.n, 0), 0) AS free
    FROM resource_groups g LEFT JOIN running r ON r.resource_group = g.name
    WHERE g.name = ANY($6::text[])
),
-- Aging (policy.aging_s): `priority` below is the aging rank (place on the priority ladder plus
-- the intervals waited, see migration 0014). It only ever raises a row, so the head of each group
-- by rank is within the head by static priority plus the head of its aging rows: both are read
-- (each a LIMIT scan of a partial index) and ranked together.
candidates AS (
    SELECT g.name AS resource_group, g.free, c.*
    FROM groups g
    CROSS JOIN LATERAL (
        SELECT n.id, n.weight, n.instance_created_at,
               sluice_aging_rank(n.priority, extract(epoch FROM now() - n.ready_at),
                                 n.aging_s) AS priority
        FROM node_instances n
        WHERE n.state = 'ready' AND n.resource_group = g.name
          AND (n.not_before IS NULL OR n.not_before <= now())
        ORDER BY n.priority DESC, n.weight DESC, n.instance_created_at, n.id
        LIMIT LEAST(g.free, (SELECT n FROM budget))
        FOR UPDATE OF n SKIP LOCKED
    ) c
    UNION
    SELECT g.name AS resource_group, g.free, c.*
    FROM groups g
    CROSS JOIN LATERAL (
        SELECT n.id, n.weight, n.instance_created_at,
               sluice_aging_rank(n.priority, extract(epoch FROM now() - n.ready_at),
                                 n.aging_s) AS priority
        FROM node_instances n
        WHERE n.state = 'ready' AND n.resource_group = g.name AND n.aging_s IS NOT NULL
          AND (n.not_before IS NULL OR n.not_before <= now())
        ORDER BY 4 DESC, n.weight DESC, n.instance_created_at, n.id
        LIMIT LEAST(g.free, (SELECT n FROM budget))
        FOR UPDATE OF n SKIP LOCKED
    ) c
),
-- The two heads of a group together may exceed its free slots: cut each group to them.
picked AS (
    SELECT id FROM (
        SELECT c.*, row_number() OVER (PARTITION BY c.resource_group
                                       ORDER BY c.priority DESC, c.weight DESC,
                                                c.instance_created_at, c.id) AS nth
        FROM candidates c) c
    WHERE c.nth <= c.free
    ORDER BY priority DESC, weight DESC, instance_created_at, id
    LIMIT (SELECT n FROM budget)
),
claimed AS (
    UPDATE node_instances n
    SET state = 'running', attempt = n.attempt + 1, lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => $2), executor = $1,
        claimed_at = clock_timestamp(), last_heartbeat = NULL, started_at = clock_timestamp(),
        not_before = NULL, finished_at = NULL
    FROM picked WHERE n.id = picked.id
    RETURNING n.id, n.instance_id, n.name, n.type, n.attempt, n.lease_token, n.timeout_s,
              n.resource_group, n.upstream, n.ready_at, n.claimed_at,
              nextval('attempts_id_seq') AS attempt_id
),
made AS (
    INSERT INTO attempts (id, node_instance_id, attempt, lease_token, executor, started_at)
    SELECT attempt_id, id, attempt, lease_token, $1, claimed_at FROM claimed
)
SELECT c.id AS node_id, c.attempt_id, c.name, c.type, c.attempt, c.lease_token,
       c.timeout_s, c.resource_group, cardinality(c.upstream) = 0 AS is_root, c.ready_at,
       c.claimed_at, i.id AS instance_id, i.workspace_id, i.workflow_id, w.name AS workflow,
       w.type AS workflow_type, i.version, i.kind, i.cyctime, i.bizdate, i.parameters,
       i.trigger_message, e.received_at AS event_received_at,
       ws.parameters AS workspace_parameters
FROM claimed c
JOIN instances i ON i.id = c.instance_id
JOIN workflows w ON w.id = i.workflow_id
JOIN workspaces ws ON ws.id = i.workspace_id
LEFT JOIN events e ON e.id = i.event_id;

-- name: version_specs
SELECT workflow_id, version, spec FROM workflow_versions
WHERE (workflow_id, version) IN (SELECT * FROM unnest($1::bigint[], $2::int[]));

-- name: unknown_groups
-- Groups that ready nodes wait for but that do not exist: such nodes wait until it is created.
-- Found by skipping through the ready index one group at a time.
WITH RECURSIVE ready_groups(name) AS (
    (SELECT resource_group FROM node_instances WHERE state = 'ready'
     ORDER BY resource_group, priority DESC, weight DESC, instance_created_at, id LIMIT 1)
    UNION ALL
    SELECT (SELECT n.resource_group FROM node_instances n
            WHERE n.state = 'ready' AND n.resource_group > g.name
            ORDER BY n.resource_group, n.priority DESC, n.weight DESC, n.instance_created_at, n.id
            LIMIT 1)
    FROM ready_groups g WHERE g.name IS NOT NULL
)
SELECT name FROM ready_groups
WHERE name IS NOT NULL AND name NOT IN (SELECT name FROM resource_groups);
