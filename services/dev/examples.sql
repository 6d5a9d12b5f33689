-- name: examples_database_exists
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'sluice_examples');

-- name: create_examples_database
-- The examples' sql nodes get a database of their own, never sluice's.
CREATE DATABASE sluice_examples;
