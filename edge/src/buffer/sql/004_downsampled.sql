-- Set once a batch's fast measurement groups were thinned to min/max/last
-- per bucket, so the backlog is never thinned twice.
ALTER TABLE batches ADD COLUMN downsampled INTEGER NOT NULL DEFAULT 0;
