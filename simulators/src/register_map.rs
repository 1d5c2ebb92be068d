//! The "bess-controller v1" register map: which address holds which value,
//! how engineering values become 16-bit words (scaled, multi-word values high
//! word first), and which reads the map accepts.
//!
//! The same words are served as holding registers (FC03) and input registers
//! (FC04); engineering value = raw × scale. `REGISTERS.md` documents the same
//! table for operators.
//!
//! | addr   | name              | type     | scale | unit |
//! |--------|-------------------|----------|-------|------|
//! | 0      | soc               | u16      | 0.01  | %    |
//! | 1      | soh               | u16      | 0.01  | %    |
//! | 2      | dc_voltage        | u16      | 0.1   | V    |
//! | 3      | dc_current        | i16      | 0.1   | A (+ = discharge) |
//! | 4–5    | active_power      | i32      | 1     | W (+ = discharge) |
//! | 6, 7   | cell_voltage_min, _max | u16 | 0.001 | V    |
//! | 8, 9   | cell_temp_min, _max    | i16 | 0.1   | °C   |
//! | 10     | status            | bits     |       | [`StatusFlags`](crate::battery::StatusFlags) |
//! | 11     | alarms            | bits     |       | [`AlarmFlags`](crate::battery::AlarmFlags) |
//! | 12–13  | energy_charged    | u32      | 0.1   | kWh  |
//! | 14–15  | energy_discharged | u32      | 0.1   | kWh  |
//! | 16     | ambient_temp      | i16      | 0.1   | °C   |
//! | 17     | heartbeat         | u16      | 1     | s, wraps |
//! | 100    | rated_capacity    | u16      | 0.1   | kWh  |
//! | 101    | rated_power       | u16      | 0.1   | kW   |
//! | 102    | cells_in_series   | u16      | 1     |      |
//! | 103    | firmware_version  | u16      | 1     | e.g. 0x0102 |
//! | 104    | temp_sensors      | u16      | 1     | modules, one sensor each |
//! | 200+i  | cell_voltage[i]   | u16      | 0.001 | V, i < cells_in_series |
//! | 500+j  | module_temp[j]    | i16      | 0.1   | °C, j < temp_sensors |
//!
//! A read must lie wholly inside one mapped block (else
//! IllegalDataAddress) and ask for 1..=125 words (else IllegalDataValue).
//! [`RegisterSnapshot`] itself is profile-neutral: a list of blocks, also
//! used by the SunSpec profile ([`crate::sunspec`]).

use thiserror::Error;
use tokio_modbus::ExceptionCode;

use crate::battery::{Measurements, PackSpec};

/// Name and version of this map, as operators refer to it.
pub const MAP_NAME: &str = "bess-controller v1";
/// Largest quantity a single read may ask for (Modbus limit for FC03/FC04).
pub const MAX_READ_QUANTITY: u16 = 125;

const NAMEPLATE_START: u16 = 100;
const CELLS_START: u16 = 200;
const MODULE_TEMPS_START: u16 = 500;

/// Register addresses of the map.
pub mod addr {
    pub const SOC: u16 = 0;
    pub const SOH: u16 = 1;
    pub const DC_VOLTAGE: u16 = 2;
    pub const DC_CURRENT: u16 = 3;
    pub const ACTIVE_POWER: u16 = 4;
    pub const CELL_VOLTAGE_MIN: u16 = 6;
    pub const CELL_VOLTAGE_MAX: u16 = 7;
    pub const CELL_TEMP_MIN: u16 = 8;
    pub const CELL_TEMP_MAX: u16 = 9;
    pub const STATUS: u16 = 10;
    pub const ALARMS: u16 = 11;
    pub const ENERGY_CHARGED: u16 = 12;
    pub const ENERGY_DISCHARGED: u16 = 14;
    pub const AMBIENT_TEMP: u16 = 16;
    pub const HEARTBEAT: u16 = 17;
    pub const RATED_CAPACITY: u16 = 100;
    pub const RATED_POWER: u16 = 101;
    pub const CELLS_IN_SERIES: u16 = 102;
    pub const FIRMWARE_VERSION: u16 = 103;
    pub const TEMP_SENSORS: u16 = 104;
    /// First per-cell voltage; cell i at `CELL_VOLTAGES + i`.
    pub const CELL_VOLTAGES: u16 = 200;
    /// First per-module temperature; module j at `MODULE_TEMPS + j`.
    pub const MODULE_TEMPS: u16 = 500;
}

/// Why a read was refused; each maps to the Modbus exception it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReadError {
    #[error("quantity {0} is outside 1..={MAX_READ_QUANTITY}")]
    IllegalQuantity(u16),
    #[error("registers {start}..{end} are not all mapped")]
    IllegalAddress { start: u16, end: u32 },
}

impl From<ReadError> for ExceptionCode {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::IllegalQuantity(_) => Self::IllegalDataValue,
            ReadError::IllegalAddress { .. } => Self::IllegalDataAddress,
        }
    }
}

/// `value / scale`, rounded and clamped to the raw range `[min, max]`.
fn raw(value: f64, scale: f64, min: f64, max: f64) -> f64 {
    (value / scale).round().clamp(min, max)
}

pub fn scaled_u16(value: f64, scale: f64) -> u16 {
    raw(value, scale, 0.0, f64::from(u16::MAX)) as u16
}

/// Two's complement word of a scaled signed value.
pub fn scaled_i16(value: f64, scale: f64) -> u16 {
    raw(value, scale, f64::from(i16::MIN), f64::from(i16::MAX)) as i16 as u16
}

/// High word first.
pub fn u32_words(value: u32) -> [u16; 2] {
    [(value >> 16) as u16, value as u16]
}

/// High word first, two's complement.
pub fn i32_words(value: i32) -> [u16; 2] {
    u32_words(value as u32)
}

/// Reassembles a high-word-first pair.
pub fn words_u32(high: u16, low: u16) -> u32 {
    (u32::from(high) << 16) | u32::from(low)
}

pub fn words_i32(high: u16, low: u16) -> i32 {
    words_u32(high, low) as i32
}

/// A run of consecutive mapped registers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegisterBlock {
    pub start: u16,
    pub words: Vec<u16>,
}

impl RegisterBlock {
    fn end(&self) -> u32 {
        u32::from(self.start) + self.words.len() as u32
    }
}

/// The words of one unit at one step: what every read of that unit answers
/// from until the next step replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegisterSnapshot {
    blocks: Vec<RegisterBlock>,
}

impl RegisterSnapshot {
    /// A snapshot of the given blocks (non-overlapping).
    pub fn from_blocks(mut blocks: Vec<RegisterBlock>) -> Self {
        blocks.sort_by_key(|b| b.start);
        Self { blocks }
    }

    pub fn blocks(&self) -> &[RegisterBlock] {
        &self.blocks
    }

    /// Encodes a pack's nameplate and current measurements in the
    /// "bess-controller v1" map.
    pub fn encode(spec: &PackSpec, m: &Measurements) -> Self {
        let power = raw(
            m.active_power_w,
            1.0,
            f64::from(i32::MIN),
            f64::from(i32::MAX),
        ) as i32;
        let charged = raw(m.energy_charged_kwh, 0.1, 0.0, f64::from(u32::MAX)) as u32;
        let discharged = raw(m.energy_discharged_kwh, 0.1, 0.0, f64::from(u32::MAX)) as u32;
        let [power_hi, power_lo] = i32_words(power);
        let [charged_hi, charged_lo] = u32_words(charged);
        let [discharged_hi, discharged_lo] = u32_words(discharged);
        let live = vec![
            scaled_u16(m.soc_pct, 0.01),
            scaled_u16(m.soh_pct, 0.01),
            scaled_u16(m.dc_voltage_v, 0.1),
            scaled_i16(m.dc_current_a, 0.1),
            power_hi,
            power_lo,
            scaled_u16(m.cell_voltage_min_v, 0.001),
            scaled_u16(m.cell_voltage_max_v, 0.001),
            scaled_i16(m.cell_temp_min_c, 0.1),
            scaled_i16(m.cell_temp_max_c, 0.1),
            m.status.0,
            m.alarms.0,
            charged_hi,
            charged_lo,
            discharged_hi,
            discharged_lo,
            scaled_i16(m.ambient_temp_c, 0.1),
            m.heartbeat,
        ];
        let nameplate = vec![
            scaled_u16(spec.rated_capacity_kwh, 0.1),
            scaled_u16(spec.rated_power_kw, 0.1),
            spec.cells_in_series,
            spec.firmware_version,
            spec.modules() as u16,
        ];
        let cells = m
            .cell_voltages_v
            .iter()
            .map(|v| scaled_u16(*v, 0.001))
            .collect();
        let temps = m.cell_temps_c.iter().map(|t| scaled_i16(*t, 0.1)).collect();
        Self {
            blocks: vec![
                RegisterBlock {
                    start: 0,
                    words: live,
                },
                RegisterBlock {
                    start: NAMEPLATE_START,
                    words: nameplate,
                },
                RegisterBlock {
                    start: CELLS_START,
                    words: cells,
                },
                RegisterBlock {
                    start: MODULE_TEMPS_START,
                    words: temps,
                },
            ],
        }
    }

    /// The word at `address`, if mapped.
    pub fn word(&self, address: u16) -> Option<u16> {
        let a = u32::from(address);
        self.blocks
            .iter()
            .find(|b| u32::from(b.start) <= a && a < b.end())
            .map(|b| b.words[(a - u32::from(b.start)) as usize])
    }

    /// Answers a read of `quantity` words from `start`; every word must lie
    /// in one mapped block.
    pub fn read(&self, start: u16, quantity: u16) -> Result<Vec<u16>, ReadError> {
        if quantity == 0 || quantity > MAX_READ_QUANTITY {
            return Err(ReadError::IllegalQuantity(quantity));
        }
        let end = u32::from(start) + u32::from(quantity);
        self.blocks
            .iter()
            .find(|b| u32::from(b.start) <= u32::from(start) && end <= b.end())
            .map(|b| {
                let from = usize::from(start - b.start);
                b.words[from..from + usize::from(quantity)].to_vec()
            })
            .ok_or(ReadError::IllegalAddress { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battery::SimulatedPack;

    fn snapshot() -> RegisterSnapshot {
        let pack = SimulatedPack::new(1, 1);
        RegisterSnapshot::encode(&pack.spec, &pack.measure())
    }

    #[test]
    fn multi_word_values_put_the_high_word_first() {
        assert_eq!(u32_words(0x0001_86A0), [0x0001, 0x86A0]);
        assert_eq!(i32_words(-250_000), [0xFFFC, 0x2F70]);
        assert_eq!(words_i32(0xFFFC, 0x2F70), -250_000);
        assert_eq!(words_u32(0x0001, 0x86A0), 100_000);
    }

    #[test]
    fn negative_current_is_encoded_as_twos_complement() {
        assert_eq!(scaled_i16(-123.4, 0.1), (-1234_i16) as u16);
        assert_eq!(scaled_i16(-1e9, 0.1), i16::MIN as u16);
        assert_eq!(scaled_u16(-5.0, 0.1), 0);
    }

    #[test]
    fn charging_pack_reports_negative_current_and_power() {
        let mut pack = SimulatedPack::new(3, 1);
        pack.state.phase = crate::battery::DispatchPhase::Charging;
        pack.state.soc = 0.5;
        pack.advance(10);
        let s = RegisterSnapshot::encode(&pack.spec, &pack.measure());
        assert!((s.word(addr::DC_CURRENT).unwrap() as i16) < 0);
        let power = s.read(addr::ACTIVE_POWER, 2).unwrap();
        assert!(words_i32(power[0], power[1]) < 0);
    }

    #[test]
    fn same_seed_gives_identical_snapshots_after_k_steps_and_another_seed_differs() {
        let after = |seed, k| {
            let mut pack = SimulatedPack::new(seed, 2);
            pack.advance(k);
            RegisterSnapshot::encode(&pack.spec, &pack.measure())
        };
        assert_eq!(after(42, 1_234), after(42, 1_234));
        assert_ne!(after(42, 1_234), after(43, 1_234));
        assert_ne!(after(42, 1_234), after(42, 1_235));
    }

    #[test]
    fn whole_live_block_and_nameplate_are_readable() {
        let s = snapshot();
        assert_eq!(s.read(0, 18).unwrap().len(), 18);
        assert_eq!(s.read(100, 4).unwrap()[3], 0x0102);
        let cells = s.word(addr::CELLS_IN_SERIES).unwrap();
        let sensors = s.word(addr::TEMP_SENSORS).unwrap();
        assert_eq!(s.read(addr::CELL_VOLTAGES, 100).unwrap().len(), 100);
        assert!(s.read(addr::CELL_VOLTAGES + cells - 1, 1).is_ok());
        assert!(s.read(addr::CELL_VOLTAGES + cells, 1).is_err());
        assert_eq!(
            s.read(addr::MODULE_TEMPS, sensors).unwrap().len(),
            usize::from(sensors)
        );
        assert!(s.read(addr::ENERGY_DISCHARGED, 2).is_ok());
    }

    #[test]
    fn reads_past_the_mapped_blocks_are_refused() {
        let s = snapshot();
        assert!(matches!(
            s.read(0, 19),
            Err(ReadError::IllegalAddress { .. })
        ));
        assert!(matches!(
            s.read(0, 104),
            Err(ReadError::IllegalAddress { .. })
        ));
        assert!(matches!(
            s.read(102, 4),
            Err(ReadError::IllegalAddress { .. })
        ));
        assert!(matches!(
            s.read(u16::MAX, 2),
            Err(ReadError::IllegalAddress { .. })
        ));
        assert_eq!(s.read(0, 0), Err(ReadError::IllegalQuantity(0)));
        assert_eq!(s.read(0, 126), Err(ReadError::IllegalQuantity(126)));
    }
}
