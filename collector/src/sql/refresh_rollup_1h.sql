-- Recompute rollup_1h for the hours in [$1, $2) from rollup_1m (plain
-- PostgreSQL). min/max/sum/count combine exactly; last is the newest last.
INSERT INTO rollup_1h (layout_id, slot, bucket, min, max, sum, count, last, last_ts)
SELECT layout_id,
       slot,
       date_bin(interval '1 hour', bucket, timestamptz '2000-01-01 00:00:00+00'),
       min(min), max(max), sum(sum), sum(count)::int8,
       (array_agg(last ORDER BY last_ts DESC))[1],
       max(last_ts)
FROM rollup_1m
WHERE bucket >= $1 AND bucket < $2
GROUP BY 1, 2, 3
