//! Config texts the config tests start from: the shipped example file and a
//! one-device file to vary.

use super::{ConfigProblem, ValidConfig};

pub(crate) const EXAMPLE: &str = include_str!("../../bess-edge.example.toml");

pub(crate) fn device_problems(device: &str) -> Vec<ConfigProblem> {
    let text = format!(
        "site_id = \"s\"\n[kafka]\nbrokers = \"b:9092\"\n[[devices]]\nname = \"d\"\n{device}\n"
    );
    ValidConfig::parse(&text).err().unwrap_or_default()
}
