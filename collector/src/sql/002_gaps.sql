-- Readings an edge had to drop, from the protocol's Gap records, written in
-- the same transaction as the batch that carried them.
CREATE TABLE gaps (
    site_id     int NOT NULL REFERENCES sites,
    seq         bigint NOT NULL,
    device_id   int REFERENCES devices,   -- NULL: the whole site (e.g. a corrupt edge buffer)
    first_ts    timestamptz NOT NULL,
    last_ts     timestamptz NOT NULL,
    samples     bigint NOT NULL,
    reason      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gaps_device_ts ON gaps (device_id, first_ts);
CREATE INDEX gaps_site_ts ON gaps (site_id, first_ts);

-- The reason class (undecodable, unsupported_version, unknown_catalog,
-- catalog_mismatch, bad_frame), as in the dead-letter headers and metrics.
ALTER TABLE rejected_messages ADD COLUMN reason_class text NOT NULL DEFAULT 'unclassified';
