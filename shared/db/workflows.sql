-- name: find_trigger_id
SELECT id FROM triggers WHERE workspace_id = $1 AND name = $2;

-- name: lock_workflow
SELECT id, current_version, published_version FROM workflows
WHERE workspace_id = $1 AND name = $2 FOR UPDATE;

-- name: insert_workflow
INSERT INTO workflows (workspace_id, name, type, current_version, draft_trigger_id)
VALUES ($1, $2, $3, 1, $4)
RETURNING id;

-- name: bump_workflow
UPDATE workflows SET current_version = $2, type = $3, draft_trigger_id = $4, updated_at = now()
WHERE id = $1;

-- name: insert_version
INSERT INTO workflow_versions (workflow_id, version, spec, plan) VALUES ($1, $2, $3, $4);

-- name: version_spec
SELECT spec FROM workflow_versions WHERE workflow_id = $1 AND version = $2;

-- name: publish_workflow
UPDATE workflows SET published_version = $2, trigger_id = $3, updated_at = now() WHERE id = $1;

-- name: set_frozen
UPDATE workflows SET frozen = $3, updated_at = now()
WHERE workspace_id = $1 AND name = $2 RETURNING id;

-- name: get_workflow
SELECT w.id, ws.name AS workspace, w.name, w.type, t.name AS trigger, w.current_version,
       w.published_version, w.frozen, w.created_at, w.updated_at
FROM workflows w
JOIN workspaces ws ON ws.id = w.workspace_id
LEFT JOIN triggers t ON t.id = coalesce(w.draft_trigger_id, w.trigger_id)
WHERE w.workspace_id = $1 AND w.name = $2;

-- name: list_workflows
SELECT w.id, ws.name AS workspace, w.name, w.type, t.name AS trigger, w.current_version,
       w.published_version, w.frozen, w.created_at, w.updated_at
FROM workflows w
JOIN workspaces ws ON ws.id = w.workspace_id
LEFT JOIN triggers t ON t.id = coalesce(w.draft_trigger_id, w.trigger_id)
WHERE w.workspace_id = $1 AND ($2::text IS NULL OR w.type = $2)
ORDER BY w.name;

-- name: list_versions
SELECT w.name AS workflow, v.version, v.spec, v.created_at,
       (v.version = w.published_version) IS TRUE AS published
FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id
WHERE w.workspace_id = $1 AND w.name = $2
ORDER BY v.version;

-- name: get_version
SELECT w.name AS workflow, v.version, v.spec, v.created_at,
       (v.version = w.published_version) IS TRUE AS published
FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id
WHERE w.workspace_id = $1 AND w.name = $2 AND v.version = $3;

-- name: load_version
SELECT w.id AS workflow_id, w.workspace_id, w.name, w.type, w.frozen, v.version, v.spec, v.plan
FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id
WHERE w.id = $1 AND v.version = $2;

-- name: active_instances
-- An open coalescing window counts: it is an instance whose events were already admitted.
SELECT (SELECT count(*) FROM instances
        WHERE workflow_id = $1 AND state IN ('waiting', 'running'))
     + (SELECT count(*) FROM coalesce_windows WHERE workflow_id = $1 AND closed_at IS NULL);

-- name: delete_workflow
DELETE FROM workflows WHERE id = $1;
