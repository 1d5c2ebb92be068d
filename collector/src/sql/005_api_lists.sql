-- A stable key for each gap record, so `/gaps` can be paged without
-- skipping or repeating records that share a start time.
ALTER TABLE gaps ADD COLUMN gap_id bigserial;
CREATE UNIQUE INDEX gaps_site_first_ts_id ON gaps (site_id, first_ts, gap_id);

-- Acknowledged alarms: an operator (a token with role `operate`) has seen
-- the alarm point of a device at this value. A new value (another bit set)
-- is a new alarm, not acknowledged until someone acknowledges it again.
CREATE TABLE alert_acks (
    site_id          int NOT NULL REFERENCES sites,
    device           text NOT NULL,
    point            text NOT NULL,
    value            float8 NOT NULL,
    acknowledged_by  text NOT NULL,
    token_id         int REFERENCES api_tokens,
    note             text NOT NULL DEFAULT '',
    acknowledged_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, device, point)
);
