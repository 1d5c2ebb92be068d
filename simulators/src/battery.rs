//! The battery pack model: what one simulated controller's pack is
//! (`PackSpec`), where it is (`PackState`), how it moves forward one fixed
//! 100 ms step ([`step`]), and what its sensors read ([`measure`]).
//!
//! Everything here is a pure function of the site seed, the unit id and the
//! step count: no clock, no I/O, no shared random generator. Measurement noise
//! is drawn from a generator seeded by `(unit seed, step)`, so reading a state
//! twice gives the same numbers.

use std::time::Duration;

use rand::{rngs::SmallRng, Rng, SeedableRng};

/// Simulated time covered by one call to [`step`].
pub const STEP: Duration = Duration::from_millis(100);
const STEP_S: f64 = 0.1;

/// Dispatch thresholds and rest time of the default schedule.
const CHARGE_UNTIL_SOC: f64 = 0.90;
const DISCHARGE_UNTIL_SOC: f64 = 0.15;
/// Five minutes of 100 ms steps.
const REST_STEPS: u64 = 3_000;

/// SoH lost per full equivalent cycle (about 80 % after 5 700 cycles).
const FADE_PER_CYCLE: f64 = 3.5e-5;
const NOMINAL_CELL_V: f64 = 3.2;

/// LFP open-circuit voltage per cell against state of charge (0..=1).
const OCV_CURVE: [(f64, f64); 10] = [
    (0.00, 2.90),
    (0.05, 3.10),
    (0.10, 3.20),
    (0.20, 3.26),
    (0.40, 3.29),
    (0.60, 3.31),
    (0.80, 3.33),
    (0.90, 3.35),
    (0.95, 3.40),
    (1.00, 3.55),
];

/// Open-circuit voltage of one LFP cell at `soc` (0..=1), piecewise linear.
pub fn cell_ocv(soc: f64) -> f64 {
    let soc = soc.clamp(0.0, 1.0);
    OCV_CURVE
        .windows(2)
        .find(|w| soc <= w[1].0)
        .map_or(OCV_CURVE[OCV_CURVE.len() - 1].1, |w| {
            let ((s0, v0), (s1, v1)) = (w[0], w[1]);
            v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
        })
}

/// Where the default charge / rest / discharge / rest cycle stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchPhase {
    /// Charging at rated power until SoC reaches 90 %.
    Charging,
    /// Resting five minutes after a charge.
    RestAfterCharge,
    /// Discharging at rated power until SoC falls to 15 %.
    Discharging,
    /// Resting five minutes after a discharge.
    RestAfterDischarge,
}

/// The fixed properties of one unit's pack, drawn from the seed.
#[derive(Debug, Clone, PartialEq)]
pub struct PackSpec {
    /// Seed of this unit, from which the per-step noise is derived.
    pub unit_seed: u64,
    pub rated_capacity_kwh: f64,
    pub rated_power_kw: f64,
    pub cells_in_series: u16,
    pub capacity_ah: f64,
    pub resistance_ohm: f64,
    pub heat_capacity_j_per_k: f64,
    pub cooling_w_per_k: f64,
    pub cell_voltage_spread_v: f64,
    pub cell_temp_spread_c: f64,
    pub ambient_mean_c: f64,
    pub ambient_swing_c: f64,
    pub ambient_phase_rad: f64,
    pub firmware_version: u16,
}

impl PackSpec {
    fn nominal_voltage(&self) -> f64 {
        f64::from(self.cells_in_series) * NOMINAL_CELL_V
    }

    /// Current drawn at rated power and nominal voltage.
    pub fn rated_current_a(&self) -> f64 {
        self.rated_power_kw * 1000.0 / self.nominal_voltage()
    }

    /// Pack open-circuit voltage at `soc`.
    pub fn pack_ocv(&self, soc: f64) -> f64 {
        f64::from(self.cells_in_series) * cell_ocv(soc)
    }

    /// Ambient temperature after `elapsed_s` simulated seconds: a slow
    /// six-hour swing around a seeded mean.
    pub fn ambient_c(&self, elapsed_s: f64) -> f64 {
        let angle = std::f64::consts::TAU * elapsed_s / 21_600.0 + self.ambient_phase_rad;
        self.ambient_mean_c + self.ambient_swing_c * angle.sin()
    }
}

/// Everything that changes from step to step.
#[derive(Debug, Clone, PartialEq)]
pub struct PackState {
    /// Steps taken since start; simulated time is `step × 100 ms`.
    pub step: u64,
    /// State of charge as a fraction, 0..=1.
    pub soc: f64,
    /// State of health as a fraction of rated capacity, 0..=1.
    pub soh: f64,
    /// Pack current, positive while discharging.
    pub current_a: f64,
    pub terminal_voltage_v: f64,
    pub temperature_c: f64,
    pub energy_charged_kwh: f64,
    pub energy_discharged_kwh: f64,
    pub phase: DispatchPhase,
    /// Steps spent in `phase`, this one included.
    pub phase_steps: u64,
}

impl PackState {
    /// Simulated seconds since start.
    pub fn elapsed_s(&self) -> f64 {
        self.step as f64 * STEP_S
    }
}

/// SplitMix64 finaliser: spreads seed, unit and step into independent seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Draws unit `unit`'s pack and its starting state from the site `seed`.
pub fn initial(seed: u64, unit: u8) -> (PackSpec, PackState) {
    let unit_seed = mix(seed ^ mix(u64::from(unit)));
    let mut rng = SmallRng::seed_from_u64(unit_seed);

    let rated_capacity_kwh = f64::from(rng.gen_range(20_u16..=100)) * 10.0;
    let cells_in_series = [208, 216, 224][rng.gen_range(0..3)];
    let nominal_v = f64::from(cells_in_series) * NOMINAL_CELL_V;
    let rated_power_kw = rated_capacity_kwh * 0.5;
    let rated_current = rated_power_kw * 1000.0 / nominal_v;
    // About 2 % voltage drop at rated current.
    let resistance_ohm = 0.02 * nominal_v / rated_current * rng.gen_range(0.9..1.1);
    // Rated-power losses settle about 6 K above ambient, time constant 45 min.
    let cooling_w_per_k = rated_current * rated_current * resistance_ohm / 6.0;
    let spec = PackSpec {
        unit_seed,
        rated_capacity_kwh,
        rated_power_kw,
        cells_in_series,
        capacity_ah: rated_capacity_kwh * 1000.0 / nominal_v,
        resistance_ohm,
        heat_capacity_j_per_k: cooling_w_per_k * 2_700.0,
        cooling_w_per_k,
        cell_voltage_spread_v: rng.gen_range(0.004..0.012),
        cell_temp_spread_c: rng.gen_range(1.0..3.0),
        ambient_mean_c: rng.gen_range(23.0..27.0),
        ambient_swing_c: rng.gen_range(0.5..2.5),
        ambient_phase_rad: rng.gen_range(0.0..std::f64::consts::TAU),
        firmware_version: 0x0102,
    };

    let soc = rng.gen_range(0.20..0.85);
    let soh = rng.gen_range(0.95..0.999);
    let cycles = (1.0 - soh) / FADE_PER_CYCLE;
    let energy_discharged_kwh = cycles * rated_capacity_kwh * 0.75;
    let phase = if rng.gen_bool(0.5) {
        DispatchPhase::Charging
    } else {
        DispatchPhase::Discharging
    };
    let state = PackState {
        step: 0,
        soc,
        soh,
        current_a: 0.0,
        terminal_voltage_v: spec.pack_ocv(soc),
        temperature_c: spec.ambient_c(0.0) + rng.gen_range(0.0..2.0),
        energy_charged_kwh: energy_discharged_kwh / 0.95,
        energy_discharged_kwh,
        phase,
        phase_steps: 0,
    };
    (spec, state)
}

/// Next dispatch phase and how many steps it has lasted, given the SoC now.
fn dispatch(state: &PackState) -> (DispatchPhase, u64) {
    use DispatchPhase::*;
    let next = match state.phase {
        Charging if state.soc >= CHARGE_UNTIL_SOC => RestAfterCharge,
        RestAfterCharge if state.phase_steps >= REST_STEPS => Discharging,
        Discharging if state.soc <= DISCHARGE_UNTIL_SOC => RestAfterDischarge,
        RestAfterDischarge if state.phase_steps >= REST_STEPS => Charging,
        same => return (same, state.phase_steps + 1),
    };
    (next, 1)
}

/// Advances the pack by one fixed [`STEP`].
pub fn step(spec: &PackSpec, state: &PackState) -> PackState {
    let (phase, phase_steps) = dispatch(state);
    let power_w = match phase {
        DispatchPhase::Charging => -spec.rated_power_kw * 1000.0,
        DispatchPhase::Discharging => spec.rated_power_kw * 1000.0,
        DispatchPhase::RestAfterCharge | DispatchPhase::RestAfterDischarge => 0.0,
    };

    // Terminal power P = (OCV − I·R)·I, solved for I.
    let ocv = spec.pack_ocv(state.soc);
    let r = spec.resistance_ohm;
    let current_a = (ocv - (ocv * ocv - 4.0 * r * power_w).max(0.0).sqrt()) / (2.0 * r);
    let terminal_voltage_v = ocv - current_a * r;

    let amp_hours = current_a * STEP_S / 3600.0;
    let soc = (state.soc - amp_hours / (spec.capacity_ah * state.soh)).clamp(0.0, 1.0);
    let soh = state.soh - amp_hours.abs() / (2.0 * spec.capacity_ah) * FADE_PER_CYCLE;

    let energy_kwh = terminal_voltage_v * current_a * STEP_S / 3.6e6;
    let (charged, discharged) = if energy_kwh < 0.0 {
        (-energy_kwh, 0.0)
    } else {
        (0.0, energy_kwh)
    };

    let ambient = spec.ambient_c(state.elapsed_s());
    let heat_w = current_a * current_a * r - spec.cooling_w_per_k * (state.temperature_c - ambient);
    let temperature_c = state.temperature_c + heat_w / spec.heat_capacity_j_per_k * STEP_S;

    PackState {
        step: state.step + 1,
        soc,
        soh,
        current_a,
        terminal_voltage_v,
        temperature_c,
        energy_charged_kwh: state.energy_charged_kwh + charged,
        energy_discharged_kwh: state.energy_discharged_kwh + discharged,
        phase,
        phase_steps,
    }
}

/// Controller status word (register 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusFlags(pub u16);

impl StatusFlags {
    pub const RUNNING: u16 = 1 << 0;
    pub const CHARGING: u16 = 1 << 1;
    pub const DISCHARGING: u16 = 1 << 2;
    pub const IDLE: u16 = 1 << 3;
    pub const FAULT: u16 = 1 << 4;

    pub fn contains(self, bit: u16) -> bool {
        self.0 & bit == bit
    }
}

/// Controller alarm word (register 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlarmFlags(pub u16);

impl AlarmFlags {
    pub const CELL_OVER_VOLTAGE: u16 = 1 << 0;
    pub const CELL_UNDER_VOLTAGE: u16 = 1 << 1;
    pub const OVER_TEMPERATURE: u16 = 1 << 2;
    pub const UNDER_TEMPERATURE: u16 = 1 << 3;
    pub const OVER_CURRENT: u16 = 1 << 4;
    pub const LOW_SOC: u16 = 1 << 5;
    pub const HIGH_SOC: u16 = 1 << 6;

    pub fn contains(self, bit: u16) -> bool {
        self.0 & bit == bit
    }
}

/// What the controller's sensors report for one state, in engineering units.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurements {
    pub soc_pct: f64,
    pub soh_pct: f64,
    pub dc_voltage_v: f64,
    /// Positive while discharging.
    pub dc_current_a: f64,
    /// Positive while discharging.
    pub active_power_w: f64,
    pub cell_voltage_min_v: f64,
    pub cell_voltage_max_v: f64,
    pub cell_temp_min_c: f64,
    pub cell_temp_max_c: f64,
    pub ambient_temp_c: f64,
    pub status: StatusFlags,
    pub alarms: AlarmFlags,
    pub energy_charged_kwh: f64,
    pub energy_discharged_kwh: f64,
    /// Whole simulated seconds since start, wrapping.
    pub heartbeat: u16,
}

/// Reads the sensors of `state`, with small noise fixed by `(unit, step)`.
pub fn measure(spec: &PackSpec, state: &PackState) -> Measurements {
    let mut noise = SmallRng::seed_from_u64(mix(spec.unit_seed ^ mix(state.step)));
    let mut jitter = |amplitude: f64| noise.gen_range(-amplitude..=amplitude);

    let dc_voltage_v = state.terminal_voltage_v + jitter(0.15);
    let dc_current_a = state.current_a + jitter(0.2);
    let load = state.current_a.abs() / spec.rated_current_a();

    // Cells drift apart near the ends of the LFP curve.
    let knee = ((state.soc - 0.5).abs() - 0.35).max(0.0) * 20.0;
    let spread_v = spec.cell_voltage_spread_v * (1.0 + knee);
    let cell_avg_v = state.terminal_voltage_v / f64::from(spec.cells_in_series);
    let cell_voltage_min_v = cell_avg_v - 0.6 * spread_v + jitter(0.0005);
    let cell_voltage_max_v = cell_avg_v + 0.4 * spread_v + jitter(0.0005);

    let cell_temp_min_c = state.temperature_c - 0.3 * spec.cell_temp_spread_c + jitter(0.05);
    let cell_temp_max_c =
        state.temperature_c + spec.cell_temp_spread_c * (0.5 + load) + jitter(0.05);
    let ambient_temp_c = spec.ambient_c(state.elapsed_s()) + jitter(0.05);

    let soc_pct = state.soc * 100.0;
    let mut alarms = 0;
    for (raised, bit) in [
        (cell_voltage_max_v > 3.65, AlarmFlags::CELL_OVER_VOLTAGE),
        (cell_voltage_min_v < 2.80, AlarmFlags::CELL_UNDER_VOLTAGE),
        (cell_temp_max_c > 45.0, AlarmFlags::OVER_TEMPERATURE),
        (cell_temp_min_c < 0.0, AlarmFlags::UNDER_TEMPERATURE),
        (load > 1.2, AlarmFlags::OVER_CURRENT),
        (soc_pct < 10.0, AlarmFlags::LOW_SOC),
        (soc_pct > 95.0, AlarmFlags::HIGH_SOC),
    ] {
        if raised {
            alarms |= bit;
        }
    }
    let faulted = alarms
        & (AlarmFlags::CELL_OVER_VOLTAGE
            | AlarmFlags::CELL_UNDER_VOLTAGE
            | AlarmFlags::OVER_TEMPERATURE
            | AlarmFlags::OVER_CURRENT)
        != 0;
    let mut status = StatusFlags::RUNNING;
    status |= match state.phase {
        DispatchPhase::Charging => StatusFlags::CHARGING,
        DispatchPhase::Discharging => StatusFlags::DISCHARGING,
        DispatchPhase::RestAfterCharge | DispatchPhase::RestAfterDischarge => StatusFlags::IDLE,
    };
    if faulted {
        status |= StatusFlags::FAULT;
    }

    Measurements {
        soc_pct,
        soh_pct: state.soh * 100.0,
        dc_voltage_v,
        dc_current_a,
        active_power_w: dc_voltage_v * dc_current_a,
        cell_voltage_min_v,
        cell_voltage_max_v,
        cell_temp_min_c,
        cell_temp_max_c,
        ambient_temp_c,
        status: StatusFlags(status),
        alarms: AlarmFlags(alarms),
        energy_charged_kwh: state.energy_charged_kwh,
        energy_discharged_kwh: state.energy_discharged_kwh,
        heartbeat: ((state.step / 10) % 65_536) as u16,
    }
}

/// One unit's pack: its spec and current state, stepped in place.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedPack {
    pub spec: PackSpec,
    pub state: PackState,
}

impl SimulatedPack {
    /// The pack of unit `unit` at step 0 for site `seed`.
    pub fn new(seed: u64, unit: u8) -> Self {
        let (spec, state) = initial(seed, unit);
        Self { spec, state }
    }

    /// Takes `steps` fixed steps.
    pub fn advance(&mut self, steps: u64) {
        for _ in 0..steps {
            self.state = step(&self.spec, &self.state);
        }
    }

    pub fn measure(&self) -> Measurements {
        measure(&self.spec, &self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_in(phase: DispatchPhase, soc: f64) -> SimulatedPack {
        let mut pack = SimulatedPack::new(7, 1);
        pack.state.phase = phase;
        pack.state.soc = soc;
        pack.state.temperature_c = pack.spec.ambient_c(0.0);
        pack
    }

    #[test]
    fn soc_rises_while_charging_and_falls_while_discharging() {
        let mut charging = pack_in(DispatchPhase::Charging, 0.5);
        charging.advance(600);
        assert!(charging.state.soc > 0.5);
        assert!(charging.state.current_a < 0.0);
        assert!(charging.measure().status.contains(StatusFlags::CHARGING));

        let mut discharging = pack_in(DispatchPhase::Discharging, 0.5);
        discharging.advance(600);
        assert!(discharging.state.soc < 0.5);
        assert!(discharging.measure().active_power_w > 0.0);
        assert!(
            discharging.state.energy_discharged_kwh
                > pack_in(DispatchPhase::Discharging, 0.5)
                    .state
                    .energy_discharged_kwh
        );
    }

    #[test]
    fn resting_voltage_follows_soc_within_the_lfp_window() {
        let low = pack_in(DispatchPhase::RestAfterDischarge, 0.15);
        let high = pack_in(DispatchPhase::RestAfterCharge, 0.90);
        let (low_v, high_v) = (step(&low.spec, &low.state), step(&high.spec, &high.state));
        assert!(high_v.terminal_voltage_v > low_v.terminal_voltage_v);
        assert!((600.0..=800.0).contains(&high_v.terminal_voltage_v));
        assert!(cell_ocv(0.0) < cell_ocv(0.5) && cell_ocv(0.5) < cell_ocv(1.0));
        assert!((cell_ocv(1.0) - 3.55).abs() < 1e-9);
    }

    #[test]
    fn temperature_rises_under_load_compared_with_rest() {
        let mut loaded = pack_in(DispatchPhase::Charging, 0.3);
        let mut rested = pack_in(DispatchPhase::RestAfterCharge, 0.3);
        loaded.advance(2_900);
        rested.advance(2_900);
        assert!(loaded.state.temperature_c > rested.state.temperature_c + 0.3);
    }

    #[test]
    fn schedule_rests_after_reaching_the_charge_limit() {
        let mut pack = pack_in(DispatchPhase::Charging, 0.9);
        pack.advance(1);
        assert_eq!(pack.state.phase, DispatchPhase::RestAfterCharge);
        assert_eq!(pack.state.current_a, 0.0);
        pack.advance(3_000);
        assert_eq!(pack.state.phase, DispatchPhase::Discharging);
    }

    #[test]
    fn same_seed_and_unit_give_the_same_pack_and_others_differ() {
        let mut a = SimulatedPack::new(42, 1);
        let mut b = SimulatedPack::new(42, 1);
        a.advance(500);
        b.advance(500);
        assert_eq!(a, b);
        assert_eq!(a.measure(), b.measure());
        assert_ne!(
            SimulatedPack::new(42, 2).state,
            SimulatedPack::new(42, 1).state
        );
        assert_ne!(
            SimulatedPack::new(43, 1).state,
            SimulatedPack::new(42, 1).state
        );
    }
}
