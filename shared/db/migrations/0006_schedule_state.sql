-- Scheduler bookkeeping. A row per workflow with a published version, scheduled or not.
--
-- `version`: the published version the row was settled for. A tick re-examines a workflow only
-- when its published version differs (or a fire time has come), so it never reads the specs of
-- workflows whose publish it has already seen. A version that is not scheduled leaves a row
-- without watermark: made scheduled again later, the schedule starts over from that publish.
-- `schedule`: a copy of that version's `spec->'schedule'`. When a republished schedule differs,
-- the scheduler starts it over from the publish instead of replaying the new cron over the old
-- watermark.
-- `next_fire_at`: the first fire time after `last_fire_at` (NULL: none, e.g. after `end_at`); a
-- tick reads only the schedules that are due, and the scheduler sleeps until the earliest.
ALTER TABLE schedule_state
    ADD COLUMN version integer,
    ADD COLUMN schedule jsonb,
    ADD COLUMN next_fire_at timestamptz;

CREATE INDEX schedule_state_next_fire ON schedule_state (next_fire_at)
    WHERE next_fire_at IS NOT NULL;
