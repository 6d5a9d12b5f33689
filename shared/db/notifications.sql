-- name: enqueue_instance_events
-- Outbox rows for instance events, one per matching rule of the instance's workflow version.
-- $1 instance ids, $2 events. Called inside the transaction of the state change. The message id
-- is stable per (instance, event, run of the instance: a rerun starts it again); `sla_miss` is
-- once per instance whatever its runs.
WITH t AS (
    SELECT * FROM unnest($1::bigint[], $2::text[]) AS t(instance_id, event)
),
src AS (
    SELECT i.workspace_id, i.id AS instance_id, t.event, r.rule, r.ord::int - 1 AS rule_no,
           md5(concat_ws('/', 'instance', i.id, t.event,
                         CASE WHEN t.event <> 'sla_miss'
                              THEN extract(epoch FROM i.started_at)::text END))::uuid
               AS message_id,
           jsonb_build_object('state', i.state, 'reason', i.reason) AS detail
    FROM t
    JOIN instances i ON i.id = t.instance_id
    JOIN workflow_versions v ON v.workflow_id = i.workflow_id AND v.version = i.version
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(v.spec -> 'policy' -> 'notify') = 'array'
             THEN v.spec -> 'policy' -> 'notify' ELSE '[]'::jsonb END
    ) WITH ORDINALITY AS r(rule, ord)
    WHERE jsonb_typeof(r.rule) = 'object' AND r.rule -> 'on' ? t.event
)
INSERT INTO notifications (workspace_id, instance_id, node, event, rule_no, channel, rule,
                           message_id, detail)
SELECT workspace_id, instance_id, NULL, event, rule_no, rule ->> 'channel', rule, message_id,
       detail
FROM src
ON CONFLICT (message_id, rule_no) DO NOTHING
RETURNING id;

-- name: enqueue_node_events
-- Outbox rows for node events: the node's own rules, plus the workflow's rules for the events
-- only nodes have (`retry`, `timeout`). $1 node ids, $2 events, $3 reasons. The message id is
-- stable per (instance, node, event, attempt number).
WITH t AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) AS t(node_id, event, reason)
),
base AS (
    SELECT i.workspace_id, i.id AS instance_id, n.name, n.attempt, t.event, t.reason, v.spec,
           jsonb_path_query_first(v.spec, '$.nodes[*] ? (@.name == $n)',
                                  jsonb_build_object('n', n.name)) AS node_spec
    FROM t
    JOIN node_instances n ON n.id = t.node_id
    JOIN instances i ON i.id = n.instance_id
    JOIN workflow_versions v ON v.workflow_id = i.workflow_id AND v.version = i.version
),
rules AS (
    SELECT b.workspace_id, b.instance_id, b.name, b.attempt, b.event, b.reason, r.rule,
           r.ord::int - 1 AS rule_no
    FROM base b
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(b.node_spec -> 'notify') = 'array'
             THEN b.node_spec -> 'notify' ELSE '[]'::jsonb END
    ) WITH ORDINALITY AS r(rule, ord)
    UNION ALL
    -- Workflow rules are numbered apart from the node's so both can match one message.
    SELECT b.workspace_id, b.instance_id, b.name, b.attempt, b.event, b.reason, r.rule,
           1000 + r.ord::int - 1
    FROM base b
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN b.event IN ('retry', 'timeout')
                  AND jsonb_typeof(b.spec -> 'policy' -> 'notify') = 'array'
             THEN b.spec -> 'policy' -> 'notify' ELSE '[]'::jsonb END
    ) WITH ORDINALITY AS r(rule, ord)
)
INSERT INTO notifications (workspace_id, instance_id, node, event, rule_no, channel, rule,
                           message_id, detail)
SELECT workspace_id, instance_id, name, event, rule_no, rule ->> 'channel', rule,
       md5(concat_ws('/', 'node', instance_id, name, event, attempt))::uuid,
       jsonb_build_object('attempt', attempt, 'reason', reason)
FROM rules
WHERE jsonb_typeof(rule) = 'object' AND rule -> 'on' ? event
ON CONFLICT (message_id, rule_no) DO NOTHING
RETURNING id;

-- name: enqueue_sla_misses
-- Instances still unfinished `policy.sla_s` after their creation, not yet notified. A version's
-- spec is read once per sweep (not once per instance): the distinct versions of unfinished
-- instances first, then only the instances of versions with an SLA rule that are old enough.
-- The UNIQUE message id makes `sla_miss` fire once whatever races.
WITH versions AS MATERIALIZED (
    SELECT DISTINCT workflow_id, version FROM instances WHERE state IN ('waiting', 'running')
),
slas AS MATERIALIZED (
    SELECT v.workflow_id, v.version, (v.spec -> 'policy' ->> 'sla_s')::float8 AS sla_s
    FROM versions q
    JOIN workflow_versions v ON v.workflow_id = q.workflow_id AND v.version = q.version
    WHERE jsonb_typeof(v.spec -> 'policy' -> 'sla_s') = 'number'
      AND jsonb_path_exists(v.spec, '$.policy.notify[*] ? (@.on[*] == "sla_miss")')
),
late AS (
    SELECT i.id
    FROM slas s
    CROSS JOIN LATERAL (
        SELECT i.id FROM instances i
        WHERE i.workflow_id = s.workflow_id AND i.version = s.version
          AND i.state IN ('waiting', 'running')
          AND i.created_at <= now() - make_interval(secs => s.sla_s)
          AND NOT EXISTS (SELECT 1 FROM notifications x
                          WHERE x.instance_id = i.id AND x.event = 'sla_miss')
        ORDER BY i.created_at
        LIMIT $1
    ) i
    LIMIT $1
)
SELECT coalesce(array_agg(id), '{}') AS ids FROM late;

-- name: insert_test
INSERT INTO notifications (workspace_id, event, rule_no, channel, rule, message_id, detail)
VALUES ($1, 'test', 0, $2::jsonb ->> 'channel', $2::jsonb, gen_random_uuid(), '{}'::jsonb)
RETURNING id;

-- name: list_notifications
-- $1 workspace, $2 state or NULL, $3 instance or NULL, $4 id cursor (exclusive) or NULL, $5 limit.
SELECT x.id, x.message_id::text AS message_id, ws.name AS workspace, x.instance_id,
       w.name AS workflow, x.node, x.event, x.channel, x.state, x.attempts, x.last_error,
       x.created_at, x.next_at, x.sent_at
FROM notifications x
JOIN workspaces ws ON ws.id = x.workspace_id
LEFT JOIN instances i ON i.id = x.instance_id
LEFT JOIN workflows w ON w.id = i.workflow_id
WHERE x.workspace_id = $1
  AND ($2::text IS NULL OR x.state = $2)
  AND ($3::bigint IS NULL OR x.instance_id = $3)
  AND ($4::bigint IS NULL OR x.id < $4)
ORDER BY x.id DESC
LIMIT $5;

-- name: get_notification
SELECT x.id, x.message_id::text AS message_id, ws.name AS workspace, x.instance_id,
       w.name AS workflow, x.node, x.event, x.channel, x.state, x.attempts, x.last_error,
       x.created_at, x.next_at, x.sent_at
FROM notifications x
JOIN workspaces ws ON ws.id = x.workspace_id
LEFT JOIN instances i ON i.id = x.instance_id
LEFT JOIN workflows w ON w.id = i.workflow_id
WHERE x.workspace_id = $1 AND x.id = $2;

-- name: connection_kinds
SELECT name, kind FROM connections WHERE workspace_id = $1 AND name = ANY($2::text[]);
