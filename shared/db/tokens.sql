-- name: create_token
INSERT INTO tokens (workspace_id, name, role, token_hash)
VALUES ($1, $2, $3, $4)
RETURNING id, name, role, created_at, last_used_at, revoked_at;

-- name: ensure_token
INSERT INTO tokens (workspace_id, name, role, token_hash)
VALUES ($1, $2, $3, $4)
ON CONFLICT (token_hash) DO UPDATE SET revoked_at = NULL, role = EXCLUDED.role
RETURNING id;

-- name: authenticate
SELECT t.id, t.role, w.id AS workspace_id, w.name AS workspace,
       (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute') AS stale
FROM tokens t JOIN workspaces w ON w.id = t.workspace_id
WHERE t.token_hash = $1 AND t.revoked_at IS NULL;

-- name: touch_token
-- Only when stale: writing on every request would serialize requests sharing a token.
UPDATE tokens SET last_used_at = now() WHERE id = $1;

-- name: list_tokens
SELECT id, name, role, created_at, last_used_at, revoked_at
FROM tokens WHERE workspace_id = $1 ORDER BY id;

-- name: revoke_token
UPDATE tokens SET revoked_at = now()
WHERE id = $2 AND workspace_id = $1 AND revoked_at IS NULL
RETURNING id;
