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

-- name: candidate_triggers
-- Every trigger (enabled or not) watching these subjects: intake explains disabled ones too.
SELECT id, workspace_id, name, type, subject, enabled, spec, created_at
FROM triggers WHERE type = $1 AND subject = ANY($2::text[]);

-- name: enabled_subjects
-- What the listeners subscribe to, with the earliest creation time per subject.
SELECT subject, min(created_at) AS created_at
FROM triggers WHERE type = $1 AND enabled GROUP BY subject ORDER BY subject;
