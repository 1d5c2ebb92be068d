-- The content class of each batch (BatchContent), for the drop order under
-- the disk cap: 0 measurements, 1 mixed, 2 events, 3 catalog carrier.
-- Batches sealed before this column existed count as mixed.
ALTER TABLE batches ADD COLUMN content INTEGER NOT NULL DEFAULT 1;
