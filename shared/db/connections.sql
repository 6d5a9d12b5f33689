-- name: upsert_connection
-- $5: sealed secrets, $6: their names, $7: whether the request gave secrets at all.
INSERT INTO connections (workspace_id, name, kind, config, secrets, sealed_secrets, secret_names)
VALUES ($1, $2, $3, $4, '{}'::jsonb, $5, $6)
ON CONFLICT (workspace_id, name) DO UPDATE
SET kind = EXCLUDED.kind, config = EXCLUDED.config,
    secrets = CASE WHEN $7 THEN '{}'::jsonb ELSE connections.secrets END,
    sealed_secrets = CASE WHEN $7 THEN EXCLUDED.sealed_secrets
                          ELSE connections.sealed_secrets END,
    secret_names = CASE WHEN $7 THEN EXCLUDED.secret_names ELSE connections.secret_names END,
    updated_at = now()
RETURNING id, name, kind, config, (xmax = 0) AS created, created_at, updated_at,
          secret_names AS secret_keys;

-- name: get_connection
SELECT id, name, kind, config, created_at, updated_at, secret_names AS secret_keys
FROM connections WHERE workspace_id = $1 AND name = $2;

-- name: list_connections
SELECT id, name, kind, config, created_at, updated_at, secret_names AS secret_keys
FROM connections WHERE workspace_id = $1 ORDER BY name;

-- name: delete_connection
DELETE FROM connections WHERE workspace_id = $1 AND name = $2 RETURNING id;

-- name: resolve_connection
SELECT kind, config, secrets, sealed_secrets FROM connections
WHERE workspace_id = $1 AND name = $2;

-- name: plain_connections
SELECT id, workspace_id, name, secrets FROM connections
WHERE sealed_secrets IS NULL AND secrets <> '{}'::jsonb
ORDER BY id FOR UPDATE;

-- name: sealed_connections
SELECT id, workspace_id, name, sealed_secrets FROM connections
WHERE sealed_secrets IS NOT NULL
ORDER BY id FOR UPDATE;

-- name: one_sealed_connection
SELECT workspace_id, name, sealed_secrets FROM connections
WHERE sealed_secrets IS NOT NULL
ORDER BY updated_at DESC LIMIT 1;

-- name: store_sealed
UPDATE connections
SET sealed_secrets = $2, secret_names = $3, secrets = '{}'::jsonb
WHERE id = $1;
