//! Time conversion: Unix epoch milliseconds (the wire's and the live
//! frames' unit) to and from `OffsetDateTime` (the database's
//! `timestamptz`), and RFC 3339 text (the API's). Every conversion in the
//! collector goes through here, so they all agree: a millisecond count
//! outside what `OffsetDateTime` holds becomes the Unix epoch, and a time
//! that cannot be formatted becomes an empty string, never a panic.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, in Unix epoch milliseconds.
pub fn unix_ms_now() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// A timestamp in Unix epoch milliseconds.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix epoch milliseconds as a timestamp (the epoch if out of range).
pub fn timestamp(ts_ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A timestamp as RFC 3339 text, e.g. `2026-01-01T00:00:00Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_become_timestamps_and_rfc3339_text() {
        let t = timestamp(1_767_225_600_123);
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00.123Z");
        assert_eq!(timestamp(i64::MAX), OffsetDateTime::UNIX_EPOCH);
    }
}
