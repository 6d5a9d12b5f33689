-- name: upsert_trigger
INSERT INTO triggers (workspace_id, name, type, subject, enabled, spec)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (workspace_id, name) DO UPDATE
SET type = EXCLUDED.type, subject = EXCLUDED.subject, enabled = EXCLUDED.enabled,
    spec = EXCLUDED.spec,
    updated_at = CASE WHEN triggers.spec = EXCLUDED.spec THEN triggers.updated_at ELSE now() END
RETURNING id, name, type, enabled, spec, created_at, updated_at, (xmax = 0) AS created;

-- name: get_trigger
SELECT t.id, w.name AS workspace, t.name, t.type, t.enabled, t.spec, t.created_at, t.updated_at
FROM triggers t JOIN workspaces w ON w.id = t.workspace_id
WHERE t.workspace_id = $1 AND t.name = $2;

-- name: list_triggers
SELECT t.id, w.name AS workspace, t.name, t.type, t.enabled, t.spec, t.created_at, t.updated_at
FROM triggers t JOIN workspaces w ON w.id = t.workspace_id
WHERE t.workspace_id = $1 ORDER BY t.name;

-- name: trigger_bound_workflows
SELECT name FROM workflows WHERE trigger_id = $1 OR draft_trigger_id = $1 ORDER BY name;

-- name: delete_trigger
DELETE FROM triggers WHERE workspace_id = $1 AND name = $2 RETURNING id;

-- name: enabled_subjects
-- What the listeners subscribe to, with the earliest creation time per subject.
SELECT subject, min(created_at) AS created_at
FROM triggers WHERE type = $1 AND enabled GROUP BY subject ORDER BY subject;

-- name: trigger_generation
-- The version of the trigger set (migration 0019): intake reloads its index when it changes.
SELECT token FROM trigger_generation;

-- name: all_triggers
-- Every trigger with the generation they belong to, read in one statement (one snapshot).
SELECT g.token, t.id, t.workspace_id, t.name, t.type, t.subject, t.enabled, t.spec, t.created_at
FROM trigger_generation g LEFT JOIN triggers t ON true
ORDER BY t.id;
