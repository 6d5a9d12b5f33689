-- name: earliest_s3_trigger
-- Where a partition the storage listener never consumed starts (see kafka_source.py).
SELECT min(created_at) FROM triggers WHERE type = 's3' AND enabled;
