-- name: upsert_connection
INSERT INTO connections (workspace_id, name, kind, config, secrets)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (workspace_id, name) DO UPDATE
SET kind = EXCLUDED.kind, config = EXCLUDED.config,
    secrets = CASE WHEN $6 THEN EXCLUDED.secrets ELSE connections.secrets END,
    updated_at = now()
RETURNING id, name, kind, config, (xmax = 0) AS created, created_at, updated_at,
          ARRAY(SELECT jsonb_object_keys(secrets)) AS secret_keys;

-- name: get_connection
SELECT id, name, kind, config, created_at, updated_at,
       ARRAY(SELECT jsonb_object_keys(secrets)) AS secret_keys
FROM connections WHERE workspace_id = $1 AND name = $2;

-- name: list_connections
SELECT id, name, kind, config, created_at, updated_at,
       ARRAY(SELECT jsonb_object_keys(secrets)) AS secret_keys
FROM connections WHERE workspace_id = $1 ORDER BY name;

-- name: delete_connection
DELETE FROM connections WHERE workspace_id = $1 AND name = $2 RETURNING id;

-- name: resolve_connection
SELECT kind, config, secrets FROM connections WHERE workspace_id = $1 AND name = $2;
