-- Storage on plain PostgreSQL (no TimescaleDB): `frames` partitioned by day
-- (UTC) and rollup tables the collector maintains itself.
--
-- Partitions are created by `bess_ensure_frames_partition(day)`: by the
-- writer before it writes a day it has not seen, and a few days ahead by
-- the maintenance task. `bess_drop_frames_partitions(older_than)` drops whole
-- days for retention. Rollups: the writer records each minute it wrote in
-- `rollup_pending` (same transaction as the frames); the maintenance task
-- recomputes those minutes in `rollup_1m` from `frames`, then their hours in
-- `rollup_1h` from `rollup_1m`. Same columns and bucket alignment as the
-- continuous aggregates of 003_timescaledb_storage.sql.

ALTER TABLE frames RENAME TO frames_unpartitioned;
ALTER INDEX frames_layout_ts RENAME TO frames_unpartitioned_layout_ts;

CREATE TABLE frames (
    layout_id int NOT NULL,
    ts        timestamptz NOT NULL,
    vals      float8[] NOT NULL,
    status    int2[]
) PARTITION BY RANGE (ts);
CREATE INDEX frames_layout_ts ON frames (layout_id, ts);
-- For the rollup refresh, which reads whole minutes across all layouts.
CREATE INDEX frames_ts ON frames USING brin (ts);

CREATE FUNCTION bess_ensure_frames_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('frames_%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I PARTITION OF frames FOR VALUES FROM (%L) TO (%L)',
                           part, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
        EXCEPTION WHEN duplicate_table OR unique_violation THEN
            NULL; -- another instance created it meanwhile
        END;
    END IF;
END $$;

CREATE FUNCTION bess_drop_frames_partitions(older_than timestamptz) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part text;
BEGIN
    FOR part IN
        SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'frames'::regclass
          AND c.relname ~ '^frames_[0-9]{8}$'
          AND ((to_date(substr(c.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC') <= older_than
        ORDER BY 1
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END $$;

SELECT bess_ensure_frames_partition(d)
FROM (SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS d FROM frames_unpartitioned) days;
INSERT INTO frames SELECT layout_id, ts, vals, status FROM frames_unpartitioned;
DROP TABLE frames_unpartitioned;

-- Per (layout, slot) = per point of one catalog version, per bucket; only
-- values that are present count. avg = sum / count.
CREATE TABLE rollup_1m (
    layout_id int NOT NULL,
    slot      int NOT NULL,
    bucket    timestamptz NOT NULL,
    min       float8 NOT NULL,
    max       float8 NOT NULL,
    sum       float8 NOT NULL,
    count     bigint NOT NULL,
    last      float8 NOT NULL,
    last_ts   timestamptz NOT NULL,
    PRIMARY KEY (layout_id, slot, bucket)
);
CREATE INDEX rollup_1m_bucket ON rollup_1m (bucket);

CREATE TABLE rollup_1h (LIKE rollup_1m INCLUDING ALL);

-- Minutes written since their rollups were last computed.
CREATE TABLE rollup_pending (
    bucket timestamptz PRIMARY KEY
);
