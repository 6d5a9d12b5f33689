-- Connection secrets move from plain jsonb to `sealed_secrets` (AES-GCM, see shared/secret_box.py).
-- SQL cannot encrypt: `sluice migrate` and the api/executor at start seal the existing rows in
-- Python, idempotently, and empty `secrets` as they go. `secret_names` keeps the names (not the
-- values) that the API lists.
ALTER TABLE connections ADD COLUMN sealed_secrets text;
ALTER TABLE connections ADD COLUMN secret_names text[] NOT NULL DEFAULT '{}';
UPDATE connections SET secret_names = ARRAY(SELECT jsonb_object_keys(secrets) ORDER BY 1);
-- Once sealed, a row holds no plain secret.
ALTER TABLE connections ADD CONSTRAINT connections_sealed_or_plain
    CHECK (sealed_secrets IS NULL OR secrets = '{}'::jsonb);

-- Events that match no trigger of any workspace are recorded in `default` for the audit, but are
-- readable only by platform admins (admins of `default`), not by every viewer of `default`.
ALTER TABLE events ADD COLUMN platform_only boolean NOT NULL DEFAULT false;
UPDATE events SET platform_only = true
WHERE workspace_id = (SELECT id FROM workspaces WHERE name = 'default')
  AND NOT EXISTS (SELECT 1 FROM event_outcomes o
                  WHERE o.event_id = events.id AND o.trigger_id IS NOT NULL);
