-- Idempotency-Key of run and backfill requests: a client that retries after a lost answer gets
-- the first answer again instead of a second run. The row is written in the transaction that
-- creates the run, so a key is either bound to its run or absent (the request failed, and the
-- retry creates it). `fingerprint` is a hash of the request (route, workflow, body): the same key
-- with another request is refused. `response` is the first answer, replayed as is. Keys count
-- for 24 hours; the scheduler prunes older rows.
CREATE TABLE idempotency_keys (
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key          text NOT NULL,
    fingerprint  text NOT NULL,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
