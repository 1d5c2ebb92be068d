-- Gap records waiting to travel in the next sealed batch.
CREATE TABLE IF NOT EXISTS pending_gaps (
    id          INTEGER PRIMARY KEY,
    device      INTEGER NOT NULL,   -- catalog device index; 65535 = the whole site
    first_ts_ms INTEGER NOT NULL,
    last_ts_ms  INTEGER NOT NULL,
    samples     INTEGER NOT NULL,
    reason      INTEGER NOT NULL    -- GapReason::code(): 0 disk cap, 1 buffer corrupt, 2 downsampled
) STRICT;

-- Catalogs the buffered batches were written against, so dropped batches
-- can be reported per device.
CREATE TABLE IF NOT EXISTS catalogs (
    hash INTEGER PRIMARY KEY,
    body BLOB NOT NULL                -- postcard-encoded catalog
) STRICT;
