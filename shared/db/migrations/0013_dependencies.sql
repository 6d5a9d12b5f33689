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
    released integer;
BEGIN
    SELECT name INTO wf_name FROM workflows WHERE id = NEW.workflow_id;
    IF NEW.state = 'succeeded' THEN
        UPDATE instance_dependencies d
        SET satisfied_by = NEW.id, satisfied_at = clock_timestamp()
        WHERE d.satisfied_at IS NULL
          AND (d.upstream_instance_id = NEW.id
               OR (d.upstream_instance_id IS NULL AND d.upstream_workflow_id = NEW.workflow_id
                   AND d.bizdate = NEW.bizdate
                   AND (d.cyctime IS NULL OR d.cyctime = NEW.cyctime)));
        GET DIAGNOSTICS released = ROW_COUNT;
        IF released > 0 THEN
            UPDATE instances i SET reason = NULL
            WHERE i.id IN (SELECT instance_id FROM instance_dependencies WHERE satisfied_by = NEW.id)
              AND i.state = 'waiting'
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

-- Whether an instance still waits for an upstream cycle: the executor's promotion asks this.
-- A row counts as met when the trigger above closed it, or when a matching upstream instance has
-- succeeded: a dependant created while its upstream was finishing (neither transaction sees the
-- other's rows) is therefore never stranded.
CREATE FUNCTION sluice_waits_for_upstream(p_instance bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM instance_dependencies d
        WHERE d.instance_id = p_instance AND d.satisfied_at IS NULL
          AND NOT EXISTS (
              SELECT 1 FROM instances u
              WHERE u.id = d.upstream_instance_id AND u.state = 'succeeded')
          AND NOT (d.upstream_instance_id IS NULL AND EXISTS (
              SELECT 1 FROM instances u
              WHERE u.workflow_id = d.upstream_workflow_id AND u.state = 'succeeded'
                AND u.bizdate = d.bizdate AND (d.cyctime IS NULL OR u.cyctime = d.cyctime))))
$$;
