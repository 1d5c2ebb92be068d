//! Where a device is and how it is talked to: the connection or serial bus
//! (`Endpoint`, with its `SerialSettings`) and the per-device request
//! settings (`LinkPlan`: unit id, timeout, retries, pause). Devices whose
//! endpoints are equal share one connection or bus, one request at a time,
//! so `Endpoint` is `Eq + Hash` and compares every serial setting.
//!
//! `Parity` is also what the config file says (`parity = "even"`), hence its
//! `Deserialize`: the schema borrows it from here, as it borrows register
//! types from `register`, so the plan never depends on the schema.

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Parity of an RTU serial line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// Serial line settings of an RTU bus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SerialSettings {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

/// One connection or bus. Devices with equal endpoints share it, one
/// request at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    RtuOverTcp { host: String, port: u16 },
    Rtu(SerialSettings),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::RtuOverTcp { host, port } => write!(f, "rtu+tcp://{host}:{port}"),
            Endpoint::Rtu(s) => {
                let parity = match s.parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                };
                write!(
                    f,
                    "rtu:{} {} {}{}{}",
                    s.path, s.baud, s.data_bits, parity, s.stop_bits
                )
            }
        }
    }
}

/// How the poller talks to one device.
#[derive(Debug, Clone)]
pub struct LinkPlan {
    pub endpoint: Endpoint,
    pub unit: u8,
    pub timeout: Duration,
    pub retries: u8,
    pub pause: Duration,
    pub release_after_cycle: bool,
}
