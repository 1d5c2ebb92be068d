-- Store-and-forward buffer of sealed batches.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS batches (
    seq          INTEGER PRIMARY KEY,   -- batch sequence, assigned at seal
    sealed_at_ms INTEGER NOT NULL,
    frames       INTEGER NOT NULL,
    samples      INTEGER NOT NULL,
    first_ts_ms  INTEGER,
    last_ts_ms   INTEGER,
    payload      BLOB NOT NULL          -- the encoded batch, exactly as sent
) STRICT;
