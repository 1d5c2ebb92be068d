-- Bookkeeping of the history lake (collector/src/lake/, `bess-collector export`).
--
-- lake_pending: a (site, hour) whose stored samples changed since the lake's
-- object for it was last written. The writer upserts the hours of every new
-- batch in the same transaction as its frames, so a committed sample always
-- has its hour marked; a write to an hour already marked bumps `generation`.
-- The exporter deletes a mark only while its generation is the one it
-- exported (compare-and-delete): a batch committed meanwhile leaves the mark,
-- and the hour is written again, whole.
CREATE TABLE lake_pending (
    site_id    int NOT NULL REFERENCES sites,
    hour       timestamptz NOT NULL,
    generation bigint NOT NULL DEFAULT 1,
    marked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, hour)
);
CREATE INDEX lake_pending_hour ON lake_pending (hour);

-- The last object written for each (site, hour): what the lake holds.
CREATE TABLE lake_exports (
    site_id     int NOT NULL REFERENCES sites,
    hour        timestamptz NOT NULL,
    object      text NOT NULL,
    rows        bigint NOT NULL,
    bytes       bigint NOT NULL,
    -- How many times the object was written (1 + rewrites for late data).
    writes      int NOT NULL DEFAULT 1,
    exported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, hour)
);
