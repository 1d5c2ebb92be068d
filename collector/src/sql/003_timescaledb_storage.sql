-- Storage with TimescaleDB. The only TimescaleDB-specific SQL of the
-- collector besides the retention policy (storage.rs, set from
-- `--retention` at start-up).
--
-- frames: a hypertable with one chunk per day, compressed after two days
-- with segment-by layout_id (one poll group of one catalog version: every
-- query filters on it) and order-by ts. rollup_1m / rollup_1h: continuous
-- aggregates per (layout, slot) = per point of one catalog version, with the
-- same columns and bucket alignment as the rollup tables of
-- 003_postgresql_storage.sql, refreshed by policies.
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('frames', by_range('ts', INTERVAL '1 day'), migrate_data => true);

ALTER TABLE frames SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'layout_id',
    timescaledb.compress_orderby = 'ts'
);
SELECT add_compression_policy('frames', compress_after => INTERVAL '2 days');

CREATE MATERIALIZED VIEW rollup_1m WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT f.layout_id,
       v.slot::int AS slot,
       time_bucket(INTERVAL '1 minute', f.ts) AS bucket,
       min(v.val) AS min,
       max(v.val) AS max,
       sum(v.val) AS sum,
       count(v.val) AS count,
       last(v.val, f.ts) AS last,
       max(f.ts) AS last_ts
FROM frames f CROSS JOIN LATERAL unnest(f.vals) WITH ORDINALITY AS v(val, slot)
WHERE v.val IS NOT NULL
GROUP BY f.layout_id, v.slot, time_bucket(INTERVAL '1 minute', f.ts)
WITH NO DATA;

CREATE MATERIALIZED VIEW rollup_1h WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT f.layout_id,
       v.slot::int AS slot,
       time_bucket(INTERVAL '1 hour', f.ts) AS bucket,
       min(v.val) AS min,
       max(v.val) AS max,
       sum(v.val) AS sum,
       count(v.val) AS count,
       last(v.val, f.ts) AS last,
       max(f.ts) AS last_ts
FROM frames f CROSS JOIN LATERAL unnest(f.vals) WITH ORDINALITY AS v(val, slot)
WHERE v.val IS NOT NULL
GROUP BY f.layout_id, v.slot, time_bucket(INTERVAL '1 hour', f.ts)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('rollup_1m',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('rollup_1h',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
