-- name: examples_database_exists
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'sluice_examples');

-- name: create_examples_database
-- The examples' sql nodes get a database of their own, never sluice's.
CREATE DATABASE sluice_examples;

-- name: running_nodes
-- What a stopping `sluice dev` waits for: every running node is this process's executor's.
SELECT instance_id, name, count(*) OVER () AS total
FROM node_instances
WHERE state = 'running'
ORDER BY id
LIMIT 5;
