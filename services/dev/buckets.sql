-- name: s3_trigger_buckets
-- Every bucket an s3 trigger names, enabled or not: `sluice dev` creates them all.
SELECT DISTINCT subject AS bucket FROM triggers WHERE type = 's3' ORDER BY subject;
