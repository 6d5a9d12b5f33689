-- Node outputs (data passed downstream): the JSON object an attempt produced, NULL when it
-- produced none. Kept per attempt, so a rerun's new outputs never overwrite an earlier
-- attempt's; descendants read the latest succeeded attempt of each ancestor.
ALTER TABLE attempts ADD COLUMN outputs jsonb;
