-- name: get_workspace
SELECT id, name, parameters, created_at FROM workspaces WHERE name = $1;

-- name: list_workspaces
SELECT id, name, parameters, created_at FROM workspaces ORDER BY name;

-- name: create_workspace
INSERT INTO workspaces (name, parameters) VALUES ($1, $2)
ON CONFLICT (name) DO NOTHING
RETURNING id, name, parameters, created_at;

-- name: set_workspace_parameters
UPDATE workspaces SET parameters = $2 WHERE name = $1
RETURNING id, name, parameters, created_at;
