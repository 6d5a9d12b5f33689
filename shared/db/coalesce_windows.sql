-- name: lock_open_window
-- The open window of (trigger $1, workflow $2), locked for the rest of the transaction: admissions
-- to one window queue here, so member order is commit order and the count is never stale.
SELECT id, workflow_id, version, instance_id, opened_at, closes_at, max_events, events
FROM coalesce_windows
WHERE trigger_id = $1 AND workflow_id = $2 AND closed_at IS NULL
FOR UPDATE;

-- name: open_window
-- Loses (no row) to a window a concurrent admission opened first; the caller locks that one.
INSERT INTO coalesce_windows (trigger_id, workflow_id, version, instance_id, opened_at,
                              closes_at, max_events)
VALUES ($1, $2, $3, nextval('instances_id_seq'), $4, $5, $6)
ON CONFLICT (trigger_id, workflow_id) WHERE closed_at IS NULL DO NOTHING
RETURNING id, workflow_id, version, instance_id, opened_at, closes_at, max_events, events;

-- name: add_members
INSERT INTO coalesce_members (window_id, seq, workflow_id, admission_id, event_id, message)
SELECT $1, $2 + t.n, $3, t.admission_id, t.event_id, t.message
FROM unnest($4::bigint[], $5::bigint[], $6::jsonb[]) WITH ORDINALITY
     AS t(admission_id, event_id, message, n);

-- name: count_members
UPDATE coalesce_windows SET events = events + $2 WHERE id = $1
RETURNING id, workflow_id, version, instance_id, opened_at, closes_at, max_events, events;

-- name: first_member
-- What the instance takes from its window: the first event's message, ids and arrival time.
SELECT m.event_id, m.admission_id, m.message, coalesce(e.received_at, w.opened_at) AS received_at
FROM coalesce_members m
JOIN coalesce_windows w ON w.id = m.window_id
LEFT JOIN events e ON e.id = m.event_id
WHERE m.window_id = $1
ORDER BY m.seq
LIMIT 1;

-- name: mark_closed
UPDATE coalesce_windows SET closed_at = clock_timestamp() WHERE id = $1 AND closed_at IS NULL;

-- name: lock_due_windows
-- Windows whose time is up with no admission to close them; one another closer holds is skipped.
SELECT id, workflow_id, version, instance_id, opened_at, closes_at, max_events, events
FROM coalesce_windows
WHERE closed_at IS NULL AND closes_at <= clock_timestamp()
ORDER BY closes_at
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: next_due
SELECT min(closes_at) FROM coalesce_windows WHERE closed_at IS NULL;

-- name: clock
SELECT clock_timestamp();

-- name: admission_windows
-- The instances (open or closed windows) that earlier deliveries of these dedup keys joined.
SELECT a.trigger_id, a.dedup_key, array_agg(w.instance_id ORDER BY w.instance_id) AS instance_ids
FROM admissions a
JOIN unnest($1::bigint[], $2::text[]) AS k(trigger_id, dedup_key)
  ON a.trigger_id = k.trigger_id AND a.dedup_key = k.dedup_key
JOIN coalesce_members m ON m.admission_id = a.id
JOIN coalesce_windows w ON w.id = m.window_id
GROUP BY a.trigger_id, a.dedup_key;

-- name: instance_messages
-- `${workflow.triggerMessages}` of a coalesced instance, in admission order.
SELECT m.message
FROM coalesce_windows w
JOIN coalesce_members m ON m.window_id = w.id
WHERE w.instance_id = $1
ORDER BY m.seq;
