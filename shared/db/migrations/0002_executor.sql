-- Executor bookkeeping.
--
-- `instance_created_at`: the dispatch order is priority DESC, weight DESC, instance created_at ASC,
-- node id ASC. The executor copies the instance's created_at onto a node whenever the node becomes
-- `ready`, so one partial index serves the whole order without joining instances per claim.
-- `retries_used`: failures (and lost attempts) charged against `retries` since the node last
-- started over; a graceful-shutdown release is not charged, and a rerun resets it.
ALTER TABLE node_instances
    ADD COLUMN instance_created_at timestamptz,
    ADD COLUMN retries_used integer NOT NULL DEFAULT 0;

DROP INDEX node_instances_ready;
CREATE INDEX node_instances_ready
    ON node_instances (resource_group, priority DESC, weight DESC, instance_created_at, id)
    WHERE state = 'ready';

-- Admission reads the head of each workflow's waiting queue (priority DESC, created_at ASC)
-- and counts the running instances of each backfill that has waiting ones.
CREATE INDEX instances_waiting_workflow
    ON instances (workflow_id, queue_priority DESC, created_at, id)
    WHERE state = 'waiting';
CREATE INDEX instances_waiting_backfill ON instances (backfill_id)
    WHERE state = 'waiting' AND backfill_id IS NOT NULL;
CREATE INDEX instances_running_backfill ON instances (backfill_id)
    WHERE state = 'running' AND backfill_id IS NOT NULL;
