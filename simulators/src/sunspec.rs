//! The SunSpec device profile: the same simulated pack served as a
//! SunSpec-compliant device, so that SunSpec discovery (look for "SunS" at
//! 0, 40000 or 50000, then walk the model chain) finds it.
//!
//! Layout from the base address B (all one contiguous block):
//!
//! | offset | what |
//! |--------|------|
//! | 0–1    | `SunS` marker, 0x5375 0x6E53 |
//! | 2–69   | model 1, common (length 66): manufacturer, model, options, version, serial, device address |
//! | 70–121 | model 103, three-phase inverter (length 50), AC side of the storage system |
//! | 122–147| model 124, basic storage controls (length 24) |
//! | 148–211| model 802, battery base (length 62) |
//! | 212–213| end model, 0xFFFF with length 0 |
//!
//! Every point and its scale factor is listed in `REGISTERS.md`. Values
//! use SunSpec's "not implemented" markers (0xFFFF for uint16/enum16,
//! 0x8000 for int16, 0 for acc32) where the simulator has nothing to say.

use crate::{
    battery::{AlarmFlags, Measurements, PackSpec, StatusFlags, CELLS_PER_MODULE},
    register_map::{scaled_i16, scaled_u16, u32_words, RegisterBlock, RegisterSnapshot},
};

/// The "SunS" marker words.
pub const MARKER: [u16; 2] = [0x5375, 0x6E53];
/// Base addresses SunSpec discovery probes.
pub const BASE_ADDRESSES: [u16; 3] = [0, 40_000, 50_000];
/// Default base address.
pub const DEFAULT_BASE: u16 = 40_000;

/// Model ids and lengths in chain order, with each model's offset from the
/// base address of its ID register.
pub const MODELS: [(u16, u16, u16); 4] =
    [(1, 66, 2), (103, 50, 70), (124, 24, 122), (802, 62, 148)];
/// Offset of the end model from the base address.
pub const END_OFFSET: u16 = 212;
/// Words served from the base address.
pub const LEN: u16 = 214;

const NI_U16: u16 = 0xFFFF;
const NI_I16: u16 = 0x8000;
const INVERTER_EFFICIENCY: f64 = 0.975;

/// Packs ASCII text into `regs` registers, two characters each, NUL padded.
pub fn string_words(text: &str, regs: usize) -> Vec<u16> {
    let mut bytes: Vec<u8> = text.bytes().take(regs * 2).collect();
    bytes.resize(regs * 2, 0);
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// Reads a string back from its registers.
pub fn words_string(words: &[u16]) -> String {
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .take_while(|b| *b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sunssf scale factor word.
fn sf(exp: i16) -> u16 {
    exp as u16
}

/// `value` in units of 10^exp, as uint16 / int16.
fn u(value: f64, exp: i32) -> u16 {
    scaled_u16(value, 10f64.powi(exp))
}
fn i(value: f64, exp: i32) -> u16 {
    scaled_i16(value, 10f64.powi(exp))
}

/// The serial number a unit reports.
pub fn serial_number(spec: &PackSpec) -> String {
    format!("SIM{:012X}", spec.unit_seed & 0xFFFF_FFFF_FFFF)
}

fn common(spec: &PackSpec, unit: u8) -> Vec<u16> {
    let mut w = Vec::with_capacity(68);
    w.extend([1, 66]);
    w.extend(string_words("bess-sim", 16));
    w.extend(string_words("BESS-SIM LFP", 16));
    w.extend(string_words(&format!("{}S LFP", spec.cells_in_series), 8));
    let fw = spec.firmware_version;
    w.extend(string_words(&format!("{}.{}", fw >> 8, fw & 0xFF), 8));
    w.extend(string_words(&serial_number(spec), 16));
    w.push(u16::from(unit));
    w.push(0x8000);
    w
}

fn inverter(m: &Measurements) -> Vec<u16> {
    let dc_w = m.active_power_w;
    let ac_w = if dc_w >= 0.0 {
        dc_w * INVERTER_EFFICIENCY
    } else {
        dc_w / INVERTER_EFFICIENCY
    };
    let pf = 0.99;
    let va = ac_w.abs() / pf;
    let var = (va * va - ac_w * ac_w).max(0.0).sqrt();
    let v_ll = 400.0 + (f64::from(m.heartbeat % 60) - 30.0) * 0.02;
    let v_ln = v_ll / 3f64.sqrt();
    let amps = va / (3f64.sqrt() * v_ll);
    let st = if m.status.contains(StatusFlags::FAULT) {
        7 // FAULT
    } else if m.status.contains(StatusFlags::IDLE) {
        8 // STANDBY
    } else {
        4 // MPPT (operating)
    };
    let mut evt1 = 0_u32;
    if m.alarms.contains(AlarmFlags::OVER_TEMPERATURE) {
        evt1 |= 1 << 7;
    }
    if m.alarms.contains(AlarmFlags::UNDER_TEMPERATURE) {
        evt1 |= 1 << 13;
    }
    let wh = u32_words(
        (m.energy_discharged_kwh * INVERTER_EFFICIENCY)
            .round()
            .clamp(0.0, f64::from(u32::MAX)) as u32,
    );
    let mut w = vec![103, 50];
    w.extend([
        u(amps, -1),
        u(amps / 3.0, -1),
        u(amps / 3.0, -1),
        u(amps / 3.0, -1),
        sf(-1),
    ]);
    w.extend([
        u(v_ll, -1),
        u(v_ll, -1),
        u(v_ll, -1),
        u(v_ln, -1),
        u(v_ln, -1),
        u(v_ln, -1),
        sf(-1),
    ]);
    w.extend([i(ac_w, 2), sf(2)]);
    w.extend([u(50.0, -2), sf(-2)]);
    w.extend([i(va, 2), sf(2)]);
    w.extend([i(var, 2), sf(2)]);
    w.extend([i(pf.copysign(ac_w) * 100.0, -1), sf(-1)]);
    w.extend(wh);
    w.push(sf(3));
    w.extend([u(m.dc_current_a.abs(), -1), sf(-1)]);
    w.extend([u(m.dc_voltage_v, -1), sf(-1)]);
    w.extend([i(dc_w, 2), sf(2)]);
    w.extend([
        i(m.ambient_temp_c + 5.0, -1),
        i(m.cell_temp_max_c + 8.0, -1),
        NI_I16,
        NI_I16,
        sf(-1),
    ]);
    w.extend([st, m.status.0]);
    w.extend(u32_words(evt1));
    w.extend([0, 0]);
    w.extend(u32_words(u32::from(m.alarms.0)));
    w.extend([0, 0, 0, 0, 0, 0]);
    w
}

fn charge_status(m: &Measurements) -> u16 {
    if m.status.contains(StatusFlags::CHARGING) {
        4
    } else if m.status.contains(StatusFlags::DISCHARGING) {
        3
    } else if m.soc_pct >= 95.0 {
        5
    } else if m.soc_pct <= 5.0 {
        2
    } else {
        6
    }
}

fn storage(spec: &PackSpec, m: &Measurements) -> Vec<u16> {
    let rated_w = spec.rated_power_kw * 1000.0;
    let rate_pct = m.active_power_w / rated_w * 100.0;
    let mut w = vec![124, 24];
    w.extend([
        u(rated_w, 2), // WChaMax
        100,           // WChaGra, % WChaMax per second
        100,           // WDisChaGra
        0,             // StorCtl_Mod
        NI_U16,        // VAChaMax
        10,            // MinRsvPct
        u(m.soc_pct, -1),
        u(m.soc_pct / 100.0 * spec.capacity_ah * m.soh_pct / 100.0, -1), // StorAval, Ah
        u(m.dc_voltage_v, -1),
        charge_status(m),
        i(rate_pct.max(0.0), -1),    // OutWRte
        i((-rate_pct).max(0.0), -1), // InWRte
        NI_U16,
        NI_U16,
        NI_U16,
        1, // ChaGriSet: GRID
        sf(2),
        sf(0),
        sf(2),
        sf(0),
        sf(-1),
        sf(-1),
        sf(-1),
        sf(-1),
    ]);
    w
}

fn battery(spec: &PackSpec, m: &Measurements) -> Vec<u16> {
    let cells = f64::from(spec.cells_in_series);
    let argmax = |values: &[f64], max: bool| {
        values
            .iter()
            .enumerate()
            .fold(
                (0, if max { f64::MIN } else { f64::MAX }),
                |best, (k, v)| {
                    if (max && *v > best.1) || (!max && *v < best.1) {
                        (k, *v)
                    } else {
                        best
                    }
                },
            )
            .0
    };
    let module = |cell: usize| (cell / usize::from(CELLS_PER_MODULE) + 1) as u16;
    let avg = m.cell_voltages_v.iter().sum::<f64>() / m.cell_voltages_v.len().max(1) as f64;
    let mut evt1 = 0_u32;
    for (alarm, bit) in [
        (AlarmFlags::COMM_FAULT, 0),
        (AlarmFlags::OVER_TEMPERATURE, 1),
        (AlarmFlags::UNDER_TEMPERATURE, 3),
        (AlarmFlags::OVER_CURRENT, 5),
        (AlarmFlags::CELL_OVER_VOLTAGE, 9),
        (AlarmFlags::CELL_UNDER_VOLTAGE, 11),
        (AlarmFlags::LOW_SOC, 14),
        (AlarmFlags::HIGH_SOC, 16),
        (AlarmFlags::CELL_IMBALANCE, 17),
    ] {
        if m.alarms.contains(alarm) {
            evt1 |= 1 << bit;
        }
    }
    let state = if m.status.contains(StatusFlags::FAULT) {
        99
    } else if m.status.contains(StatusFlags::DERATED) {
        5
    } else {
        3
    };
    let cycles = (m.energy_discharged_kwh / spec.rated_capacity_kwh).round() as u32;
    let mut w = vec![802, 62];
    w.extend([
        u(spec.capacity_ah, 0),
        u(spec.rated_capacity_kwh * 1000.0, 2),
        u(spec.rated_power_kw * 1000.0, 2),
        u(spec.rated_power_kw * 1000.0, 2),
        5,      // DisChaRte 0.05 %/day
        950,    // SoCMax
        50,     // SoCMin
        NI_U16, // SocRsvMax
        NI_U16, // SoCRsvMin
        u(m.soc_pct, -1),
        u(100.0 - m.soc_pct, -1),
        u(m.soh_pct, -1),
    ]);
    w.extend(u32_words(cycles));
    w.extend([charge_status(m), 0, m.heartbeat, 0, 0, 4, state, NI_U16]);
    w.extend([0, 0]); // WarrDt
    w.extend(u32_words(evt1));
    w.extend([0, 0]);
    w.extend(u32_words(u32::from(m.alarms.0)));
    w.extend([0, 0]);
    let (vmax, vmin) = (
        argmax(&m.cell_voltages_v, true),
        argmax(&m.cell_voltages_v, false),
    );
    w.extend([
        u(m.dc_voltage_v, -1),
        u(3.65 * cells, -1),
        u(2.80 * cells, -1),
        u(m.cell_voltage_max_v, -3),
        1,
        module(vmax),
        u(m.cell_voltage_min_v, -3),
        1,
        module(vmin),
        u(avg, -3),
        i(m.dc_current_a, -1),
        u(spec.rated_current_a(), -1),
        u(spec.rated_current_a(), -1),
        i(m.active_power_w, 2),
        NI_U16, // ReqInvState
        NI_I16, // ReqW
        NI_U16, // SetOp
        NI_U16, // SetInvState
        sf(0),
        sf(2),
        sf(2),
        sf(-2),
        sf(-1),
        sf(-1),
        sf(-1),
        sf(-1),
        sf(-3),
        sf(-1),
        sf(-1),
        sf(2),
    ]);
    w
}

/// Encodes a pack as a SunSpec device at `base`.
pub fn encode(base: u16, unit: u8, spec: &PackSpec, m: &Measurements) -> RegisterSnapshot {
    let mut words = Vec::with_capacity(usize::from(LEN));
    words.extend(MARKER);
    words.extend(common(spec, unit));
    words.extend(inverter(m));
    words.extend(storage(spec, m));
    words.extend(battery(spec, m));
    words.extend([0xFFFF, 0]);
    debug_assert_eq!(words.len(), usize::from(LEN));
    RegisterSnapshot::from_blocks(vec![RegisterBlock { start: base, words }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battery::SimulatedPack;

    fn device(base: u16) -> (SimulatedPack, RegisterSnapshot) {
        let mut pack = SimulatedPack::new(11, 3);
        pack.advance(20);
        let snapshot = encode(base, 3, &pack.spec, &pack.measure());
        (pack, snapshot)
    }

    /// Walks the model chain the way a discovering client does.
    fn walk(s: &RegisterSnapshot, base: u16) -> Vec<(u16, u16)> {
        assert_eq!(s.read(base, 2).unwrap(), MARKER);
        let mut at = base + 2;
        let mut models = Vec::new();
        loop {
            let header = s.read(at, 2).unwrap();
            models.push((header[0], header[1]));
            if header[0] == 0xFFFF {
                return models;
            }
            at += 2 + header[1];
        }
    }

    #[test]
    fn discovery_finds_the_marker_and_walks_every_model_to_the_end() {
        for base in BASE_ADDRESSES {
            let (_, s) = device(base);
            assert_eq!(
                walk(&s, base),
                [(1, 66), (103, 50), (124, 24), (802, 62), (0xFFFF, 0)]
            );
            for (id, len, offset) in MODELS {
                assert_eq!(s.read(base + offset, 2).unwrap(), [id, len]);
            }
        }
    }

    #[test]
    fn common_model_carries_manufacturer_model_and_serial() {
        let (pack, s) = device(DEFAULT_BASE);
        let body = DEFAULT_BASE + 4;
        assert_eq!(words_string(&s.read(body, 16).unwrap()), "bess-sim");
        assert_eq!(
            words_string(&s.read(body + 16, 16).unwrap()),
            "BESS-SIM LFP"
        );
        assert_eq!(
            words_string(&s.read(body + 48, 16).unwrap()),
            serial_number(&pack.spec)
        );
        assert_eq!(s.word(body + 64), Some(3));
    }

    #[test]
    fn scaled_values_match_the_pack_through_their_scale_factors() {
        let (pack, s) = device(DEFAULT_BASE);
        let m = pack.measure();
        let scaled = |addr: u16, sf_addr: u16| {
            f64::from(s.word(addr).unwrap() as i16)
                * 10f64.powi(i32::from(s.word(sf_addr).unwrap() as i16))
        };
        let b802 = DEFAULT_BASE + 150;
        assert!(
            (scaled(b802 + 9, b802 + 54) - m.soc_pct).abs() <= 0.05,
            "802 SoC"
        );
        let b124 = DEFAULT_BASE + 124;
        assert!(
            (f64::from(s.word(b124 + 6).unwrap()) * 0.1 - m.soc_pct).abs() <= 0.05,
            "124 ChaState"
        );
        assert!((f64::from(s.word(b124 + 8).unwrap()) * 0.1 - m.dc_voltage_v).abs() <= 0.05);
        let b103 = DEFAULT_BASE + 72;
        let dcw = scaled(b103 + 29, b103 + 30);
        assert!(
            (dcw - m.active_power_w).abs() <= 50.0,
            "103 DCW {dcw} vs {}",
            m.active_power_w
        );
        assert!((scaled(b802 + 38, b802 + 58) - m.cell_voltage_min_v).abs() < 0.001);
    }

    #[test]
    fn reads_outside_the_sunspec_block_are_refused() {
        let (_, s) = device(DEFAULT_BASE);
        assert!(s.read(0, 2).is_err());
        assert!(s.read(DEFAULT_BASE + LEN - 1, 2).is_err());
        assert!(s.read(DEFAULT_BASE + LEN - 2, 2).is_ok());
    }
}
