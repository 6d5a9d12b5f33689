-- name: insert_replay
INSERT INTO replays (workspace_id, trigger_id, trigger_name, source, mode, range_from, range_to,
                     max_events)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id, state;

-- name: get_replay
SELECT r.id, w.name AS workspace, r.trigger_name AS trigger, r.source, r.mode,
       r.range_from AS from_, r.range_to AS to, r.max_events, r.state, r.read, r.admitted,
       r.duplicate, r.filtered, r.other, r.error, r.created_at, r.started_at, r.finished_at
FROM replays r JOIN workspaces w ON w.id = r.workspace_id
WHERE r.id = $1 AND r.workspace_id = $2;

-- name: claim_replay
-- The oldest pending job of a source, or a running one whose listener stopped heartbeating.
-- Counts restart: the job is carried out again from the start (dedup keeps that harmless).
UPDATE replays SET state = 'running', claimed_by = $2, attempts = attempts + 1,
       started_at = now(), heartbeat_at = now(), read = 0, admitted = 0, duplicate = 0,
       filtered = 0, other = 0, error = NULL
WHERE id = (SELECT id FROM replays
            WHERE source = $1
              AND (state = 'pending'
                   OR (state = 'running' AND heartbeat_at < now() - make_interval(secs => $3)))
            ORDER BY id
            LIMIT 1
            FOR UPDATE SKIP LOCKED)
RETURNING id, workspace_id, trigger_id, trigger_name, source, mode, range_from, range_to,
          max_events;

-- name: add_progress
UPDATE replays SET read = read + $3, admitted = admitted + $4, duplicate = duplicate + $5,
       filtered = filtered + $6, other = other + $7, heartbeat_at = now()
WHERE id = $1 AND claimed_by = $2 AND state = 'running';

-- name: finish_replay
UPDATE replays SET state = $3, error = $4, finished_at = now(), heartbeat_at = now()
WHERE id = $1 AND claimed_by = $2 AND state = 'running';

-- name: release_replay
-- A listener stopping mid-job hands it back at once instead of waiting out the lease.
UPDATE replays SET state = 'pending', claimed_by = NULL, heartbeat_at = NULL
WHERE id = $1 AND claimed_by = $2 AND state = 'running';

-- name: list_replays
-- Newest first; $2 is the cursor (the last id of the previous page).
SELECT r.id, w.name AS workspace, r.trigger_name AS trigger, r.source, r.mode,
       r.range_from AS from_, r.range_to AS to, r.max_events, r.state, r.read, r.admitted,
       r.duplicate, r.filtered, r.other, r.error, r.created_at, r.started_at, r.finished_at
FROM replays r JOIN workspaces w ON w.id = r.workspace_id
WHERE r.workspace_id = $1
  AND ($2::bigint IS NULL OR r.id < $2)
  AND ($3::text IS NULL OR r.trigger_name = $3)
ORDER BY r.id DESC
LIMIT $4;
