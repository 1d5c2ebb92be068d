//! Register tables, data types and byte/word orders: how raw Modbus words
//! become readings. Everything here is pure: the poller, `read` and `scan`
//! share it, and its unit tests pin every decoding.

use serde::Deserialize;
use std::fmt;

use bess_protocol::{MissingReason, PointKind, Reading};

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
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

    /// A data type fits this table: bit tables hold only `bool`; register
    /// tables hold everything (a `bool` there is one bit of a register).
    pub fn holds(self, data_type: DataType) -> bool {
        !self.is_bits() || data_type == DataType::Bool
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

    /// Parse a command-line table name (`holding`, `input`, `coils`, `discrete`).
    pub fn parse_cli(text: &str) -> Option<Self> {
        match text {
            "holding" | "hr" | "3" => Some(RegisterTable::Holding),
            "input" | "ir" | "4" => Some(RegisterTable::Input),
            "coils" | "coil" | "1" => Some(RegisterTable::Coils),
            "discrete" | "discrete_inputs" | "di" | "2" => Some(RegisterTable::DiscreteInputs),
            _ => None,
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

/// How a point's value is laid out in registers.
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
    /// One coil or discrete input, or one bit (`bit = N`) of a register.
    Bool,
    /// A fixed-length text of `length` registers, two ASCII bytes each.
    /// Strings are decoded for `read` and `scan` but never sent: a frame
    /// carries numbers only.
    String,
}

impl DataType {
    pub const NUMERIC: [DataType; 8] = [
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::U64,
        DataType::I64,
        DataType::F32,
        DataType::F64,
    ];

    /// Registers (or bits) the value occupies; `length` is a string's size.
    pub fn width(self, table: RegisterTable, length: u16) -> u16 {
        if table.is_bits() {
            return 1;
        }
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length,
        }
    }

    pub fn default_kind(self) -> PointKind {
        match self {
            DataType::Bool => PointKind::Flag,
            _ => PointKind::Analog,
        }
    }

    /// Whether a value of this type can travel in a frame.
    pub fn is_sent(self) -> bool {
        self != DataType::String
    }

    /// The usual "not implemented" marker of this type (SunSpec's
    /// convention): the most negative value for signed integers, all ones for
    /// unsigned ones. Floats use NaN, which is always treated as missing.
    pub fn default_marker(self) -> Option<u64> {
        match self {
            DataType::U16 => Some(0xFFFF),
            DataType::I16 => Some(0x8000),
            DataType::U32 => Some(0xFFFF_FFFF),
            DataType::I32 => Some(0x8000_0000),
            DataType::U64 => Some(u64::MAX),
            DataType::I64 => Some(0x8000_0000_0000_0000),
            DataType::F32 | DataType::F64 | DataType::Bool | DataType::String => None,
        }
    }

    /// Parse a command-line type name.
    pub fn parse_cli(text: &str) -> Option<Self> {
        Some(match text {
            "u16" => DataType::U16,
            "i16" => DataType::I16,
            "u32" => DataType::U32,
            "i32" => DataType::I32,
            "u64" => DataType::U64,
            "i64" => DataType::I64,
            "f32" => DataType::F32,
            "f64" => DataType::F64,
            "bool" => DataType::Bool,
            "string" => DataType::String,
            _ => return None,
        })
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
            DataType::String => "string",
        };
        f.write_str(name)
    }
}

/// Byte and word order of a multi-byte value, named by where the value's
/// bytes A (most significant) .. D sit in the registers: ABCD is plain
/// big-endian (Modbus' own order), CDAB swaps the 16-bit words (low word
/// first), BADC swaps the bytes inside each word, DCBA does both. For 64-bit
/// values the same rule applies to all four words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    #[default]
    Abcd,
    Dcba,
    Badc,
    Cdab,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::Abcd,
        WordOrder::Cdab,
        WordOrder::Badc,
        WordOrder::Dcba,
    ];

    fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }

    fn swaps_words(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }

    pub fn parse_cli(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "abcd" => WordOrder::Abcd,
            "dcba" => WordOrder::Dcba,
            "badc" => WordOrder::Badc,
            "cdab" => WordOrder::Cdab,
            _ => return None,
        })
    }

    /// The registers as one big-endian number (up to four words).
    pub fn to_bits(self, words: &[u16]) -> u64 {
        let fold = |acc: u64, w: u16| {
            let w = if self.swaps_bytes() {
                w.swap_bytes()
            } else {
                w
            };
            (acc << 16) | u64::from(w)
        };
        if self.swaps_words() {
            words.iter().rev().copied().fold(0, fold)
        } else {
            words.iter().copied().fold(0, fold)
        }
    }
}

impl fmt::Display for WordOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WordOrder::Abcd => "ABCD",
            WordOrder::Dcba => "DCBA",
            WordOrder::Badc => "BADC",
            WordOrder::Cdab => "CDAB",
        })
    }
}

/// A decoded value: a reading that can travel, or text that is only shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Value(Reading),
    Text(String),
}

impl Decoded {
    pub fn reading(&self) -> Reading {
        match self {
            Decoded::Value(r) => *r,
            Decoded::Text(_) => Reading::Missing(MissingReason::NotImplemented),
        }
    }
}

/// Everything needed to turn a point's registers into a value.
#[derive(Debug, Clone, PartialEq)]
pub struct PointCodec {
    pub data_type: DataType,
    pub order: WordOrder,
    /// For `bool` in a register table: which bit (0 = least significant).
    pub bit: Option<u8>,
    /// For `string`: registers.
    pub length: u16,
    /// Raw bit patterns (after applying `order`) that mean "not implemented".
    pub markers: Vec<u64>,
}

impl PointCodec {
    pub fn new(data_type: DataType) -> Self {
        Self {
            data_type,
            order: WordOrder::Abcd,
            bit: None,
            length: 0,
            markers: Vec::new(),
        }
    }

    pub fn with_order(mut self, order: WordOrder) -> Self {
        self.order = order;
        self
    }

    pub fn with_default_marker(mut self) -> Self {
        self.markers.extend(self.data_type.default_marker());
        self
    }

    pub fn width(&self, table: RegisterTable) -> u16 {
        self.data_type.width(table, self.length)
    }

    /// Decode from the words starting at the point's address (bit tables:
    /// one 0/1 word per bit). `words` must hold at least `width` words.
    pub fn decode(&self, words: &[u16]) -> Decoded {
        let n =
            usize::from(self.data_type.width(RegisterTable::Holding, self.length)).min(words.len());
        let words = &words[..n];
        if self.data_type == DataType::String {
            return Decoded::Text(decode_text(words, self.order.swaps_bytes()));
        }
        if self.data_type == DataType::Bool {
            let word = words[0];
            let on = match self.bit {
                Some(bit) => (word >> bit) & 1 == 1,
                None => word != 0,
            };
            return Decoded::Value(Reading::Int(i64::from(on)));
        }
        let bits = self.order.to_bits(words);
        if self.markers.contains(&bits) {
            return Decoded::Value(Reading::Missing(MissingReason::NotImplemented));
        }
        let reading = match self.data_type {
            DataType::U16 => Reading::Int(bits as i64),
            DataType::I16 => Reading::Int(i64::from(bits as u16 as i16)),
            DataType::U32 => Reading::Int(bits as i64),
            DataType::I32 => Reading::Int(i64::from(bits as u32 as i32)),
            // u64 above i64::MAX cannot be carried exactly; saturate rather than wrap.
            DataType::U64 => Reading::Int(i64::try_from(bits).unwrap_or(i64::MAX)),
            DataType::I64 => Reading::Int(bits as i64),
            DataType::F32 => float(f64::from(f32::from_bits(bits as u32))),
            DataType::F64 => float(f64::from_bits(bits)),
            DataType::Bool | DataType::String => unreachable!("handled above"),
        };
        Decoded::Value(reading)
    }
}

/// NaN and infinities are "no value" on every device we know.
fn float(v: f64) -> Reading {
    if v.is_finite() {
        Reading::Float(v)
    } else {
        Reading::Missing(MissingReason::NotImplemented)
    }
}

/// Two bytes per register, high byte first (or swapped); trailing NULs and
/// spaces are dropped and non-printable bytes shown as `.`.
fn decode_text(words: &[u16], swap: bool) -> String {
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| {
            let [hi, lo] = w.to_be_bytes();
            if swap {
                [lo, hi]
            } else {
                [hi, lo]
            }
        })
        .collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end]
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect::<String>()
        .trim_end()
        .to_owned()
}

/// Apply a SunSpec-style scale factor read in the same cycle: the value is
/// multiplied by 10^sf. Dividing for negative factors keeps decimals exact
/// (2305 with sf −1 is 230.5, not 230.50000000000003). A missing or absurd
/// factor makes the value missing.
pub fn apply_scale_factor(value: Reading, sf: Reading) -> Reading {
    let raw = match value {
        Reading::Int(v) => v as f64,
        Reading::Float(v) => v,
        missing @ Reading::Missing(_) => return missing,
    };
    match sf {
        Reading::Int(sf) if (-10..=10).contains(&sf) => {
            let scaled = if sf < 0 {
                raw / 10f64.powi(-sf as i32)
            } else {
                raw * 10f64.powi(sf as i32)
            };
            Reading::Float(scaled)
        }
        Reading::Missing(reason) => Reading::Missing(reason),
        _ => Reading::Missing(MissingReason::NotImplemented),
    }
}

/// Names of the bits set in `word`, from a `bit number → name` list.
pub fn set_flags(word: u64, flags: &[(u8, String)]) -> Vec<String> {
    flags
        .iter()
        .filter(|(bit, _)| *bit < 64 && (word >> bit) & 1 == 1)
        .map(|(_, name)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(codec: &PointCodec, words: &[u16]) -> Reading {
        codec.decode(words).reading()
    }

    #[test]
    fn decodes_signed_and_wide_integers_high_word_first() {
        assert_eq!(
            value(&PointCodec::new(DataType::I16), &[0xfff6]),
            Reading::Int(-10)
        );
        assert_eq!(
            value(&PointCodec::new(DataType::U16), &[0xfff6]),
            Reading::Int(0xfff6)
        );
        assert_eq!(
            value(&PointCodec::new(DataType::U32), &[0x0001, 0x0002]),
            Reading::Int(0x0001_0002)
        );
        assert_eq!(
            value(&PointCodec::new(DataType::I32), &[0xffff, 0xfffe]),
            Reading::Int(-2)
        );
        assert_eq!(
            value(
                &PointCodec::new(DataType::I64),
                &[0xffff, 0xffff, 0xffff, 0xffff]
            ),
            Reading::Int(-1)
        );
        assert_eq!(
            value(
                &PointCodec::new(DataType::U64),
                &[0xffff, 0xffff, 0xffff, 0xffff]
            ),
            Reading::Int(i64::MAX)
        );
        assert_eq!(
            value(&PointCodec::new(DataType::U64), &[0, 0, 1, 2]),
            Reading::Int(0x1_0002)
        );
    }

    #[test]
    fn decodes_floats() {
        let bits = 12.5f32.to_bits();
        assert_eq!(
            value(
                &PointCodec::new(DataType::F32),
                &[(bits >> 16) as u16, bits as u16]
            ),
            Reading::Float(12.5)
        );
        let bits = (-0.25f64).to_bits();
        let words = [
            (bits >> 48) as u16,
            (bits >> 32) as u16,
            (bits >> 16) as u16,
            bits as u16,
        ];
        assert_eq!(
            value(&PointCodec::new(DataType::F64), &words),
            Reading::Float(-0.25)
        );
    }

    #[test]
    fn every_word_order_decodes_the_same_float() {
        // 0x41460000 = 12.375: bytes A=41 B=46 C=00 D=00.
        let cases = [
            (WordOrder::Abcd, [0x4146, 0x0000]),
            (WordOrder::Cdab, [0x0000, 0x4146]),
            (WordOrder::Badc, [0x4641, 0x0000]),
            (WordOrder::Dcba, [0x0000, 0x4641]),
        ];
        for (order, words) in cases {
            let codec = PointCodec::new(DataType::F32).with_order(order);
            assert_eq!(value(&codec, &words), Reading::Float(12.375), "{order}");
        }
    }

    #[test]
    fn word_orders_apply_to_all_four_words_of_a_64_bit_value() {
        let words_abcd = [0x0102, 0x0304, 0x0506, 0x0708];
        let expected = Reading::Int(0x0102_0304_0506_0708);
        assert_eq!(
            value(&PointCodec::new(DataType::I64), &words_abcd),
            expected
        );
        let cdab = [0x0708, 0x0506, 0x0304, 0x0102];
        assert_eq!(
            value(
                &PointCodec::new(DataType::I64).with_order(WordOrder::Cdab),
                &cdab
            ),
            expected
        );
        let badc = [0x0201, 0x0403, 0x0605, 0x0807];
        assert_eq!(
            value(
                &PointCodec::new(DataType::I64).with_order(WordOrder::Badc),
                &badc
            ),
            expected
        );
        let dcba = [0x0807, 0x0605, 0x0403, 0x0201];
        assert_eq!(
            value(
                &PointCodec::new(DataType::I64).with_order(WordOrder::Dcba),
                &dcba
            ),
            expected
        );
    }

    #[test]
    fn a_byte_swapped_16_bit_register_is_decoded() {
        let codec = PointCodec::new(DataType::I16).with_order(WordOrder::Badc);
        assert_eq!(value(&codec, &[0xf6ff]), Reading::Int(-10));
    }

    #[test]
    fn a_bool_can_be_one_bit_of_a_register() {
        let mut codec = PointCodec::new(DataType::Bool);
        codec.bit = Some(4);
        assert_eq!(value(&codec, &[0b1_0000]), Reading::Int(1));
        assert_eq!(value(&codec, &[0b0_1111]), Reading::Int(0));
        assert_eq!(
            value(&PointCodec::new(DataType::Bool), &[1]),
            Reading::Int(1)
        );
    }

    #[test]
    fn strings_are_decoded_for_display_and_never_sent() {
        let mut codec = PointCodec::new(DataType::String);
        codec.length = 4;
        let words = [
            u16::from_be_bytes(*b"BE"),
            u16::from_be_bytes(*b"SS"),
            u16::from_be_bytes(*b"-1"),
            0,
        ];
        assert_eq!(codec.decode(&words), Decoded::Text("BESS-1".into()));
        codec.order = WordOrder::Badc;
        assert_eq!(
            codec.decode(&[u16::from_be_bytes(*b"EB"), u16::from_be_bytes(*b"SS")]),
            Decoded::Text("BESS".into())
        );
        assert!(!DataType::String.is_sent());
        assert_eq!(codec.width(RegisterTable::Holding), 4);
    }

    #[test]
    fn not_implemented_markers_become_missing_values() {
        let missing = Reading::Missing(MissingReason::NotImplemented);
        assert_eq!(
            value(
                &PointCodec::new(DataType::I16).with_default_marker(),
                &[0x8000]
            ),
            missing
        );
        assert_eq!(
            value(
                &PointCodec::new(DataType::U16).with_default_marker(),
                &[0xffff]
            ),
            missing
        );
        assert_eq!(
            value(
                &PointCodec::new(DataType::U32).with_default_marker(),
                &[0xffff, 0xffff]
            ),
            missing
        );
        assert_eq!(
            value(
                &PointCodec::new(DataType::I32).with_default_marker(),
                &[0x8000, 0]
            ),
            missing
        );
        assert_eq!(
            value(&PointCodec::new(DataType::F32), &[0x7fc0, 0]),
            missing,
            "NaN"
        );
        // Without markers the same words are numbers.
        assert_eq!(
            value(&PointCodec::new(DataType::U16), &[0xffff]),
            Reading::Int(0xffff)
        );
        // A configured marker is compared after the word order.
        let mut codec = PointCodec::new(DataType::U32).with_order(WordOrder::Cdab);
        codec.markers = vec![0x0000_ffff];
        assert_eq!(value(&codec, &[0xffff, 0x0000]), missing);
    }

    #[test]
    fn scale_factors_multiply_by_powers_of_ten() {
        assert_eq!(
            apply_scale_factor(Reading::Int(2305), Reading::Int(-1)),
            Reading::Float(230.5)
        );
        assert_eq!(
            apply_scale_factor(Reading::Int(12), Reading::Int(2)),
            Reading::Float(1200.0)
        );
        assert_eq!(
            apply_scale_factor(Reading::Int(8460), Reading::Int(-2)),
            Reading::Float(84.6)
        );
        let not_impl = Reading::Missing(MissingReason::NotImplemented);
        assert_eq!(apply_scale_factor(Reading::Int(1), not_impl), not_impl);
        assert_eq!(
            apply_scale_factor(Reading::Int(1), Reading::Int(-32768)),
            not_impl
        );
        let timeout = Reading::Missing(MissingReason::Timeout);
        assert_eq!(apply_scale_factor(timeout, Reading::Int(0)), timeout);
    }

    #[test]
    fn flags_are_named_by_bit() {
        let flags = vec![
            (0, "running".to_owned()),
            (4, "fault".to_owned()),
            (1, "charging".to_owned()),
        ];
        assert_eq!(set_flags(0b1_0001, &flags), vec!["running", "fault"]);
    }

    #[test]
    fn bits_live_only_in_bit_tables() {
        assert!(RegisterTable::Coils.holds(DataType::Bool));
        assert!(!RegisterTable::Coils.holds(DataType::U16));
        assert!(RegisterTable::Holding.holds(DataType::Bool));
    }
}
