-- Backpressure (policy.max_waiting): the listeners count, once per batch or interval, the
-- waiting instances of every workflow whose published version sets a bound. This index finds
-- those versions without reading every spec; instances_waiting_workflow serves the counts.
CREATE INDEX workflow_versions_max_waiting ON workflow_versions (workflow_id, version)
    WHERE (spec -> 'policy' ->> 'max_waiting') IS NOT NULL;
