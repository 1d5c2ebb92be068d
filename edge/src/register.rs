//! Register tables and data types: how raw Modbus words become readings.

use serde::Deserialize;
use std::fmt;

use bess_protocol::{PointKind, Reading};

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterTable {
    /// Function 03.
    #[default]
    Holding,
    /// Function 04.
    Input,
    /// Function 01.
    Coils,
    /// Function 02.
    DiscreteInputs,
}

impl RegisterTable {
    pub fn is_bits(self) -> bool {
        matches!(self, RegisterTable::Coils | RegisterTable::DiscreteInputs)
    }

    /// A data type fits this table: bits hold only `bool`, registers hold the rest.
    pub fn holds(self, data_type: DataType) -> bool {
        self.is_bits() == (data_type == DataType::Bool)
    }

    /// Protocol limit of one read request (registers or bits).
    pub fn max_per_read(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }

    pub fn unit_name(self) -> &'static str {
        if self.is_bits() {
            "bit"
        } else {
            "register"
        }
    }
}

impl fmt::Display for RegisterTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegisterTable::Holding => "holding registers",
            RegisterTable::Input => "input registers",
            RegisterTable::Coils => "coils",
            RegisterTable::DiscreteInputs => "discrete inputs",
        })
    }
}

/// How a point's value is laid out in registers. Multi-register values are
/// big-endian: the first register holds the most significant word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// One coil or discrete input.
    Bool,
}

impl DataType {
    /// Registers (or bits) the value occupies.
    pub fn width(self, table: RegisterTable) -> u16 {
        if table.is_bits() {
            return 1;
        }
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    pub fn default_kind(self) -> PointKind {
        match self {
            DataType::Bool => PointKind::Flag,
            _ => PointKind::Analog,
        }
    }

    /// Decode from the registers starting at this point's address.
    pub fn decode_words(self, words: &[u16]) -> Reading {
        let wide = |n: usize| words[..n].iter().fold(0u64, |acc, &w| (acc << 16) | u64::from(w));
        match self {
            DataType::U16 => Reading::Int(i64::from(words[0])),
            DataType::I16 => Reading::Int(i64::from(words[0] as i16)),
            DataType::U32 => Reading::Int(wide(2) as i64),
            DataType::I32 => Reading::Int(i64::from(wide(2) as u32 as i32)),
            // u64 above i64::MAX cannot be carried exactly; saturate rather than wrap.
            DataType::U64 => Reading::Int(i64::try_from(wide(4)).unwrap_or(i64::MAX)),
            DataType::I64 => Reading::Int(wide(4) as i64),
            DataType::F32 => Reading::Float(f64::from(f32::from_bits(wide(2) as u32))),
            DataType::F64 => Reading::Float(f64::from_bits(wide(4))),
            DataType::Bool => Reading::Int(i64::from(words[0] != 0)),
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::Bool => "bool",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_signed_and_wide_integers_high_word_first() {
        assert_eq!(DataType::I16.decode_words(&[0xfff6]), Reading::Int(-10));
        assert_eq!(DataType::U32.decode_words(&[0x0001, 0x0002]), Reading::Int(0x0001_0002));
        assert_eq!(DataType::I32.decode_words(&[0xffff, 0xfffe]), Reading::Int(-2));
        assert_eq!(DataType::I64.decode_words(&[0xffff, 0xffff, 0xffff, 0xffff]), Reading::Int(-1));
        assert_eq!(DataType::U64.decode_words(&[0xffff, 0xffff, 0xffff, 0xffff]), Reading::Int(i64::MAX));
    }

    #[test]
    fn decodes_floats() {
        let bits = 12.5f32.to_bits();
        assert_eq!(DataType::F32.decode_words(&[(bits >> 16) as u16, bits as u16]), Reading::Float(12.5));
        let bits = (-0.25f64).to_bits();
        let words = [(bits >> 48) as u16, (bits >> 32) as u16, (bits >> 16) as u16, bits as u16];
        assert_eq!(DataType::F64.decode_words(&words), Reading::Float(-0.25));
    }

    #[test]
    fn bits_live_only_in_bit_tables() {
        assert!(RegisterTable::Coils.holds(DataType::Bool));
        assert!(!RegisterTable::Coils.holds(DataType::U16));
        assert!(!RegisterTable::Holding.holds(DataType::Bool));
    }
}
