//! The bodies `GET /api/v1/series` answers with, written straight from the
//! stored columns into bytes: JSON rows (the default, one object per
//! sample), JSON columns (one array per field, epoch-millisecond
//! timestamps: what charting libraries such as uPlot take as they are), and
//! CSV.
//!
//! A day of one point at 1 s is 86 400 samples; building a `serde_json::Value`
//! per sample and formatting each timestamp through a general formatter cost
//! most of such a request. Here each sample is a few appends to one buffer:
//! timestamps by [`write_rfc3339`], numbers and strings by serde_json's own
//! writers (so values and escaping are exactly what serde_json gives).

use serde::Serialize;

use bess_protocol::MissingReason;

use crate::series::{RawColumns, RollupColumns};

/// The body formats of a series answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesFormat {
    /// `application/json`: `samples: [{ts, value, quality?}]` (rollups:
    /// `{ts, value, min, max, avg, last, count}`).
    Rows,
    /// `application/json`: `ts_ms: [...]`, `value: [...]`, ... one array per
    /// field.
    Columns,
    /// `text/csv`: a header line, then one line per sample and point.
    Csv,
}

impl SeriesFormat {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "json" | "rows" => Some(SeriesFormat::Rows),
            "columns" => Some(SeriesFormat::Columns),
            "csv" => Some(SeriesFormat::Csv),
            _ => None,
        }
    }

    /// The format an `Accept` header asks for, if it names one of ours.
    pub fn from_accept(accept: &str) -> Option<Self> {
        accept
            .split(',')
            .find_map(|part| match part.split(';').next().unwrap_or("").trim() {
                "text/csv" => Some(SeriesFormat::Csv),
                "application/vnd.bess.series-columns+json" => Some(SeriesFormat::Columns),
                _ => None,
            })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            SeriesFormat::Rows | SeriesFormat::Columns => "application/json",
            SeriesFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// The samples of one series, as read.
pub enum SeriesData {
    Raw(RawColumns),
    Rollup(RollupColumns),
}

impl SeriesData {
    pub fn len(&self) -> usize {
        match self {
            SeriesData::Raw(raw) => raw.len(),
            SeriesData::Rollup(rollup) => rollup.len(),
        }
    }
}

/// One series of an answer.
pub struct RenderedSeries<'a> {
    pub point: &'a str,
    pub unit: &'a str,
    /// There were more samples than the answer holds.
    pub truncated: bool,
    pub data: SeriesData,
}

/// What every answer states besides its series.
pub struct Envelope<'a> {
    pub resolution: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The whole body: one series keeps the flat shape (`point`, `unit`, ...,
/// `samples`); several come as `{resolution, from, to, series: [...]}`.
pub fn render(
    format: SeriesFormat,
    envelope: &Envelope<'_>,
    series: &[RenderedSeries<'_>],
) -> Vec<u8> {
    let samples: usize = series.iter().map(|s| s.data.len()).sum();
    let mut out = Vec::with_capacity(256 + samples * 40);
    match format {
        SeriesFormat::Csv => csv(&mut out, series),
        SeriesFormat::Rows | SeriesFormat::Columns => {
            let columns = format == SeriesFormat::Columns;
            if let [one] = series {
                out.push(b'{');
                envelope_fields(&mut out, envelope);
                out.push(b',');
                series_fields(&mut out, one, columns);
                out.push(b'}');
            } else {
                out.push(b'{');
                envelope_fields(&mut out, envelope);
                out.extend_from_slice(b",\"series\":[");
                for (i, one) in series.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.push(b'{');
                    series_fields(&mut out, one, columns);
                    out.push(b'}');
                }
                out.extend_from_slice(b"]}");
            }
        }
    }
    out
}

/// Appends `value` as JSON (serde_json's own number and string writers;
/// a non-finite float becomes `null`, as serde_json writes it).
fn json(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(&mut *out, value).expect("writing JSON into memory cannot fail");
}

fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

fn quoted_time(out: &mut Vec<u8>, unix_ms: i64) {
    out.push(b'"');
    write_rfc3339(out, unix_ms);
    out.push(b'"');
}

fn envelope_fields(out: &mut Vec<u8>, envelope: &Envelope<'_>) {
    key(out, "resolution");
    json(out, &envelope.resolution);
    out.push(b',');
    key(out, "from");
    quoted_time(out, envelope.from_ms);
    out.push(b',');
    key(out, "to");
    quoted_time(out, envelope.to_ms);
}

fn quality(status: Option<i16>) -> Option<&'static str> {
    status
        .filter(|s| *s != 0)
        .and_then(|s| MissingReason::from_code(s as u16))
        .map(|reason| reason.quality().as_str())
}

fn series_fields(out: &mut Vec<u8>, series: &RenderedSeries<'_>, columns: bool) {
    key(out, "point");
    json(out, &series.point);
    out.push(b',');
    key(out, "unit");
    json(out, &series.unit);
    out.push(b',');
    key(out, "count");
    json(out, &series.data.len());
    out.push(b',');
    key(out, "truncated");
    json(out, &series.truncated);
    out.push(b',');
    match (&series.data, columns) {
        (SeriesData::Raw(raw), false) => raw_rows(out, raw),
        (SeriesData::Raw(raw), true) => raw_columns(out, raw),
        (SeriesData::Rollup(rollup), false) => rollup_rows(out, rollup),
        (SeriesData::Rollup(rollup), true) => rollup_columns(out, rollup),
    }
}

fn raw_rows(out: &mut Vec<u8>, raw: &RawColumns) {
    key(out, "samples");
    out.push(b'[');
    for i in 0..raw.len() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"ts\":");
        quoted_time(out, raw.ts_ms[i]);
        out.extend_from_slice(b",\"value\":");
        json(out, &raw.value[i]);
        if let Some(quality) = quality(raw.status[i]) {
            out.extend_from_slice(b",\"quality\":");
            json(out, &quality);
        }
        out.push(b'}');
    }
    out.push(b']');
}

fn array<T>(out: &mut Vec<u8>, name: &str, items: &[T], mut write: impl FnMut(&mut Vec<u8>, &T)) {
    key(out, name);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(out, item);
    }
    out.push(b']');
}

fn raw_columns(out: &mut Vec<u8>, raw: &RawColumns) {
    array(out, "ts_ms", &raw.ts_ms, json);
    out.push(b',');
    array(out, "value", &raw.value, json);
    // Only when some sample is not good: a day of good values stays small.
    if raw.status.iter().any(|s| quality(*s).is_some()) {
        out.push(b',');
        array(out, "quality", &raw.status, |out, s| {
            json(out, &quality(*s))
        });
    }
}

fn rollup_rows(out: &mut Vec<u8>, r: &RollupColumns) {
    key(out, "samples");
    out.push(b'[');
    for i in 0..r.len() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"ts\":");
        quoted_time(out, r.bucket_ms[i]);
        // `value` is the average, so a chart can plot `value` at any resolution.
        for (name, value) in [
            ("value", r.avg[i]),
            ("min", r.min[i]),
            ("max", r.max[i]),
            ("avg", r.avg[i]),
            ("last", r.last[i]),
        ] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            json(out, &value);
        }
        out.extend_from_slice(b",\"count\":");
        json(out, &r.count[i]);
        out.push(b'}');
    }
    out.push(b']');
}

fn rollup_columns(out: &mut Vec<u8>, r: &RollupColumns) {
    array(out, "ts_ms", &r.bucket_ms, json);
    for (name, values) in [
        ("value", &r.avg),
        ("min", &r.min),
        ("max", &r.max),
        ("avg", &r.avg),
        ("last", &r.last),
    ] {
        out.push(b',');
        array(out, name, values, json);
    }
    out.push(b',');
    array(out, "count", &r.count, json);
}

/// A CSV field: quoted (quotes doubled) only where it must be.
fn csv_text(out: &mut Vec<u8>, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// A number as CSV: as in JSON, and empty where JSON has `null`.
fn csv_number(out: &mut Vec<u8>, value: Option<f64>) {
    if let Some(v) = value.filter(|v| v.is_finite()) {
        json(out, &v);
    }
}

fn csv(out: &mut Vec<u8>, series: &[RenderedSeries<'_>]) {
    let rollup = matches!(series.first().map(|s| &s.data), Some(SeriesData::Rollup(_)));
    out.extend_from_slice(if rollup {
        b"point,ts,value,min,max,avg,last,count\n".as_slice()
    } else {
        b"point,ts,value,quality\n".as_slice()
    });
    for one in series {
        match &one.data {
            SeriesData::Raw(raw) => {
                for i in 0..raw.len() {
                    csv_text(out, one.point);
                    out.push(b',');
                    write_rfc3339(out, raw.ts_ms[i]);
                    out.push(b',');
                    csv_number(out, raw.value[i]);
                    out.push(b',');
                    if let Some(quality) = quality(raw.status[i]) {
                        out.extend_from_slice(quality.as_bytes());
                    }
                    out.push(b'\n');
                }
            }
            SeriesData::Rollup(r) => {
                for i in 0..r.len() {
                    csv_text(out, one.point);
                    out.push(b',');
                    write_rfc3339(out, r.bucket_ms[i]);
                    for value in [r.avg[i], r.min[i], r.max[i], r.avg[i], r.last[i]] {
                        out.push(b',');
                        csv_number(out, Some(value));
                    }
                    out.push(b',');
                    json(out, &r.count[i]);
                    out.push(b'\n');
                }
            }
        }
    }
}

/// Appends a Unix-millisecond time as RFC 3339 in UTC, exactly as the `time`
/// crate's `Rfc3339` writes it: `2026-11-25T20:10:25.07Z` (fraction without
/// trailing zeros, none when whole). Years 0–9999.
pub fn write_rfc3339(out: &mut Vec<u8>, unix_ms: i64) {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (secs, ms) = (ms_of_day / 1000, ms_of_day % 1000);
    let two = |out: &mut Vec<u8>, n: i64| {
        out.push(b'0' + (n / 10) as u8);
        out.push(b'0' + (n % 10) as u8);
    };
    let year = year.clamp(0, 9999);
    two(out, year / 100);
    two(out, year % 100);
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, secs / 3600);
    out.push(b':');
    two(out, secs / 60 % 60);
    out.push(b':');
    two(out, secs % 60);
    if ms != 0 {
        out.push(b'.');
        let digits = [ms / 100, ms / 10 % 10, ms % 10];
        let keep = if ms % 100 == 0 {
            1
        } else if ms % 10 == 0 {
            2
        } else {
            3
        };
        out.extend(digits[..keep].iter().map(|d| b'0' + *d as u8));
    }
    out.push(b'Z');
}

/// Year, month (1–12) and day (1–31) of a count of days since 1970-01-01
/// in the proleptic Gregorian calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    fn by_time_crate(unix_ms: i64) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    }

    fn ours(unix_ms: i64) -> String {
        let mut out = Vec::new();
        write_rfc3339(&mut out, unix_ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_read_exactly_as_the_time_crate_writes_them() {
        let mut t: i64 = -62_135_596_800_000; // 0001-01-01
        let mut samples = vec![
            0,
            1,
            10,
            100,
            120,
            999,
            1000,
            951_782_400_000,
            4_102_444_799_999,
        ];
        // A walk over four centuries with awkward steps (leap days, month ends).
        while t < 253_402_300_799_000 {
            samples.push(t);
            t += 3_911_117_013;
        }
        for ms in samples {
            assert_eq!(ours(ms), by_time_crate(ms), "{ms}");
        }
    }

    fn raw() -> RawColumns {
        RawColumns {
            ts_ms: vec![1_795_637_425_070, 1_795_637_426_070],
            value: vec![Some(84.6), None],
            status: vec![None, Some(MissingReason::Timeout.code() as i16)],
        }
    }

    fn envelope() -> Envelope<'static> {
        Envelope {
            resolution: "raw",
            from_ms: 0,
            to_ms: 1000,
        }
    }

    fn one(data: SeriesData) -> Vec<RenderedSeries<'static>> {
        vec![RenderedSeries {
            point: "s/d/soc",
            unit: "%",
            truncated: false,
            data,
        }]
    }

    #[test]
    fn json_rows_keep_the_shape_clients_already_read() {
        let body = render(
            SeriesFormat::Rows,
            &envelope(),
            &one(SeriesData::Raw(raw())),
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "point": "s/d/soc", "unit": "%", "count": 2, "truncated": false,
                "resolution": "raw", "from": "1970-01-01T00:00:00Z", "to": "1970-01-01T00:00:01Z",
                "samples": [
                    {"ts": "2026-11-25T20:10:25.07Z", "value": 84.6},
                    {"ts": "2026-11-25T20:10:26.07Z", "value": null, "quality": "comm-loss"},
                ],
            })
        );
    }

    #[test]
    fn json_columns_hold_one_array_per_field_and_quality_only_when_needed() {
        let body = render(
            SeriesFormat::Columns,
            &envelope(),
            &one(SeriesData::Raw(raw())),
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value["ts_ms"],
            serde_json::json!([1_795_637_425_070_i64, 1_795_637_426_070_i64])
        );
        assert_eq!(value["value"], serde_json::json!([84.6, null]));
        assert_eq!(value["quality"], serde_json::json!([null, "comm-loss"]));
        let mut good = raw();
        good.status = vec![None, Some(0)];
        let body = render(
            SeriesFormat::Columns,
            &envelope(),
            &one(SeriesData::Raw(good)),
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(value.get("quality").is_none(), "{value}");
    }

    #[test]
    fn rollups_render_the_same_numbers_in_every_format() {
        let rollup = RollupColumns {
            bucket_ms: vec![60_000],
            min: vec![1.0],
            max: vec![3.0],
            avg: vec![2.0],
            last: vec![3.0],
            count: vec![3],
        };
        let envelope = Envelope {
            resolution: "1m",
            from_ms: 0,
            to_ms: 120_000,
        };
        let rows = render(
            SeriesFormat::Rows,
            &envelope,
            &one(SeriesData::Rollup(rollup.clone())),
        );
        let rows: serde_json::Value = serde_json::from_slice(&rows).unwrap();
        assert_eq!(
            rows["samples"][0],
            serde_json::json!({"ts": "1970-01-01T00:01:00Z", "value": 2.0, "min": 1.0, "max": 3.0, "avg": 2.0, "last": 3.0, "count": 3})
        );
        let columns = render(
            SeriesFormat::Columns,
            &envelope,
            &one(SeriesData::Rollup(rollup.clone())),
        );
        let columns: serde_json::Value = serde_json::from_slice(&columns).unwrap();
        assert_eq!(columns["max"], serde_json::json!([3.0]));
        assert_eq!(columns["count"], serde_json::json!([3]));
        let csv = render(
            SeriesFormat::Csv,
            &envelope,
            &one(SeriesData::Rollup(rollup)),
        );
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "point,ts,value,min,max,avg,last,count\ns/d/soc,1970-01-01T00:01:00Z,2.0,1.0,3.0,2.0,3.0,3\n"
        );
    }

    #[test]
    fn csv_leaves_missing_values_empty_and_quotes_only_what_needs_it() {
        let mut series = one(SeriesData::Raw(raw()));
        series[0].point = "s/d/a,b";
        let csv = String::from_utf8(render(SeriesFormat::Csv, &envelope(), &series)).unwrap();
        assert_eq!(
            csv,
            "point,ts,value,quality\n\"s/d/a,b\",2026-11-25T20:10:25.07Z,84.6,\n\"s/d/a,b\",2026-11-25T20:10:26.07Z,,comm-loss\n"
        );
    }

    #[test]
    fn several_series_come_as_an_array_beside_the_shared_fields() {
        let series = vec![
            RenderedSeries {
                point: "s/d/a",
                unit: "V",
                truncated: true,
                data: SeriesData::Raw(raw()),
            },
            RenderedSeries {
                point: "s/d/b",
                unit: "A",
                truncated: false,
                data: SeriesData::Raw(RawColumns::default()),
            },
        ];
        let body = render(SeriesFormat::Rows, &envelope(), &series);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["resolution"], "raw");
        assert_eq!(value["series"][0]["truncated"], true);
        assert_eq!(value["series"][1]["samples"], serde_json::json!([]));
        assert!(value.get("point").is_none());
    }

    #[test]
    fn accept_headers_choose_csv_or_columns_and_leave_the_rest_to_the_default() {
        assert_eq!(
            SeriesFormat::from_accept("text/csv"),
            Some(SeriesFormat::Csv)
        );
        assert_eq!(
            SeriesFormat::from_accept("application/vnd.bess.series-columns+json, */*;q=0.1"),
            Some(SeriesFormat::Columns)
        );
        assert_eq!(SeriesFormat::from_accept("application/json, */*"), None);
    }
}
