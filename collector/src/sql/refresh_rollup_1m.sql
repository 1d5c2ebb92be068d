-- Recompute rollup_1m for the minutes in [$1, $2) from frames (plain
-- PostgreSQL; the TimescaleDB continuous aggregate computes the same).
INSERT INTO rollup_1m (layout_id, slot, bucket, min, max, sum, count, last, last_ts)
SELECT f.layout_id,
       v.slot::int,
       date_bin(interval '1 minute', f.ts, timestamptz '2000-01-01 00:00:00+00'),
       min(v.val), max(v.val), sum(v.val), count(*),
       (array_agg(v.val ORDER BY f.ts DESC))[1],
       max(f.ts)
FROM frames f CROSS JOIN LATERAL unnest(f.vals) WITH ORDINALITY AS v(val, slot)
WHERE f.ts >= $1 AND f.ts < $2 AND v.val IS NOT NULL
GROUP BY 1, 2, 3
