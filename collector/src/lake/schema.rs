//! The lake's file format: the Arrow schema of a samples file, the rows of
//! one site-hour in their deterministic order, and their encoding as one
//! Parquet file (zstd, dictionary-encoded names, one row group up to ~1 M
//! rows).
//!
//! Columns (the partition columns `site`, `date` and `hour` come from the
//! object's path, Hive style, and are not repeated inside the file):
//!
//! | column  | Parquet type                               | meaning |
//! |---------|--------------------------------------------|---------|
//! | device  | BYTE_ARRAY (UTF8), dictionary              | device name from the site's catalog |
//! | point   | BYTE_ARRAY (UTF8), dictionary              | point name |
//! | unit    | BYTE_ARRAY (UTF8), dictionary, nullable    | engineering unit; null when the catalog gives none |
//! | ts      | INT64 TIMESTAMP(MILLIS, isAdjustedToUTC)   | sample time, UTC |
//! | value   | DOUBLE, nullable                           | engineering value; null when the reading was missing |
//! | quality | BYTE_ARRAY (UTF8), dictionary              | `good`, `stale` or `comm-loss` |
//! | status  | INT32 (INT(16))                            | wire status code: 0 good, 1 not implemented, 2 timeout, 3 disconnected, 0x100 + code a Modbus exception |
//!
//! Rows are ordered by (device, point, ts) and, for the rare sample stored
//! twice under two catalog versions, by layout and slot. The same stored
//! rows therefore always give the same bytes.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int16Array, RecordBatch, StringArray};
use arrow_array::{TimestampMillisecondArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use bess_protocol::MissingReason;

/// Rows per row group; a site-hour at the simulator's rates (~160 000
/// samples) is one row group.
pub const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// zstd level: 3 is zstd's default, most of the ratio at a fraction of the
/// CPU of the high levels.
const ZSTD_LEVEL: i32 = 3;

/// One stored sample, as the exporter reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRow {
    /// Index into [`SliceRows::series`].
    pub series: u32,
    pub ts_ms: i64,
    /// Tie-breakers for a sample stored under two catalog versions.
    pub layout_id: i32,
    pub slot: i32,
    pub value: Option<f64>,
    /// 0 when good, otherwise the wire status code.
    pub status: i16,
}

/// A (device, point) of the site.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub device: String,
    pub point: String,
    pub unit: Option<String>,
}

/// Every sample of one site-hour.
#[derive(Debug, Clone, Default)]
pub struct SliceRows {
    pub series: Vec<Series>,
    pub rows: Vec<SampleRow>,
}

impl SliceRows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Put the rows in file order: (device, point, ts, layout, slot).
    pub fn sort(&mut self) {
        let mut order: Vec<u32> = (0..self.series.len() as u32).collect();
        order.sort_by(|a, b| self.series[*a as usize].cmp(&self.series[*b as usize]));
        let mut rank = vec![0u32; self.series.len()];
        for (r, s) in order.iter().enumerate() {
            rank[*s as usize] = r as u32;
        }
        self.rows
            .sort_unstable_by_key(|r| (rank[r.series as usize], r.ts_ms, r.layout_id, r.slot));
    }
}

/// The Arrow schema of a samples file.
pub fn samples_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("point", DataType::Utf8, false),
        Field::new("unit", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("value", DataType::Float64, true),
        Field::new("quality", DataType::Utf8, false),
        Field::new("status", DataType::Int16, false),
    ]))
}

/// The quality name of a stored status code (0: good).
pub fn quality_name(status: i16) -> &'static str {
    if status == 0 {
        return "good";
    }
    match MissingReason::from_code(status as u16) {
        Some(reason) => reason.quality().as_str(),
        // Not a code the writer stores; kept visible rather than guessed.
        None => "unknown",
    }
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_dictionary_enabled(true)
        .build()
}

/// Encode sorted rows as one Parquet file. CPU only: run it on the blocking pool.
pub fn encode(rows: &SliceRows) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    let schema = samples_schema();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema.clone(), Some(writer_properties()))?;
    for chunk in rows.rows.chunks(ROW_GROUP_ROWS) {
        writer.write(&record_batch(&schema, &rows.series, chunk)?)?;
    }
    writer.close()?;
    Ok(out)
}

fn record_batch(
    schema: &SchemaRef,
    series: &[Series],
    rows: &[SampleRow],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    // Names through a dictionary-take would save copies; plain strings keep
    // the file's logical type a plain UTF8 column every engine reads.
    let index = UInt32Array::from_iter_values(rows.iter().map(|r| r.series));
    let names = |pick: fn(&Series) -> Option<&str>| -> ArrayRef {
        let values: StringArray = index
            .values()
            .iter()
            .map(|i| pick(&series[*i as usize]))
            .collect();
        Arc::new(values)
    };
    let columns: Vec<ArrayRef> = vec![
        names(|s| Some(s.device.as_str())),
        names(|s| Some(s.point.as_str())),
        names(|s| s.unit.as_deref()),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.ts_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.value))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| quality_name(r.status)),
        )),
        Arc::new(Int16Array::from_iter_values(rows.iter().map(|r| r.status))),
    ];
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> SliceRows {
        let series = vec![
            Series {
                device: "bms-2".into(),
                point: "soc".into(),
                unit: Some("%".into()),
            },
            Series {
                device: "bms-1".into(),
                point: "status".into(),
                unit: None,
            },
        ];
        let row = |series, ts_ms, value, status| SampleRow {
            series,
            ts_ms,
            layout_id: 1,
            slot: 1,
            value,
            status,
        };
        SliceRows {
            series,
            rows: vec![
                row(0, 2_000, Some(50.5), 0),
                row(1, 2_000, None, 2),
                row(0, 1_000, Some(50.0), 0),
            ],
        }
    }

    #[test]
    fn rows_sort_by_device_point_and_time() {
        let mut slice = rows();
        slice.sort();
        let order: Vec<(u32, i64)> = slice.rows.iter().map(|r| (r.series, r.ts_ms)).collect();
        assert_eq!(order, vec![(1, 2_000), (0, 1_000), (0, 2_000)]);
    }

    #[test]
    fn the_same_rows_encode_to_the_same_bytes() {
        let mut slice = rows();
        slice.sort();
        let a = encode(&slice).unwrap();
        let b = encode(&slice).unwrap();
        assert_eq!(a, b);
        assert_eq!(&a[..4], b"PAR1");
    }

    #[test]
    fn status_codes_map_to_quality_names() {
        assert_eq!(quality_name(0), "good");
        assert_eq!(quality_name(1), "stale");
        assert_eq!(quality_name(2), "comm-loss");
        assert_eq!(quality_name(3), "comm-loss");
        assert_eq!(quality_name(0x102), "stale");
        assert_eq!(quality_name(77), "unknown");
    }
}
