-- Dependencies between workflows (DESIGN.md section 8) and workflow-completion triggers.
--
-- `instance_dependencies`: one row per upstream cycle a scheduled or backfill instance waits for.
-- The instance stays `waiting` while any of its rows is open (`satisfied_at IS NULL`); the
-- executor's promotion skips it. A row is closed by the success of the upstream instance of that
-- cycle, in the SAME transaction as that instance's final state (trigger below): a crash either
-- keeps both or neither, so a release is never lost and never happens twice. There is no
-- foreign key to the upstream workflow: deleting it must not silently release its dependants.
-- `upstream_instance_id` pins the row to one instance (workflows backfilled together wait for
-- the backfill's own upstream run, not an older run of the same day); otherwise any instance of
-- the upstream workflow for that bizdate (and, for `previous`, that fire time) releases it.
CREATE TABLE instance_dependencies (
    instance_id           bigint NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    seq                   integer NOT NULL,
    upstream_workflow_id  bigint NOT NULL,
    upstream_name         text NOT NULL,
    cycle                 text NOT NULL CHECK (cycle IN ('same', 'previous')),
    bizdate               date NOT NULL,
    cyctime               timestamptz,
    upstream_instance_id  bigint,
    satisfied_by          bigint,
    satisfied_at          timestamptz,
    PRIMARY KEY (instance_id, seq)
);
CREATE INDEX instance_dependencies_open
    ON instance_dependencies (upstream_workflow_id, bizdate) WHERE satisfied_at IS NULL;
CREATE INDEX instance_dependencies_pinned
    ON instance_dependencies (upstream_instance_id)
    WHERE satisfied_at IS NULL AND upstream_instance_id IS NOT NULL;

-- `blocked`: the instance has an open dependency row. The executor's promotion skips blocked
-- instances through a partial index of the unblocked waiting ones, so a long queue of waiting
-- dependants costs nothing per promotion.
ALTER TABLE instances ADD COLUMN blocked boolean NOT NULL DEFAULT false;
CREATE INDEX instances_waiting_unblocked
    ON instances (workflow_id, queue_priority DESC, created_at, id)
    WHERE state = 'waiting' AND NOT blocked;
-- The upstream instances of a cycle: found when a dependant is created.
CREATE INDEX instances_workflow_bizdate ON instances (workflow_id, bizdate);

-- Backfills created together (several workflows in one request) share a group: dependencies
-- between them are pinned to the group's own instances.
ALTER TABLE backfills ADD COLUMN group_id bigint;

-- How many times an instance has reached a final state: a rerun that ends again is a new
-- generation, which a `workflow` trigger with `refire_on_rerun` fires for again.
ALTER TABLE instances ADD COLUMN finishes integer NOT NULL DEFAULT 0;

ALTER TABLE triggers DROP CONSTRAINT triggers_type_check;
ALTER TABLE triggers ADD CONSTRAINT triggers_type_check CHECK (type IN ('kafka', 's3', 'workflow'));

-- Outbox of finished instances watched by an enabled `workflow` trigger, written in the same
-- transaction as the final state; the scheduler admits each row (deduplicated by the upstream
-- instance id) and deletes it in one transaction.
CREATE TABLE workflow_finishes (
    id            bigserial PRIMARY KEY,
    workspace_id  bigint NOT NULL,
    instance_id   bigint NOT NULL,
    workflow_id   bigint NOT NULL,
    workflow      text NOT NULL,
    state         text NOT NULL,
    generation    integer NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (instance_id, generation)
);

CREATE FUNCTION sluice_count_finish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.finishes := OLD.finishes + 1;
    RETURN NEW;
END $$;

CREATE TRIGGER instances_count_finish
    BEFORE UPDATE OF state ON instances FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'terminated', 'cancelled')
          AND OLD.state NOT IN ('succeeded', 'failed', 'terminated', 'cancelled'))
    EXECUTE FUNCTION sluice_count_finish();

CREATE FUNCTION sluice_instance_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wf_name text;
    released bigint[];
BEGIN
    SELECT name INTO wf_name FROM workflows WHERE id = NEW.workflow_id;
    IF NEW.state = 'succeeded' THEN
        WITH closed AS (
            UPDATE instance_dependencies d
            SET satisfied_by = NEW.id, satisfied_at = clock_timestamp()
            WHERE d.satisfied_at IS NULL
              AND (d.upstream_instance_id = NEW.id
                   OR (d.upstream_instance_id IS NULL AND d.upstream_workflow_id = NEW.workflow_id
                       AND d.bizdate = NEW.bizdate
                       AND (d.cyctime IS NULL OR d.cyctime = NEW.cyctime)))
            RETURNING d.instance_id
        )
        SELECT array_agg(DISTINCT instance_id) INTO released FROM closed;
        IF released IS NOT NULL THEN
            UPDATE instances i
            SET blocked = false, reason = CASE WHEN i.state = 'waiting' THEN NULL ELSE i.reason END
            WHERE i.id = ANY(released) AND i.blocked
              AND NOT EXISTS (SELECT 1 FROM instance_dependencies o
                              WHERE o.instance_id = i.id AND o.satisfied_at IS NULL);
            PERFORM pg_notify('sluice_instances', '');
        END IF;
    ELSE
        -- The dependant keeps waiting; its reason says what happened upstream.
        UPDATE instances i
        SET reason = format('upstream workflow %s for %s %s (instance %s); waiting for a '
                            'successful run or rerun', d.upstream_name,
                            to_char(d.bizdate, 'YYYYMMDD'), NEW.state, NEW.id)
        FROM instance_dependencies d
        WHERE d.satisfied_at IS NULL AND i.id = d.instance_id AND i.state = 'waiting'
          AND (d.upstream_instance_id = NEW.id
               OR (d.upstream_instance_id IS NULL AND d.upstream_workflow_id = NEW.workflow_id
                   AND d.bizdate = NEW.bizdate
                   AND (d.cyctime IS NULL OR d.cyctime = NEW.cyctime)));
    END IF;
    IF EXISTS (SELECT 1 FROM triggers t
               WHERE t.type = 'workflow' AND t.enabled
                 AND t.subject = NEW.workspace_id::text || '/' || wf_name) THEN
        INSERT INTO workflow_finishes (workspace_id, instance_id, workflow_id, workflow, state,
                                       generation)
        VALUES (NEW.workspace_id, NEW.id, NEW.workflow_id, wf_name, NEW.state, NEW.finishes)
        ON CONFLICT (instance_id, generation) DO NOTHING;
        PERFORM pg_notify('sluice_workflow_finishes', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER instances_finished
    AFTER UPDATE OF state ON instances FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'terminated', 'cancelled')
          AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION sluice_instance_finished();

