-- Terminate and rerun are requests (contract 4: only the executor changes attempt state): the API
-- records one here and NOTIFYs `sluice_requests`; an executor carries it out and reports the
-- result on the row. A duplicate while one is pending is the same request (the partial UNIQUE
-- index), so a double click or a retried call never acts twice.
CREATE TABLE instance_requests (
    id             bigserial PRIMARY KEY,
    workspace_id   bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    instance_id    bigint NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    action         text NOT NULL CHECK (action IN ('terminate', 'rerun')),
    -- rerun only: `all` nodes or only the `failed` ones
    mode           text CHECK (mode IN ('all', 'failed')),
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    -- why it failed (the instance ended meanwhile, nothing to rerun, ...)
    reason         text,
    -- who asked: the token (kept as a name if the token is deleted later)
    token_id       bigint REFERENCES tokens(id) ON DELETE SET NULL,
    requested_by   text,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    -- the instance's state right after the request was carried out
    instance_state text,
    CHECK ((action = 'rerun') = (mode IS NOT NULL))
);
CREATE UNIQUE INDEX instance_requests_pending_once ON instance_requests (instance_id, action)
    WHERE state = 'pending';
-- What executors pick up, oldest first.
CREATE INDEX instance_requests_pending ON instance_requests (id) WHERE state = 'pending';
CREATE INDEX instance_requests_instance ON instance_requests (instance_id);
