-- Coalescing windows (trigger option `coalesce`): every event admitted for a workflow while its
-- window is open becomes part of the one instance the window closes into. The open window and its
-- members are written in the admission transaction, so a crash mid-window loses nothing; closing
-- creates the instance (its id reserved when the window opened) and marks the window closed in
-- one transaction, under the window's row lock.
CREATE TABLE coalesce_windows (
    id           bigserial PRIMARY KEY,
    trigger_id   bigint NOT NULL,
    workflow_id  bigint NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    -- The workflow version the first event was admitted for: the instance runs it.
    version      integer NOT NULL,
    -- Reserved from instances_id_seq at opening, so each event's audit names the instance.
    instance_id  bigint NOT NULL UNIQUE,
    opened_at    timestamptz NOT NULL,
    closes_at    timestamptz NOT NULL,
    max_events   integer NOT NULL CHECK (max_events > 0),
    events       integer NOT NULL DEFAULT 0 CHECK (events <= max_events),
    closed_at    timestamptz
);
-- At most one open window per (trigger, workflow): concurrent admissions meet on this index.
CREATE UNIQUE INDEX coalesce_windows_open ON coalesce_windows (trigger_id, workflow_id)
    WHERE closed_at IS NULL;
CREATE INDEX coalesce_windows_due ON coalesce_windows (closes_at) WHERE closed_at IS NULL;

CREATE TABLE coalesce_members (
    window_id     bigint NOT NULL REFERENCES coalesce_windows(id) ON DELETE CASCADE,
    seq           integer NOT NULL,
    workflow_id   bigint NOT NULL,
    admission_id  bigint NOT NULL,
    event_id      bigint NOT NULL,
    message       jsonb,
    PRIMARY KEY (window_id, seq),
    -- An admission joins at most one window of each workflow: one instance, never two.
    UNIQUE (admission_id, workflow_id)
);
