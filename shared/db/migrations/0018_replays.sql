-- Event replay (POST .../triggers/{name}/replay): a job row per request, carried out by the
-- listener that owns the trigger's source (kafka_listener for Kafka, storage_listener for S3), so
-- the API only writes PostgreSQL. A running job holds a lease (heartbeat_at); a listener that dies
-- leaves it to be claimed again, which is safe because every replayed event goes through the
-- admission dedup keys.
CREATE TABLE replays (
    id            bigserial PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    trigger_id    bigint NOT NULL REFERENCES triggers(id) ON DELETE CASCADE,
    trigger_name  text NOT NULL,
    source        text NOT NULL CHECK (source IN ('kafka', 's3')),
    mode          text NOT NULL CHECK (mode IN ('missing', 'all')),
    range_from    jsonb NOT NULL,
    range_to      jsonb NOT NULL,
    max_events    integer NOT NULL CHECK (max_events > 0),
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    read          integer NOT NULL DEFAULT 0,
    admitted      integer NOT NULL DEFAULT 0,
    duplicate     integer NOT NULL DEFAULT 0,
    filtered      integer NOT NULL DEFAULT 0,
    other         integer NOT NULL DEFAULT 0,
    error         text,
    claimed_by    text,
    attempts      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    heartbeat_at  timestamptz,
    finished_at   timestamptz
);
-- The listeners' claim: unfinished jobs of one source, oldest first.
CREATE INDEX replays_unfinished ON replays (source, id) WHERE state IN ('pending', 'running');

-- A replayed event names its replay job and, when the record had been admitted before, the event
-- that admitted it: the audit link from a replay instance back to the original event.
ALTER TABLE events ADD COLUMN replay_id bigint REFERENCES replays(id) ON DELETE SET NULL;
ALTER TABLE events ADD COLUMN replay_of bigint;

ALTER TABLE instances DROP CONSTRAINT instances_kind_check;
ALTER TABLE instances ADD CONSTRAINT instances_kind_check
    CHECK (kind IN ('scheduled', 'triggered', 'manual', 'api', 'backfill', 'rerun', 'replay'));
