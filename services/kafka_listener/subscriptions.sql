-- name: enabled_kafka_topics
-- Per cluster (a trigger's workspace connection, or none: the default cluster), the topics of
-- enabled Kafka triggers with the earliest trigger creation on each.
SELECT CASE WHEN spec->>'connection' IS NULL THEN NULL ELSE workspace_id END AS workspace_id,
       spec->>'connection' AS connection, subject, min(created_at) AS created_at
FROM triggers WHERE type = 'kafka' AND enabled
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
