//! `FrameRecorder`: an optional audit trail of every sealed frame as JSON
//! lines (`bess-edge run --record FILE`). Field engineers use it to see
//! exactly what was read; the end-to-end tests use it to count samples.

use serde_json::json;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use bess_protocol::{Batch, Catalog, Reading};

pub struct FrameRecorder {
    out: BufWriter<File>,
}

impl FrameRecorder {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            out: BufWriter::new(file),
        })
    }

    /// One line per frame: seq, device, group, ts_ms and each point's raw
    /// value (null when missing) with its quality.
    pub fn record(&mut self, batch: &Batch, catalog: &Catalog) {
        for frame in &batch.frames {
            let group = &catalog.groups[usize::from(frame.group.0)];
            let device = &catalog.devices[usize::from(group.device)].name;
            let values: Vec<_> = group
                .points
                .iter()
                .zip(&frame.values)
                .map(|(point, reading)| {
                    let raw = match reading {
                        Reading::Int(v) => json!(v),
                        Reading::Float(v) => json!(v),
                        Reading::Missing(_) => serde_json::Value::Null,
                    };
                    json!({ "point": point.name, "raw": raw, "value": reading.raw().map(|r| point.engineering(r)), "quality": reading.quality().as_str() })
                })
                .collect();
            let line = json!({ "seq": batch.seq.0, "device": device, "group": group.name, "ts_ms": frame.ts_ms, "values": values });
            let _ = writeln!(self.out, "{line}");
        }
        if let Err(e) = self.out.flush() {
            tracing::warn!("frame recorder: {e}");
        }
    }
}
