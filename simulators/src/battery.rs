//! The battery pack model: what one simulated controller's pack is
//! (`PackSpec`, with per-cell capacity, resistance and imbalance), where it
//! is (`PackState`), how it moves forward one fixed 100 ms step ([`step`],
//! [`step_with`]: coulomb counting, OCV curve plus resistance drop, a lumped
//! thermal model against ambient, cycle and calendar SoH fade), and what its
//! sensors read ([`measure`]: per-cell voltages and module temperatures, the
//! status and alarm words derived from them).
//!
//! Everything here is a pure function of the site seed, the unit id and the
//! step count: no clock, no I/O, no shared random generator. Measurement noise
//! is drawn from a generator seeded by `(unit seed, step)`, so reading a state
//! twice gives the same numbers.

use std::time::Duration;

use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::schedule::Schedule;

/// Simulated time covered by one call to [`step`].
pub const STEP: Duration = Duration::from_millis(100);
pub(crate) const STEP_S: f64 = 0.1;

/// Dispatch thresholds and rest time of the default schedule.
const CHARGE_UNTIL_SOC: f64 = 0.90;
const DISCHARGE_UNTIL_SOC: f64 = 0.15;
/// Five minutes of 100 ms steps.
const REST_STEPS: u64 = 3_000;

/// SoH lost per full equivalent cycle (about 80 % after 5 700 cycles).
const FADE_PER_CYCLE: f64 = 3.5e-5;
/// SoH lost per simulated second at rest (about 1 % a year).
const CALENDAR_FADE_PER_S: f64 = 3.2e-10;
const NOMINAL_CELL_V: f64 = 3.2;
/// Cells per module; each module has one temperature sensor.
pub const CELLS_PER_MODULE: u16 = 16;

/// Heat a thermal runaway adds, as a multiple of the rated-power losses.
const RUNAWAY_HEAT_FACTOR: f64 = 12.0;
/// How fast the hot module's own temperature climbs during a runaway, K/s.
const RUNAWAY_HOTSPOT_K_PER_S: f64 = 0.4;
/// Time constant of the hot spot cooling back into the pack, s.
const HOTSPOT_DECAY_S: f64 = 600.0;

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

/// What decides a pack's power setpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Dispatch {
    /// The built-in cycle: charge at rated power to 90 %, rest 5 min,
    /// discharge to 15 %, rest 5 min, repeat.
    #[default]
    SocCycle,
    /// A configured day profile ([`Schedule`]), the same for every unit.
    Schedule(Schedule),
}

/// Outside influences on one step, set by scripted faults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepInputs {
    /// A thermal runaway is under way: heat pours in, one module runs away.
    pub runaway: bool,
}

/// How one cell differs from the pack average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellSpec {
    /// Offset of this cell's SoC from the pack's (imbalance), fraction.
    pub soc_offset: f64,
    /// This cell's capacity relative to the pack's nominal cell.
    pub capacity_factor: f64,
    /// This cell's internal resistance relative to the average.
    pub resistance_factor: f64,
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
    /// One entry per cell in series.
    pub cells: Vec<CellSpec>,
    /// Per module (temperature sensor): how far it sits from the cooling
    /// inlet, 0 (coolest) ..= 1 (warmest).
    pub module_position: Vec<f64>,
    /// The module that overheats in a thermal runaway.
    pub runaway_module: usize,
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

    /// Number of modules, i.e. of cell temperature sensors.
    pub fn modules(&self) -> usize {
        self.module_position.len()
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
    /// Bulk pack temperature.
    pub temperature_c: f64,
    /// Extra temperature of the runaway module above the bulk, K.
    pub hotspot_k: f64,
    pub energy_charged_kwh: f64,
    pub energy_discharged_kwh: f64,
    /// Phase of the built-in cycle (with a schedule: the step's direction).
    pub phase: DispatchPhase,
    /// Steps spent in `phase`, this one included.
    pub phase_steps: u64,
    /// The power asked for could not be delivered because of an SoC limit.
    pub limited: bool,
}

impl PackState {
    /// Simulated seconds since start.
    pub fn elapsed_s(&self) -> f64 {
        self.step as f64 * STEP_S
    }
}

/// SplitMix64 finaliser: spreads seed, unit and step into independent seeds.
pub(crate) fn mix(mut z: u64) -> u64 {
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
    let cells_in_series: u16 = [208, 216, 224][rng.gen_range(0..3)];
    let nominal_v = f64::from(cells_in_series) * NOMINAL_CELL_V;
    let rated_power_kw = rated_capacity_kwh * 0.5;
    let rated_current = rated_power_kw * 1000.0 / nominal_v;
    // About 2 % voltage drop at rated current.
    let resistance_ohm = 0.02 * nominal_v / rated_current * rng.gen_range(0.9..1.1);
    // Rated-power losses settle about 6 K above ambient, time constant 45 min.
    let cooling_w_per_k = rated_current * rated_current * resistance_ohm / 6.0;
    let cell_voltage_spread_v = rng.gen_range(0.004..0.012);
    let imbalance = rng.gen_range(0.005..0.02);
    let cells = (0..cells_in_series)
        .map(|_| CellSpec {
            soc_offset: rng.gen_range(-imbalance..=imbalance),
            capacity_factor: rng.gen_range(0.985..1.015),
            resistance_factor: rng.gen_range(0.9..1.1),
        })
        .collect();
    let modules = usize::from(cells_in_series.div_ceil(CELLS_PER_MODULE));
    let module_position: Vec<f64> = (0..modules)
        .map(|m| (m as f64 / (modules - 1) as f64 + rng.gen_range(-0.1..0.1)).clamp(0.0, 1.0))
        .collect();
    let spec = PackSpec {
        unit_seed,
        rated_capacity_kwh,
        rated_power_kw,
        cells_in_series,
        capacity_ah: rated_capacity_kwh * 1000.0 / nominal_v,
        resistance_ohm,
        heat_capacity_j_per_k: cooling_w_per_k * 2_700.0,
        cooling_w_per_k,
        cell_voltage_spread_v,
        cell_temp_spread_c: rng.gen_range(1.0..3.0),
        ambient_mean_c: rng.gen_range(23.0..27.0),
        ambient_swing_c: rng.gen_range(0.5..2.5),
        ambient_phase_rad: rng.gen_range(0.0..std::f64::consts::TAU),
        firmware_version: 0x0102,
        cells,
        runaway_module: rng.gen_range(0..modules),
        module_position,
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
        hotspot_k: 0.0,
        energy_charged_kwh: energy_discharged_kwh / 0.95,
        energy_discharged_kwh,
        phase,
        phase_steps: 0,
        limited: false,
    };
    (spec, state)
}

/// Next phase of the built-in cycle and how many steps it has lasted.
fn soc_cycle(state: &PackState) -> (DispatchPhase, u64) {
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

/// Power asked of the pack this step (positive = discharge), its phase, and
/// whether an SoC limit cut it.
fn setpoint(
    spec: &PackSpec,
    state: &PackState,
    dispatch: &Dispatch,
) -> (f64, DispatchPhase, u64, bool) {
    match dispatch {
        Dispatch::SocCycle => {
            let (phase, steps) = soc_cycle(state);
            let power_w = match phase {
                DispatchPhase::Charging => -spec.rated_power_kw * 1000.0,
                DispatchPhase::Discharging => spec.rated_power_kw * 1000.0,
                DispatchPhase::RestAfterCharge | DispatchPhase::RestAfterDischarge => 0.0,
            };
            (power_w, phase, steps, false)
        }
        Dispatch::Schedule(schedule) => {
            let asked = schedule.power_w(spec, state.elapsed_s());
            let phase = if asked < 0.0 {
                DispatchPhase::Charging
            } else if asked > 0.0 {
                DispatchPhase::Discharging
            } else {
                DispatchPhase::RestAfterDischarge
            };
            let limited = (asked < 0.0 && state.soc >= schedule.soc_max)
                || (asked > 0.0 && state.soc <= schedule.soc_min);
            let steps = if phase == state.phase {
                state.phase_steps + 1
            } else {
                1
            };
            (if limited { 0.0 } else { asked }, phase, steps, limited)
        }
    }
}

/// Advances the pack by one fixed [`STEP`] on the built-in cycle.
pub fn step(spec: &PackSpec, state: &PackState) -> PackState {
    step_with(spec, state, &Dispatch::SocCycle, StepInputs::default())
}

/// Advances the pack by one fixed [`STEP`] following `dispatch`.
pub fn step_with(
    spec: &PackSpec,
    state: &PackState,
    dispatch: &Dispatch,
    inputs: StepInputs,
) -> PackState {
    let (power_w, phase, phase_steps, limited) = setpoint(spec, state, dispatch);

    // Terminal power P = (OCV − I·R)·I, solved for I.
    let ocv = spec.pack_ocv(state.soc);
    let r = spec.resistance_ohm;
    let current_a = (ocv - (ocv * ocv - 4.0 * r * power_w).max(0.0).sqrt()) / (2.0 * r);
    let terminal_voltage_v = ocv - current_a * r;

    let amp_hours = current_a * STEP_S / 3600.0;
    let soc = (state.soc - amp_hours / (spec.capacity_ah * state.soh)).clamp(0.0, 1.0);
    let soh = state.soh
        - amp_hours.abs() / (2.0 * spec.capacity_ah) * FADE_PER_CYCLE
        - CALENDAR_FADE_PER_S * STEP_S;

    let energy_kwh = terminal_voltage_v * current_a * STEP_S / 3.6e6;
    let (charged, discharged) = if energy_kwh < 0.0 {
        (-energy_kwh, 0.0)
    } else {
        (0.0, energy_kwh)
    };

    let ambient = spec.ambient_c(state.elapsed_s());
    let rated_losses_w = spec.rated_current_a().powi(2) * r;
    let runaway_w = if inputs.runaway {
        RUNAWAY_HEAT_FACTOR * rated_losses_w
    } else {
        0.0
    };
    let heat_w = current_a * current_a * r + runaway_w
        - spec.cooling_w_per_k * (state.temperature_c - ambient);
    let temperature_c = state.temperature_c + heat_w / spec.heat_capacity_j_per_k * STEP_S;
    let hotspot_k = if inputs.runaway {
        state.hotspot_k + RUNAWAY_HOTSPOT_K_PER_S * STEP_S
    } else {
        state.hotspot_k * (1.0 - STEP_S / HOTSPOT_DECAY_S)
    };

    PackState {
        step: state.step + 1,
        soc,
        soh,
        current_a,
        terminal_voltage_v,
        temperature_c,
        hotspot_k,
        energy_charged_kwh: state.energy_charged_kwh + charged,
        energy_discharged_kwh: state.energy_discharged_kwh + discharged,
        phase,
        phase_steps,
        limited,
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
    /// Power asked for is held back by an SoC limit.
    pub const DERATED: u16 = 1 << 5;
    /// Some alarm bit is set.
    pub const ALARM: u16 = 1 << 6;

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
    /// A communication fault is active on this unit (scripted fault).
    pub const COMM_FAULT: u16 = 1 << 7;
    /// Cell temperature rising fast or above 60 °C: thermal runaway.
    pub const THERMAL_RUNAWAY: u16 = 1 << 8;
    /// Cell voltage spread above 100 mV.
    pub const CELL_IMBALANCE: u16 = 1 << 9;

    /// Alarms that put the controller in fault (status bit 4).
    pub const FAULTS: u16 = Self::CELL_OVER_VOLTAGE
        | Self::CELL_UNDER_VOLTAGE
        | Self::OVER_TEMPERATURE
        | Self::OVER_CURRENT
        | Self::COMM_FAULT
        | Self::THERMAL_RUNAWAY;

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
    /// Every cell in series, in string order.
    pub cell_voltages_v: Vec<f64>,
    /// One sensor per module of [`CELLS_PER_MODULE`] cells.
    pub cell_temps_c: Vec<f64>,
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

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

impl Measurements {
    /// Re-derives min/max, alarms and status from the values (after a
    /// fault changed some of them, for instance).
    pub fn derive_words(&mut self, load: f64, limited: bool, comm_fault: bool) {
        (self.cell_voltage_min_v, self.cell_voltage_max_v) = min_max(&self.cell_voltages_v);
        (self.cell_temp_min_c, self.cell_temp_max_c) = min_max(&self.cell_temps_c);
        let mut alarms = 0;
        for (raised, bit) in [
            (
                self.cell_voltage_max_v > 3.65,
                AlarmFlags::CELL_OVER_VOLTAGE,
            ),
            (
                self.cell_voltage_min_v < 2.80,
                AlarmFlags::CELL_UNDER_VOLTAGE,
            ),
            (self.cell_temp_max_c > 45.0, AlarmFlags::OVER_TEMPERATURE),
            (self.cell_temp_min_c < 0.0, AlarmFlags::UNDER_TEMPERATURE),
            (load > 1.2, AlarmFlags::OVER_CURRENT),
            (self.soc_pct < 10.0, AlarmFlags::LOW_SOC),
            (self.soc_pct > 95.0, AlarmFlags::HIGH_SOC),
            (comm_fault, AlarmFlags::COMM_FAULT),
            (self.cell_temp_max_c > 60.0, AlarmFlags::THERMAL_RUNAWAY),
            (
                self.cell_voltage_max_v - self.cell_voltage_min_v > 0.1,
                AlarmFlags::CELL_IMBALANCE,
            ),
        ] {
            if raised {
                alarms |= bit;
            }
        }
        let mut status = StatusFlags::RUNNING;
        status |= if self.dc_current_a < -0.5 {
            StatusFlags::CHARGING
        } else if self.dc_current_a > 0.5 {
            StatusFlags::DISCHARGING
        } else {
            StatusFlags::IDLE
        };
        if alarms & AlarmFlags::FAULTS != 0 {
            status |= StatusFlags::FAULT;
        }
        if alarms != 0 {
            status |= StatusFlags::ALARM;
        }
        if limited {
            status |= StatusFlags::DERATED;
        }
        self.alarms = AlarmFlags(alarms);
        self.status = StatusFlags(status);
    }
}

/// Reads the sensors of `state`, with small noise fixed by `(unit, step)`.
pub fn measure(spec: &PackSpec, state: &PackState) -> Measurements {
    measure_with(spec, state, false)
}

/// Like [`measure`]; `comm_fault` raises the comm-fault alarm.
pub fn measure_with(spec: &PackSpec, state: &PackState, comm_fault: bool) -> Measurements {
    let mut noise = SmallRng::seed_from_u64(mix(spec.unit_seed ^ mix(state.step)));
    let mut jitter = |amplitude: f64| noise.gen_range(-amplitude..=amplitude);

    let dc_current_a = state.current_a + jitter(0.2);
    let load = state.current_a.abs() / spec.rated_current_a();

    // Each cell sits on the OCV curve at its own SoC (imbalance, and a
    // capacity mismatch that pulls weak cells further from the middle), and
    // drops its own share of I·R. Cells drift apart near the curve's ends.
    let cell_r = spec.resistance_ohm / f64::from(spec.cells_in_series);
    let cell_voltages_v: Vec<f64> = spec
        .cells
        .iter()
        .map(|c| {
            let soc = 0.5 + (state.soc - 0.5) / c.capacity_factor + c.soc_offset;
            let spread = spec.cell_voltage_spread_v * (c.soc_offset.signum() * 0.3);
            cell_ocv(soc) + spread - state.current_a * cell_r * c.resistance_factor
        })
        .collect();
    let dc_voltage_v = cell_voltages_v.iter().sum::<f64>() + jitter(0.15);

    // Modules warm along the cooling path, more under load; the runaway
    // module carries the hot spot.
    let cell_temps_c: Vec<f64> = spec
        .module_position
        .iter()
        .enumerate()
        .map(|(m, pos)| {
            let mut t = state.temperature_c
                + spec.cell_temp_spread_c * (pos - 0.3) * (0.5 + load)
                + jitter(0.05);
            if m == spec.runaway_module {
                t += state.hotspot_k;
            }
            t
        })
        .collect();
    let ambient_temp_c = spec.ambient_c(state.elapsed_s()) + jitter(0.05);

    let mut m = Measurements {
        soc_pct: state.soc * 100.0,
        soh_pct: state.soh * 100.0,
        dc_voltage_v,
        dc_current_a,
        active_power_w: dc_voltage_v * dc_current_a,
        cell_voltages_v,
        cell_temps_c,
        cell_voltage_min_v: 0.0,
        cell_voltage_max_v: 0.0,
        cell_temp_min_c: 0.0,
        cell_temp_max_c: 0.0,
        ambient_temp_c,
        status: StatusFlags::default(),
        alarms: AlarmFlags::default(),
        energy_charged_kwh: state.energy_charged_kwh,
        energy_discharged_kwh: state.energy_discharged_kwh,
        heartbeat: ((state.step / 10) % 65_536) as u16,
    };
    m.derive_words(load, state.limited, comm_fault);
    m
}

/// One unit's pack: its spec, current state and dispatch, stepped in place.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedPack {
    pub spec: PackSpec,
    pub state: PackState,
    pub dispatch: Dispatch,
}

impl SimulatedPack {
    /// The pack of unit `unit` at step 0 for site `seed`, on the built-in cycle.
    pub fn new(seed: u64, unit: u8) -> Self {
        let (spec, state) = initial(seed, unit);
        Self {
            spec,
            state,
            dispatch: Dispatch::SocCycle,
        }
    }

    /// Takes `steps` fixed steps.
    pub fn advance(&mut self, steps: u64) {
        self.advance_with(steps, StepInputs::default());
    }

    /// Takes `steps` fixed steps under `inputs`.
    pub fn advance_with(&mut self, steps: u64, inputs: StepInputs) {
        for _ in 0..steps {
            self.state = step_with(&self.spec, &self.state, &self.dispatch, inputs);
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
    fn min_and_max_cell_values_come_from_the_per_cell_readings() {
        let mut pack = pack_in(DispatchPhase::Discharging, 0.5);
        pack.advance(50);
        let m = pack.measure();
        assert_eq!(
            m.cell_voltages_v.len(),
            usize::from(pack.spec.cells_in_series)
        );
        assert_eq!(m.cell_temps_c.len(), pack.spec.modules());
        let lowest = m
            .cell_voltages_v
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let highest = m
            .cell_temps_c
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(m.cell_voltage_min_v, lowest);
        assert_eq!(m.cell_temp_max_c, highest);
        assert!(m.cell_voltage_max_v > m.cell_voltage_min_v);
        let sum: f64 = m.cell_voltages_v.iter().sum();
        assert!((m.dc_voltage_v - sum).abs() < 0.2);
    }

    #[test]
    fn cells_spread_further_near_empty_than_mid_charge() {
        let spread = |soc| {
            let m = pack_in(DispatchPhase::RestAfterDischarge, soc).measure();
            m.cell_voltage_max_v - m.cell_voltage_min_v
        };
        assert!(spread(0.03) > spread(0.5));
    }

    #[test]
    fn runaway_heats_one_module_and_raises_over_temperature_and_fault() {
        let mut pack = pack_in(DispatchPhase::RestAfterCharge, 0.5);
        pack.advance_with(600, StepInputs { runaway: true });
        let m = pack.measure();
        assert!(m.alarms.contains(AlarmFlags::OVER_TEMPERATURE));
        assert!(m.status.contains(StatusFlags::FAULT));
        let hottest = m
            .cell_temps_c
            .iter()
            .copied()
            .enumerate()
            .fold((0, f64::MIN), |a, (i, t)| if t > a.1 { (i, t) } else { a });
        assert_eq!(hottest.0, pack.spec.runaway_module);
        let before = m.cell_temp_max_c;
        pack.advance(6_000);
        assert!(
            pack.measure().cell_temp_max_c < before,
            "cools down after the event"
        );
    }

    #[test]
    fn comm_fault_sets_its_alarm_bit_and_the_fault_status() {
        let pack = pack_in(DispatchPhase::RestAfterCharge, 0.5);
        let m = measure_with(&pack.spec, &pack.state, true);
        assert!(m.alarms.contains(AlarmFlags::COMM_FAULT));
        assert!(m.status.contains(StatusFlags::FAULT));
        assert!(!pack.measure().alarms.contains(AlarmFlags::COMM_FAULT));
    }

    #[test]
    fn soh_fades_with_throughput_faster_than_at_rest() {
        let mut cycling = pack_in(DispatchPhase::Charging, 0.3);
        let mut resting = pack_in(DispatchPhase::RestAfterCharge, 0.3);
        let start = cycling.state.soh;
        cycling.advance(3_000);
        resting.advance(3_000);
        assert!(cycling.state.soh < resting.state.soh);
        assert!(resting.state.soh < start);
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
