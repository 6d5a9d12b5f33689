-- Priority aging (policy.aging_s): a waiting instance or ready node gains one priority level
-- (1 -> 3 -> 5 -> 7 -> 8) per `aging_s` seconds waited. The interval is copied onto each row at
-- creation so the claim and promotion statements rank rows without reading workflow specs.
ALTER TABLE instances ADD COLUMN aging_s double precision;
ALTER TABLE node_instances ADD COLUMN aging_s double precision;

-- The rank a row has reached after `waited_s` seconds: its place on the ladder plus one per
-- interval waited, without a ceiling, so a row that aged past level 8 goes ahead of priority-8
-- work that did not (that is what bounds its wait). Immutable single SELECTs, so the planner
-- inlines them into the claim statements.
CREATE FUNCTION sluice_aging_rank(base integer, waited_s double precision,
                                  aging_s double precision)
RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_position(ARRAY[1, 3, 5, 7, 8], base) - 1, base)::bigint
           + CASE WHEN aging_s IS NULL OR waited_s IS NULL OR waited_s < aging_s THEN 0
                  ELSE LEAST(floor(waited_s / aging_s), 1e15)::bigint END
$$;

-- The priority level shown for that rank: 1 -> 3 -> 5 -> 7 -> 8, then 8.
CREATE FUNCTION sluice_aged_priority(base integer, waited_s double precision,
                                     aging_s double precision)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN aging_s IS NULL OR waited_s IS NULL OR waited_s < aging_s THEN base
        ELSE coalesce((ARRAY[1, 3, 5, 7, 8])[
                 LEAST(sluice_aging_rank(base, waited_s, aging_s), 4)::int + 1], base)
    END
$$;

-- Aging rows are ranked by an expression of the clock, which no index can hold: the claim reads
-- them apart, oldest first, from these partial indexes; rows without aging keep the static order.
CREATE INDEX node_instances_ready_aging ON node_instances (resource_group, ready_at, id)
    WHERE state = 'ready' AND aging_s IS NOT NULL;
CREATE INDEX instances_waiting_aging ON instances (workflow_id, created_at, id)
    WHERE state = 'waiting' AND aging_s IS NOT NULL;

-- Ordered lanes (policy.lane): the lane value resolved at admission. Instances of a workflow with
-- the same value run one at a time, in instance id (admission) order; the index finds a lane's
-- running instance and its earlier waiting ones.
ALTER TABLE instances ADD COLUMN lane text;
CREATE INDEX instances_lane ON instances (workflow_id, lane, id)
    WHERE lane IS NOT NULL AND state IN ('waiting', 'running');
