-- name: insert_events
INSERT INTO events (id, workspace_id, source, subject, ref, received_at, payload,
                    payload_truncated, error, platform_only)
-- Payloads arrive as JSON text: intake encodes each once, for the event and its instances.
SELECT t.id, t.workspace_id, t.source, t.subject, t.ref, t.received_at, t.payload::jsonb,
       t.payload_truncated, t.error, t.platform_only
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
            $6::timestamptz[], $7::text[], $8::bool[], $9::text[], $10::bool[])
     AS t(id, workspace_id, source, subject, ref, received_at, payload, payload_truncated, error,
          platform_only);

-- name: insert_outcomes
INSERT INTO event_outcomes (event_id, seq, trigger_id, trigger_name, workflow_name, outcome,
                            instance_ids, detail)
SELECT t.event_id, t.seq, t.trigger_id, t.trigger_name, t.workflow_name, t.outcome,
       CASE WHEN t.instance_ids = '' THEN '{}'::bigint[]
            ELSE string_to_array(t.instance_ids, ',')::bigint[] END,
       t.detail
FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[])
     AS t(event_id, seq, trigger_id, trigger_name, workflow_name, outcome, instance_ids, detail);

-- name: insert_admissions
INSERT INTO admissions (trigger_id, dedup_key, event_id)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])
ON CONFLICT (trigger_id, dedup_key) DO NOTHING
RETURNING id, trigger_id, dedup_key, event_id;

-- name: admitted_instances
-- For deliveries that lost the race: which instances the first delivery created.
SELECT a.trigger_id, a.dedup_key, a.event_id,
       coalesce(array_agg(DISTINCT i.id) FILTER (WHERE i.id IS NOT NULL), '{}') AS instance_ids
FROM admissions a
JOIN unnest($1::bigint[], $2::text[]) AS k(trigger_id, dedup_key)
  ON a.trigger_id = k.trigger_id AND a.dedup_key = k.dedup_key
LEFT JOIN instances i ON i.admission_id = a.id
GROUP BY a.trigger_id, a.dedup_key, a.event_id;

-- name: bound_workflows
-- Workflows a trigger admits for (published binding) or would, once published (draft binding).
SELECT w.id, w.workspace_id, w.name, w.type, w.frozen, w.published_version,
       w.trigger_id, w.draft_trigger_id, v.spec, v.plan
FROM workflows w
LEFT JOIN workflow_versions v ON v.workflow_id = w.id AND v.version = w.published_version
WHERE w.trigger_id = ANY($1::bigint[]) OR w.draft_trigger_id = ANY($1::bigint[]);

-- name: legacy_admissions
-- Admissions under Kafka `offset` keys of the old position-only form, with the stored message.
SELECT a.trigger_id, a.dedup_key, e.payload
FROM admissions a
JOIN unnest($1::bigint[], $2::text[]) AS k(trigger_id, dedup_key)
  ON a.trigger_id = k.trigger_id AND a.dedup_key = k.dedup_key
JOIN events e ON e.id = a.event_id;

-- name: original_admissions
-- Replays: which event first admitted each (trigger, dedup key).
SELECT a.trigger_id, a.dedup_key, a.event_id
FROM admissions a
JOIN unnest($1::bigint[], $2::text[]) AS k(trigger_id, dedup_key)
  ON a.trigger_id = k.trigger_id AND a.dedup_key = k.dedup_key;

-- name: mark_replayed_events
UPDATE events e SET replay_id = t.replay_id, replay_of = t.replay_of
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS t(id, replay_id, replay_of)
WHERE e.id = t.id;
