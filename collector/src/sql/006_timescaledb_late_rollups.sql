-- TimescaleDB: late data of any age reaches the rollups.
--
-- The refresh policies of migration 3 looked back 3 days (start_offset), so
-- a site's backlog older than that — an edge buffer holds weeks — was
-- stored but never rolled up once the aggregates had been refreshed past
-- it. With no start_offset a refresh covers all time, and recomputes only
-- the buckets that writes invalidated since the last run (TimescaleDB's
-- invalidation log), so its cost follows what arrived, not the table's
-- age. Retention keeps the rollups: dropping old chunks invalidates no
-- bucket.
SELECT remove_continuous_aggregate_policy('rollup_1m');
SELECT remove_continuous_aggregate_policy('rollup_1h');
SELECT add_continuous_aggregate_policy('rollup_1m',
    start_offset => NULL, end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('rollup_1h',
    start_offset => NULL, end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
