//! `ByteSize`: a size in the config file, written as bytes (`4096`), with a
//! decimal or binary unit (`"500MB"`, `"2GiB"`), or `"none"` for no limit.
//! Parsing refuses unknown units and sizes that overflow `u64`.

use serde::Deserialize;

/// A size in bytes, written as a number or as "512MiB", "2GB", "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub Option<u64>);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(ByteSize(None));
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size like \"512MiB\""))?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" => 1 << 10,
            "mb" => 1_000_000,
            "mib" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, kB, KiB, MB, MiB, GB, GiB)"
                ))
            }
        };
        number
            .checked_mul(factor)
            .map(|b| ByteSize(Some(b)))
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(n) => Ok(ByteSize(Some(n))),
            Raw::Text(t) => ByteSize::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units_or_none() {
        assert_eq!(ByteSize::parse("512MiB"), Ok(ByteSize(Some(512 << 20))));
        assert_eq!(ByteSize::parse("2GB"), Ok(ByteSize(Some(2_000_000_000))));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(Some(4096))));
        assert_eq!(ByteSize::parse("none"), Ok(ByteSize(None)));
        assert!(ByteSize::parse("12 parsecs").is_err());
    }
}
