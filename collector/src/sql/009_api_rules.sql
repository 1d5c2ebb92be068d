-- Alert rules managed over the API (collector/src/rules/managed/), in force
-- beside the rules file's.
--
-- api_rules: one row per rule. `definition` holds the rule's fields exactly
-- as a `[[rule]]` table of the rules file would have them (`name` among
-- them), so every check is the file's; a disabled rule is kept, not
-- evaluated.
CREATE TABLE api_rules (
    name        text PRIMARY KEY,
    definition  jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object' AND definition->>'name' = name),
    enabled     boolean NOT NULL DEFAULT true,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row: bumped in the transaction of every change to api_rules
-- (deletes included), so each instance notices any change by polling it.
CREATE TABLE api_rules_version (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version   bigint NOT NULL
);
INSERT INTO api_rules_version (version) VALUES (0);
