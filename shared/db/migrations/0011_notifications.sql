-- Notifications: a transactional outbox. A row is inserted in the same transaction as the state
-- change that causes it; the notifier claims due rows with SKIP LOCKED under a lease, delivers,
-- and marks them `sent` or, after the last retry, `dead`.
--
-- `message_id`: stable per (instance, node, event, run of the node or instance), sent as the
-- `Idempotency-Key` / Message-ID so a receiver can drop a repeat; one row per rule it matched
-- (`rule_no`), so the same message reaches every channel subscribed to it once.
-- `detail`: what the state change knew (reason, attempt, exit code) for the message text.
ALTER TABLE connections DROP CONSTRAINT IF EXISTS connections_kind_check;
ALTER TABLE connections ADD CONSTRAINT connections_kind_check
    CHECK (kind IN ('postgres', 's3', 'kafka', 'smtp', 'secret'));

CREATE TABLE notifications (
    id                bigserial PRIMARY KEY,
    workspace_id      bigint NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    instance_id       bigint REFERENCES instances(id) ON DELETE CASCADE,
    node              text,
    event             text NOT NULL
                      CHECK (event IN ('start', 'success', 'failure', 'timeout', 'retry',
                                       'terminated', 'sla_miss', 'test')),
    rule_no           integer NOT NULL,
    channel           text NOT NULL,
    rule              jsonb NOT NULL,
    message_id        uuid NOT NULL,
    detail            jsonb NOT NULL DEFAULT '{}'::jsonb,
    state             text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    next_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_token       uuid,
    lease_expires_at  timestamptz,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at           timestamptz,
    UNIQUE (message_id, rule_no)
);
-- The notifier's claim: due pending rows in order.
CREATE INDEX notifications_due ON notifications (next_at, id) WHERE state = 'pending';
CREATE INDEX notifications_workspace ON notifications (workspace_id, id DESC);
-- An instance's notifications (API filter, SLA "already raised?", cascade on instance delete).
CREATE INDEX notifications_instance ON notifications (instance_id, event);
-- SLA sweep: unfinished instances by age (it reads only instances old enough to matter).
CREATE INDEX instances_unfinished_created ON instances (created_at)
    WHERE state IN ('waiting', 'running');
