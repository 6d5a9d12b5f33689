-- The version of the trigger set, so intake can keep every trigger in memory (a compiled index,
-- DESIGN.md 7.1) and check per batch with one primary-key read that it is still current.
-- A random token rather than a counter: databases cloned from one template start with equal
-- tokens and equal triggers, and any change in any of them draws a token no other holds. Bumped
-- by a statement trigger, so every write path (API, CLI, cascades from a deleted workspace)
-- changes it in the transaction of the change: the token a reader sees and the triggers it
-- loads are always of the same commit.
CREATE TABLE trigger_generation (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    token    uuid NOT NULL
);
INSERT INTO trigger_generation (token) VALUES (gen_random_uuid());

CREATE FUNCTION sluice_trigger_generation_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE trigger_generation SET token = gen_random_uuid();
    RETURN NULL;
END
$$;

CREATE TRIGGER triggers_generation
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON triggers
FOR EACH STATEMENT EXECUTE FUNCTION sluice_trigger_generation_bump();
