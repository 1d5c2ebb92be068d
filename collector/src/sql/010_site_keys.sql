-- Sites' public signing keys (collector/src/site_keys/): a batch of a site
-- is stored only when it is signed by one of that site's keys (unless
-- unsigned batches are allowed, for migration).
--
-- site_keys: one row per (site, key). A key signs the readings of its
-- validity window [valid_from, valid_until) (open ends: always); a revoked
-- key signs nothing, whenever its readings were taken. Keys are revoked,
-- never deleted, so the record of who enrolled and revoked what stays.
CREATE TABLE site_keys (
    site         text NOT NULL,
    key_id       text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    public_key   text NOT NULL,
    valid_from   timestamptz,
    valid_until  timestamptz,
    note         text NOT NULL DEFAULT '',
    enrolled_by  text NOT NULL,
    enrolled_at  timestamptz NOT NULL DEFAULT now(),
    revoked_by   text,
    revoked_at   timestamptz,
    PRIMARY KEY (site, key_id),
    CHECK (valid_until IS NULL OR valid_from IS NULL OR valid_from < valid_until)
);

-- One row: bumped in the transaction of every change to site_keys, so each
-- instance notices an enrolment or a revocation by polling it.
CREATE TABLE site_keys_version (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version   bigint NOT NULL
);
INSERT INTO site_keys_version (version) VALUES (0);
