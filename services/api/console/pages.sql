-- name: workflow_activity
-- Per workflow of a workspace: instances waiting and running, and the state of the newest
-- finished one. The (workflow_id, state) index serves both parts; one row per workflow.
SELECT w.id,
       (SELECT count(*) FROM instances i
        WHERE i.workflow_id = w.id AND i.state = 'waiting') AS waiting,
       (SELECT count(*) FROM instances i
        WHERE i.workflow_id = w.id AND i.state = 'running') AS running,
       (SELECT i.state FROM instances i
        WHERE i.workflow_id = w.id
          AND i.state IN ('succeeded', 'failed', 'terminated', 'cancelled')
        ORDER BY i.id DESC LIMIT 1) AS last_finished
FROM workflows w
WHERE w.workspace_id = $1;

-- name: version_plan
-- Effective priority and weight per node, as stored with the version.
SELECT v.plan
FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id
WHERE w.workspace_id = $1 AND w.name = $2 AND v.version = $3;

-- name: trigger_outcomes
-- Outcome counts per trigger of a workspace (ids are global, so no other tenant's rows count).
SELECT trigger_id, outcome, count(*) AS n
FROM event_outcomes
WHERE trigger_id = ANY($1::bigint[])
GROUP BY trigger_id, outcome;

-- name: trigger_workflows
-- Workflows bound to each trigger of a workspace, by their published or latest version.
SELECT t.id AS trigger_id, w.name, w.published_version IS NOT NULL AS published, w.frozen
FROM triggers t
JOIN workflows w ON w.trigger_id = t.id OR w.draft_trigger_id = t.id
WHERE t.workspace_id = $1
ORDER BY w.name;

-- name: resource_groups
-- Every group with its slots and how many nodes hold one now (all workspaces share groups).
SELECT g.name, g.slots,
       (SELECT count(*) FROM node_instances n
        WHERE n.resource_group = g.name AND n.state = 'running') AS in_use
FROM resource_groups g
ORDER BY g.name;

-- name: group_holders
-- The running nodes of this workspace holding a slot: only the caller's own are named.
SELECT n.resource_group, i.id AS instance_id, w.name AS workflow, n.name AS node,
       n.executor, n.started_at, n.priority, n.weight
FROM node_instances n
JOIN instances i ON i.id = n.instance_id
JOIN workflows w ON w.id = i.workflow_id
WHERE n.state = 'running' AND i.workspace_id = $1
ORDER BY n.resource_group, n.started_at NULLS LAST, n.id
LIMIT 500;

-- name: instance_request_pending
-- Whether a terminate or rerun of the instance (workspace $2) waits for an executor: its page
-- keeps polling while one does, even when the instance still reads as finished.
SELECT EXISTS (
    SELECT 1 FROM instance_requests WHERE instance_id = $1 AND workspace_id = $2 AND state = 'pending'
);

-- name: instance_outputs
-- The outputs of every attempt of an instance of workspace $2 that produced some, as JSON text
-- cut at $3 characters (a value may be 1 MiB; the page shows its start and links the rest).
SELECT a.id, left(a.outputs::text, $3) AS text
FROM attempts a
JOIN node_instances n ON n.id = a.node_instance_id
JOIN instances i ON i.id = n.instance_id
WHERE i.id = $1 AND i.workspace_id = $2 AND a.outputs IS NOT NULL;
