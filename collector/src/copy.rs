//! `FrameCopyEncoder`: the PostgreSQL binary COPY format for `frames` rows
//! `(layout_id int4, ts timestamptz, vals float8[], status int2[])`, written
//! straight from decoded readings into a byte buffer. Encoding runs on the
//! blocking pool, off the task that talks to the database, which then only
//! streams bytes.

use bess_protocol::Reading;

use crate::catalog::PointMeta;

/// File header: signature, flags (0), header extension length (0).
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// File trailer: a tuple field count of -1.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

const FLOAT8_OID: i32 = 701;
const INT2_OID: i32 = 21;
/// 2000-01-01T00:00:00Z in Unix milliseconds: PostgreSQL's timestamp epoch.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// The COPY statement the encoded rows are for.
pub const COPY_FRAMES: &str =
    "COPY frames (layout_id, ts, vals, status) FROM STDIN (FORMAT binary)";

/// Appends `frames` tuples to a buffer.
#[derive(Debug, Default)]
pub struct FrameCopyEncoder {
    pub buf: Vec<u8>,
}

impl FrameCopyEncoder {
    /// One frame: engineering values from the points' scale/offset, `NULL`
    /// where missing; the status array only when some value is missing.
    pub fn frame(
        &mut self,
        layout_id: i32,
        ts_ms: i64,
        points: &[PointMeta],
        readings: &[Reading],
    ) {
        let buf = &mut self.buf;
        buf.extend_from_slice(&4i16.to_be_bytes());
        buf.extend_from_slice(&4i32.to_be_bytes());
        buf.extend_from_slice(&layout_id.to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&((ts_ms - PG_EPOCH_MS) * 1000).to_be_bytes());

        let n = readings.len() as i32;
        let missing = readings
            .iter()
            .filter(|r| matches!(r, Reading::Missing(_)))
            .count() as i32;
        // vals float8[]
        if n == 0 {
            buf.extend_from_slice(&12i32.to_be_bytes());
            buf.extend_from_slice(&0i32.to_be_bytes());
            buf.extend_from_slice(&0i32.to_be_bytes());
            buf.extend_from_slice(&FLOAT8_OID.to_be_bytes());
        } else {
            let len = 20 + n * 4 + (n - missing) * 8;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&1i32.to_be_bytes());
            buf.extend_from_slice(&i32::from(missing > 0).to_be_bytes());
            buf.extend_from_slice(&FLOAT8_OID.to_be_bytes());
            buf.extend_from_slice(&n.to_be_bytes());
            buf.extend_from_slice(&1i32.to_be_bytes());
            for (point, reading) in points.iter().zip(readings) {
                match reading.raw() {
                    Some(raw) => {
                        buf.extend_from_slice(&8i32.to_be_bytes());
                        buf.extend_from_slice(&point.engineering(raw).to_be_bytes());
                    }
                    None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        // status int2[] (NULL when every value is good)
        if missing == 0 {
            buf.extend_from_slice(&(-1i32).to_be_bytes());
        } else {
            let len = 20 + n * 6;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&1i32.to_be_bytes());
            buf.extend_from_slice(&0i32.to_be_bytes());
            buf.extend_from_slice(&INT2_OID.to_be_bytes());
            buf.extend_from_slice(&n.to_be_bytes());
            buf.extend_from_slice(&1i32.to_be_bytes());
            for reading in readings {
                buf.extend_from_slice(&2i32.to_be_bytes());
                buf.extend_from_slice(&status_code(reading).to_be_bytes());
            }
        }
    }
}

pub fn status_code(reading: &Reading) -> i16 {
    match reading {
        Reading::Missing(reason) => reason.code() as i16,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bess_protocol::MissingReason;

    fn point(scale: f64) -> PointMeta {
        PointMeta {
            point_id: 1,
            name: "p".into(),
            unit: "".into(),
            scale,
            offset: 0.0,
            flags: Default::default(),
        }
    }

    #[test]
    fn a_good_frame_has_no_status_array() {
        let mut encoder = FrameCopyEncoder::default();
        encoder.frame(7, PG_EPOCH_MS + 1, &[point(0.01)], &[Reading::Int(8460)]);
        let b = &encoder.buf;
        assert_eq!(&b[0..2], &4i16.to_be_bytes());
        assert_eq!(&b[6..10], &7i32.to_be_bytes());
        assert_eq!(&b[14..22], &1000i64.to_be_bytes());
        // vals: length 20 + 4 + 8, one element 84.6
        assert_eq!(&b[22..26], &32i32.to_be_bytes());
        assert_eq!(&b[50..58], &84.6f64.to_be_bytes());
        assert_eq!(&b[58..62], &(-1i32).to_be_bytes());
        assert_eq!(b.len(), 62);
    }

    #[test]
    fn a_missing_value_is_null_with_its_status_code() {
        let mut encoder = FrameCopyEncoder::default();
        let missing = MissingReason::Exception(2);
        encoder.frame(
            1,
            PG_EPOCH_MS,
            &[point(1.0), point(1.0)],
            &[Reading::Float(1.5), Reading::Missing(missing)],
        );
        let b = &encoder.buf;
        // vals: 20 + 2*4 + 1*8 = 36 bytes, has-null flag set
        assert_eq!(&b[22..26], &36i32.to_be_bytes());
        assert_eq!(&b[30..34], &1i32.to_be_bytes());
        let status = &b[26 + 36..];
        assert_eq!(&status[0..4], &32i32.to_be_bytes());
        assert_eq!(
            &status[status.len() - 2..],
            &(missing.code() as i16).to_be_bytes()
        );
    }
}
