-- name: claim_key
-- The row is ours when it is new or its earlier use has expired. A concurrent request with the
-- same key waits here for the first one's transaction and then finds its row.
INSERT INTO idempotency_keys AS k (workspace_id, key, fingerprint)
VALUES ($1, $2, $3)
ON CONFLICT (workspace_id, key) DO UPDATE
    SET fingerprint = EXCLUDED.fingerprint, response = NULL, created_at = now()
    WHERE k.created_at < now() - make_interval(secs => $4)
RETURNING key;

-- name: stored_key
SELECT fingerprint, response FROM idempotency_keys WHERE workspace_id = $1 AND key = $2;

-- name: record_response
UPDATE idempotency_keys SET response = $3 WHERE workspace_id = $1 AND key = $2;

-- name: prune_keys
DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1);
