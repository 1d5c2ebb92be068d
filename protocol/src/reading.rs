//! One value slot of a frame: a number as read, or the reason it is missing.

use serde::{Deserialize, Serialize};

/// A value as the device gave it, before scaling.
///
/// Integer registers travel as [`Reading::Int`] (the raw register value,
/// sign-extended); floating-point registers as [`Reading::Float`]. The
/// engineering value is `raw * scale + offset` from the point's catalog entry.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reading {
    Int(i64),
    Float(f64),
    Missing(MissingReason),
}

impl Reading {
    pub fn quality(&self) -> Quality {
        match self {
            Reading::Int(_) | Reading::Float(_) => Quality::Good,
            Reading::Missing(reason) => reason.quality(),
        }
    }

    /// The raw number, if there is one.
    pub fn raw(&self) -> Option<f64> {
        match *self {
            Reading::Int(v) => Some(v as f64),
            Reading::Float(v) => Some(v),
            Reading::Missing(_) => None,
        }
    }
}

/// How far a value can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Quality {
    /// Read from the device in this cycle.
    Good,
    /// The device answered, but not with a usable value (a Modbus exception,
    /// a "not implemented" marker).
    Stale,
    /// The device did not answer (timeout, no connection).
    CommLoss,
}

impl Quality {
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Stale => "stale",
            Quality::CommLoss => "comm-loss",
        }
    }
}

/// Why a slot holds no value. Travels on the wire as a `u16` status code
/// (`SPEC.md`, "Status codes"); 0 is reserved for "good".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
pub enum MissingReason {
    /// The register held the device's "not implemented" marker.
    NotImplemented,
    /// The request timed out.
    Timeout,
    /// There was no connection to the device.
    Disconnected,
    /// The device answered with this Modbus exception code.
    Exception(u8),
}

impl MissingReason {
    pub const fn quality(self) -> Quality {
        match self {
            MissingReason::NotImplemented | MissingReason::Exception(_) => Quality::Stale,
            MissingReason::Timeout | MissingReason::Disconnected => Quality::CommLoss,
        }
    }

    /// The wire status code (never 0).
    pub const fn code(self) -> u16 {
        match self {
            MissingReason::NotImplemented => 1,
            MissingReason::Timeout => 2,
            MissingReason::Disconnected => 3,
            MissingReason::Exception(code) => 0x0100 | code as u16,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(MissingReason::NotImplemented),
            2 => Some(MissingReason::Timeout),
            3 => Some(MissingReason::Disconnected),
            0x0100..=0x01ff => Some(MissingReason::Exception((code & 0xff) as u8)),
            _ => None,
        }
    }

    pub fn describe(self) -> String {
        match self {
            MissingReason::NotImplemented => "not implemented".into(),
            MissingReason::Timeout => "timeout".into(),
            MissingReason::Disconnected => "disconnected".into(),
            MissingReason::Exception(code) => format!("modbus exception {code:#04x}"),
        }
    }
}

impl From<MissingReason> for u16 {
    fn from(reason: MissingReason) -> Self {
        reason.code()
    }
}

impl TryFrom<u16> for MissingReason {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, Self::Error> {
        MissingReason::from_code(code).ok_or_else(|| format!("unknown status code {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        for reason in [
            MissingReason::NotImplemented,
            MissingReason::Timeout,
            MissingReason::Disconnected,
            MissingReason::Exception(2),
            MissingReason::Exception(0xff),
        ] {
            assert_eq!(MissingReason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(MissingReason::from_code(0), None);
        assert_eq!(MissingReason::from_code(4), None);
    }

    #[test]
    fn exceptions_are_stale_and_timeouts_are_comm_loss() {
        assert_eq!(
            Reading::Missing(MissingReason::Exception(2)).quality(),
            Quality::Stale
        );
        assert_eq!(
            Reading::Missing(MissingReason::Timeout).quality(),
            Quality::CommLoss
        );
        assert_eq!(Reading::Int(3).quality(), Quality::Good);
    }
}
