-- TimescaleDB: hours that received frames older than the refresh policies'
-- window (3 days), so the collector's upkeep refreshes the rollups over
-- them by hand. Marked by the writer in the transaction that stores the
-- frames; `generation` grows with each new mark, so a refresh only clears
-- the marks it has seen.
CREATE TABLE rollup_late_hours (
    hour       timestamptz PRIMARY KEY,
    generation bigint NOT NULL DEFAULT 1
);
