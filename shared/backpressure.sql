-- name: bounded_triggers
-- Every enabled trigger bound (published) to an unfrozen workflow with policy.max_waiting, with
-- that workflow's waiting instances counted up to the bound: enough to decide, and cheap however
-- long the queue grew before the bound was set. Served by workflow_versions_max_waiting (0016)
-- and instances_waiting_workflow.
SELECT t.id AS trigger_id, t.workspace_id, t.name AS trigger, t.type, t.subject,
       t.spec AS trigger_spec, w.id AS workflow_id, w.name AS workflow,
       b.max_waiting,
       (SELECT count(*)
        FROM (SELECT 1 FROM instances i
              WHERE i.workflow_id = w.id AND i.state = 'waiting'
              LIMIT b.max_waiting) AS q)::int AS waiting
FROM workflow_versions v
JOIN workflows w ON w.id = v.workflow_id AND w.published_version = v.version AND NOT w.frozen
JOIN triggers t ON t.id = w.trigger_id AND t.enabled
CROSS JOIN LATERAL (SELECT (v.spec -> 'policy' ->> 'max_waiting')::int AS max_waiting) AS b
WHERE (v.spec -> 'policy' ->> 'max_waiting') IS NOT NULL
ORDER BY t.workspace_id, t.name, w.name;

-- name: workflow_backpressure
-- One workflow's waiting instances (exact) and the bound of its published version.
SELECT (v.spec -> 'policy' ->> 'max_waiting')::int AS max_waiting,
       (SELECT count(*) FROM instances i
        WHERE i.workflow_id = w.id AND i.state = 'waiting')::int AS waiting
FROM workflows w
LEFT JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.published_version
WHERE w.id = $1;
