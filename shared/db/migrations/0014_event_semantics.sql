-- Priority aging (policy.aging_s): a waiting instance or ready node gains one priority level
-- (1 -> 3 -> 5 -> 7 -> 8) per `aging_s` seconds waited. The interval is copied onto each row at
-- creation so the claim and promotion statements rank rows without reading workflow specs.
ALTER TABLE instances ADD COLUMN aging_s double precision;
ALTER TABLE node_instances ADD COLUMN aging_s double precision;

-- The level a row has reached after `waited_s` seconds. Immutable and written as one SELECT so
-- the planner inlines it into the ordering of the claim statements.
CREATE FUNCTION sluice_aged_priority(base integer, waited_s double precision,
                                     aging_s double precision)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN aging_s IS NULL OR waited_s IS NULL OR waited_s < aging_s THEN base
        ELSE coalesce((ARRAY[1, 3, 5, 7, 8])[
                 LEAST(array_position(ARRAY[1, 3, 5, 7, 8], base) + floor(waited_s / aging_s),
                       5)::int], base)
    END
$$;

-- Aging rows are ranked by an expression of the clock, which no index can hold: the claim reads
-- them apart, oldest first, from these partial indexes; rows without aging keep the static order.
CREATE INDEX node_instances_ready_aging ON node_instances (resource_group, ready_at, id)
    WHERE state = 'ready' AND aging_s IS NOT NULL;
CREATE INDEX instances_waiting_aging ON instances (workflow_id, created_at, id)
    WHERE state = 'waiting' AND aging_s IS NOT NULL;
