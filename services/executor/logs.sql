-- name: insert_log_chunks
-- Fenced: a chunk is stored only while its attempt still holds the node's lease.
INSERT INTO attempt_logs (attempt_id, seq, data)
SELECT t.attempt_id, t.seq, t.data
FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::int[], $5::text[])
     AS t(attempt_id, node_id, token, seq, data)
JOIN node_instances n ON n.id = t.node_id AND n.lease_token = t.token AND n.state = 'running'
RETURNING attempt_id;
