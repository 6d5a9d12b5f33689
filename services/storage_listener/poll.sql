-- name: claim_objects
-- Record the listed (key, etag) pairs of one bucket; return the keys that are new or whose ETag
-- changed. Row locks make a concurrent replica wait and then see them as already claimed.
INSERT INTO storage_poll_objects AS seen (bucket, key, etag)
SELECT $1, t.key, t.etag FROM unnest($2::text[], $3::text[]) AS t(key, etag)
ON CONFLICT (bucket, key) DO UPDATE SET etag = EXCLUDED.etag, seen_at = now()
WHERE seen.etag IS DISTINCT FROM EXCLUDED.etag
RETURNING key;

-- name: trigger_cutoffs
-- Per bucket, when its first enabled s3 trigger was created (objects older than that are the
-- bucket's existing content, not new arrivals).
SELECT subject AS bucket, min(created_at) AS created_at
FROM triggers WHERE type = 's3' AND enabled AND subject = ANY($1::text[])
GROUP BY subject;
