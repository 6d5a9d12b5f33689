-- name: insert_instances
-- Parameters and trigger messages arrive as JSON text (see `create_instances`).
INSERT INTO instances (id, workspace_id, workflow_id, version, kind, state, priority,
                       queue_priority, cyctime, bizdate, parameters, trigger_message, event_id,
                       admission_id, run_key, backfill_id, rerun_of, reason, aging_s, lane,
                       finished_at)
SELECT t.id, t.workspace_id, t.workflow_id, t.version, t.kind, t.state, t.priority,
       t.queue_priority, t.cyctime, t.bizdate, t.parameters::jsonb, t.trigger_message::jsonb,
       t.event_id,
       t.admission_id, t.run_key, t.backfill_id, t.rerun_of, t.reason, t.aging_s, t.lane,
       CASE WHEN t.state = 'cancelled' THEN now() END
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[], $5::text[], $6::text[],
            $7::int[], $8::int[], $9::timestamptz[], $10::date[], $11::text[], $12::text[],
            $13::bigint[], $14::bigint[], $15::text[], $16::bigint[], $17::bigint[], $18::text[],
            $19::float8[], $20::text[])
     AS t(id, workspace_id, workflow_id, version, kind, state, priority, queue_priority, cyctime,
          bizdate, parameters, trigger_message, event_id, admission_id, run_key, backfill_id,
          rerun_of, reason, aging_s, lane)
ON CONFLICT (workflow_id, run_key) DO NOTHING
RETURNING id;

-- name: insert_nodes
INSERT INTO node_instances (instance_id, name, type, state, priority, weight, resource_group,
                            upstream, retries, retry_delay_s, timeout_s, aging_s, finished_at)
SELECT t.instance_id, t.name, t.type, t.state, t.priority, t.weight, t.resource_group,
       CASE WHEN t.upstream = '' THEN '{}'::text[] ELSE string_to_array(t.upstream, E'\x1f') END,
       t.retries, t.retry_delay_s, t.timeout_s, t.aging_s,
       CASE WHEN t.state = 'pending' THEN NULL ELSE now() END
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::text[],
            $8::text[], $9::int[], $10::float8[], $11::float8[], $13::float8[])
     AS t(instance_id, name, type, state, priority, weight, resource_group, upstream, retries,
          retry_delay_s, timeout_s, aging_s)
WHERE t.instance_id = ANY($12::bigint[]);

-- name: lock_workflow_for_overflow
SELECT id FROM workflows WHERE id = $1 FOR UPDATE;

-- name: count_active
SELECT count(*) FROM instances WHERE workflow_id = $1 AND state IN ('waiting', 'running');

-- name: cancel_oldest_waiting
UPDATE instances SET state = 'cancelled', finished_at = now(),
       reason = 'replaced by a newer instance (overflow: replace)'
WHERE id = (SELECT id FROM instances WHERE workflow_id = $1 AND state = 'waiting'
            ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id;

-- name: cancel_nodes_of
UPDATE node_instances SET state = 'terminated', finished_at = now()
WHERE instance_id = $1 AND state IN ('pending', 'ready');

-- name: get_instance
SELECT i.id, ws.name AS workspace, w.name AS workflow, i.version, i.kind, i.state, i.priority,
       i.aging_s, i.lane,
       CASE WHEN i.state = 'waiting'
            THEN sluice_aged_priority(i.queue_priority, extract(epoch FROM now() - i.created_at),
                                      i.aging_s)
            ELSE i.queue_priority END AS effective_priority,
       i.cyctime, i.bizdate, i.parameters, i.trigger_message, i.event_id, i.backfill_id,
       i.created_at, i.started_at, i.finished_at,
       re.replay_id, re.replay_of
FROM instances i
JOIN workflows w ON w.id = i.workflow_id
JOIN workspaces ws ON ws.id = i.workspace_id
LEFT JOIN events re ON re.id = i.event_id AND i.kind = 'replay'
WHERE i.id = $1 AND i.workspace_id = $2;

-- name: instance_nodes
SELECT id, name, type, state, priority, weight, resource_group, upstream,
       CASE WHEN state = 'ready'
            THEN sluice_aged_priority(priority, extract(epoch FROM now() - ready_at), aging_s)
            ELSE priority END AS effective_priority
FROM node_instances WHERE instance_id = $1 ORDER BY id;

-- name: instance_attempts
SELECT a.node_instance_id, a.id, a.attempt, a.state, a.reason, a.exit_code, a.executor,
       a.started_at, a.finished_at, a.parameters
FROM attempts a JOIN node_instances n ON n.id = a.node_instance_id
WHERE n.instance_id = $1 ORDER BY a.node_instance_id, a.attempt;

-- name: notify_instances
SELECT pg_notify('sluice_instances', '');

-- name: coalesced_event_ids
-- The events a coalescing window gathered into instance $1, in admission order (NULL: none).
SELECT array_agg(m.event_id ORDER BY m.seq)
FROM coalesce_windows w JOIN coalesce_members m ON m.window_id = w.id
WHERE w.instance_id = $1;
