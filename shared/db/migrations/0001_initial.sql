-- sluice initial schema. PostgreSQL is the system of record and the run queue.

CREATE TABLE workspaces (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    parameters  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO workspaces (name) VALUES ('default');

CREATE TABLE tokens (
    id            bigserial PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'developer', 'operator', 'viewer')),
    -- sha256 of the secret; the secret itself is shown once at creation and never stored.
    token_hash    bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

CREATE TABLE connections (
    id            bigserial PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('postgres', 's3', 'kafka')),
    config        jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- write-only: read by runners, never by any API query.
    secrets       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, name)
);

CREATE TABLE resource_groups (
    name        text PRIMARY KEY,
    slots       integer NOT NULL CHECK (slots > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO resource_groups (name, slots) VALUES ('default', 32);

CREATE TABLE triggers (
    id            bigserial PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name          text NOT NULL,
    type          text NOT NULL CHECK (type IN ('kafka', 's3')),
    -- kafka: topic; s3: bucket. Indexed so intake finds candidate triggers of an event fast.
    subject       text NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    spec          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, name)
);
CREATE INDEX triggers_subject ON triggers (type, subject) WHERE enabled;

CREATE TABLE workflows (
    id                 bigserial PRIMARY KEY,
    workspace_id       bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name               text NOT NULL,
    type               text NOT NULL CHECK (type IN ('scheduled', 'triggered', 'manual')),
    current_version    integer NOT NULL,
    published_version  integer,
    -- the trigger named by the latest saved version: lets intake explain "bound but unpublished".
    draft_trigger_id   bigint REFERENCES triggers(id) ON DELETE RESTRICT,
    -- the trigger named by the published version: what intake admits for.
    trigger_id         bigint REFERENCES triggers(id) ON DELETE RESTRICT,
    frozen             boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, name)
);
CREATE INDEX workflows_trigger ON workflows (trigger_id);
CREATE INDEX workflows_draft_trigger ON workflows (draft_trigger_id);

CREATE TABLE workflow_versions (
    workflow_id  bigint NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    version      integer NOT NULL,
    spec         jsonb NOT NULL,
    -- per node: effective priority and weight under the version's own policy.
    plan         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, version)
);

CREATE TABLE events (
    id                 bigserial PRIMARY KEY,
    workspace_id       bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    source             text NOT NULL,
    subject            text NOT NULL,
    ref                text NOT NULL,
    received_at        timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    payload            jsonb,
    payload_truncated  boolean NOT NULL DEFAULT false,
    error              text
);
CREATE INDEX events_workspace_time ON events (workspace_id, id DESC);

CREATE TABLE event_outcomes (
    event_id      bigint NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    seq           integer NOT NULL,
    trigger_id    bigint,
    trigger_name  text,
    workflow_name text,
    outcome       text NOT NULL,
    instance_ids  bigint[] NOT NULL DEFAULT '{}',
    detail        text,
    PRIMARY KEY (event_id, seq)
);
CREATE INDEX event_outcomes_trigger ON event_outcomes (trigger_name, outcome);

CREATE TABLE admissions (
    id          bigserial PRIMARY KEY,
    trigger_id  bigint NOT NULL REFERENCES triggers(id) ON DELETE CASCADE,
    dedup_key   text NOT NULL,
    event_id    bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- contract 2: at most one admission per (trigger, dedup key), however many deliveries.
    UNIQUE (trigger_id, dedup_key)
);
CREATE INDEX admissions_created ON admissions (created_at);

CREATE TABLE backfills (
    id            bigserial PRIMARY KEY,
    workspace_id  bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    workflow_id   bigint NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    start_at      timestamptz NOT NULL,
    end_at        timestamptz NOT NULL,
    parallelism   integer NOT NULL CHECK (parallelism > 0),
    priority      integer,
    ordering      text NOT NULL DEFAULT 'asc' CHECK (ordering IN ('asc', 'desc')),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instances (
    id               bigserial PRIMARY KEY,
    workspace_id     bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    workflow_id      bigint NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    version          integer NOT NULL,
    kind             text NOT NULL
                     CHECK (kind IN ('scheduled', 'triggered', 'manual', 'api', 'backfill', 'rerun')),
    state            text NOT NULL DEFAULT 'waiting'
                     CHECK (state IN ('waiting', 'running', 'succeeded', 'failed', 'terminated',
                                      'cancelled')),
    -- runtime priority override; NULL means node/workflow priorities apply.
    priority         integer,
    -- instance-level order among waiting instances (override, else workflow policy).
    queue_priority   integer NOT NULL DEFAULT 1,
    cyctime          timestamptz NOT NULL,
    bizdate          date,
    parameters       jsonb NOT NULL DEFAULT '{}'::jsonb,
    trigger_message  jsonb,
    event_id         bigint,
    admission_id     bigint REFERENCES admissions(id) ON DELETE SET NULL,
    -- exactly-once keys for non-event intake, e.g. schedule@<fire time>.
    run_key          text,
    backfill_id      bigint REFERENCES backfills(id) ON DELETE SET NULL,
    rerun_of         bigint REFERENCES instances(id) ON DELETE SET NULL,
    reason           text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (workflow_id, run_key)
);
CREATE INDEX instances_waiting ON instances (queue_priority DESC, created_at, id) WHERE state = 'waiting';
CREATE INDEX instances_workflow_state ON instances (workflow_id, state);
CREATE INDEX instances_workspace ON instances (workspace_id, id DESC);
CREATE INDEX instances_admission ON instances (admission_id);
CREATE INDEX instances_backfill ON instances (backfill_id) WHERE backfill_id IS NOT NULL;

CREATE TABLE node_instances (
    id                bigserial PRIMARY KEY,
    instance_id       bigint NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    name              text NOT NULL,
    type              text NOT NULL,
    state             text NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'ready', 'running', 'succeeded', 'failed',
                                       'upstream_failed', 'terminated', 'skipped')),
    priority          integer NOT NULL,
    weight            integer NOT NULL,
    resource_group    text NOT NULL,
    upstream          text[] NOT NULL DEFAULT '{}',
    retries           integer NOT NULL DEFAULT 0,
    retry_delay_s     double precision NOT NULL DEFAULT 60,
    timeout_s         double precision,
    attempt           integer NOT NULL DEFAULT 0,
    -- a retry waits in `ready` until this time.
    not_before        timestamptz,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    executor          text,
    claimed_at        timestamptz,
    last_heartbeat    timestamptz,
    ready_at          timestamptz,
    started_at        timestamptz,
    finished_at       timestamptz,
    UNIQUE (instance_id, name)
);
-- dispatch order: priority DESC, weight DESC, instance created_at ASC, node id ASC.
CREATE INDEX node_instances_ready ON node_instances (resource_group, priority DESC, weight DESC, id)
    WHERE state = 'ready';
CREATE INDEX node_instances_running ON node_instances (lease_expires_at) WHERE state = 'running';

CREATE TABLE attempts (
    id                bigserial PRIMARY KEY,
    node_instance_id  bigint NOT NULL REFERENCES node_instances(id) ON DELETE CASCADE,
    attempt           integer NOT NULL,
    state             text NOT NULL DEFAULT 'running'
                      CHECK (state IN ('running', 'succeeded', 'failed', 'lost', 'terminated')),
    reason            text,
    exit_code         integer,
    lease_token       uuid NOT NULL,
    executor          text,
    parameters        jsonb,
    started_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    UNIQUE (node_instance_id, attempt)
);

CREATE TABLE attempt_logs (
    attempt_id  bigint NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    data        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (attempt_id, seq)
);

CREATE TABLE schedule_state (
    workflow_id     bigint PRIMARY KEY REFERENCES workflows(id) ON DELETE CASCADE,
    -- the last fire time the scheduler has accounted for (fired or skipped by misfire policy).
    last_fire_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
