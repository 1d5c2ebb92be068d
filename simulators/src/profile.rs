//! Device profiles: which register map a simulated unit serves. The pack
//! model is the same; only the encoding differs.

use std::{fmt, str::FromStr};

use crate::{
    battery::{Measurements, PackSpec},
    register_map::{RegisterSnapshot, MAP_NAME},
    sunspec,
};

/// The register map a site's units serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// The project's own "bess-controller v1" map (`REGISTERS.md`).
    #[default]
    BessController,
    /// A SunSpec device (models 1, 103, 124, 802) from `base`.
    SunSpec { base: u16 },
}

impl Profile {
    /// Encodes one unit's measurements.
    pub fn encode(&self, unit: u8, spec: &PackSpec, m: &Measurements) -> RegisterSnapshot {
        match self {
            Self::BessController => RegisterSnapshot::encode(spec, m),
            Self::SunSpec { base } => sunspec::encode(*base, unit, spec, m),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BessController => f.write_str(MAP_NAME),
            Self::SunSpec { base } => write!(f, "SunSpec at {base}"),
        }
    }
}

/// Error for a profile name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile `{0}`, expected `bess-controller` or `sunspec`")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    /// `bess-controller` or `sunspec` (base 40000).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bess-controller" => Ok(Self::BessController),
            "sunspec" => Ok(Self::SunSpec {
                base: sunspec::DEFAULT_BASE,
            }),
            other => Err(UnknownProfile(other.to_owned())),
        }
    }
}
