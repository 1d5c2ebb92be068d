//! Dispatch schedules: a day profile of charge / discharge / rest steps,
//! each with a power (kW) or a C-rate and a duration, repeated or not. The
//! step in force is a pure function of simulated time, so a schedule never
//! drifts and `--time-scale` compresses it exactly.
//!
//! SoC limits (`soc_min`, `soc_max`) play the battery management system:
//! a step that would charge past `soc_max` or discharge below `soc_min`
//! delivers no power and the unit reports itself derated.

use std::time::Duration;

use serde::Deserialize;

use crate::battery::PackSpec;

/// Which way a schedule step moves energy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepMode {
    Charge,
    Discharge,
    Rest,
}

/// How much power a step asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setpoint {
    /// Kilowatts at the pack terminals.
    Kw(f64),
    /// Multiples of the pack's rated capacity per hour (0.5 = half the
    /// rated kWh per hour).
    CRate(f64),
}

/// One step of a schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleStep {
    pub mode: StepMode,
    pub setpoint: Setpoint,
    pub duration: Duration,
}

/// A dispatch profile over (simulated) time.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub steps: Vec<ScheduleStep>,
    /// Start over after the last step; otherwise rest once it is done.
    pub repeat: bool,
    /// Charging stops at this SoC (fraction).
    pub soc_max: f64,
    /// Discharging stops at this SoC (fraction).
    pub soc_min: f64,
}

impl Schedule {
    /// Total simulated duration of one pass.
    pub fn period(&self) -> Duration {
        self.steps.iter().map(|s| s.duration).sum()
    }

    /// Index of the step in force `elapsed_s` simulated seconds after start.
    pub fn step_at(&self, elapsed_s: f64) -> Option<usize> {
        let period = self.period().as_secs_f64();
        if period <= 0.0 || (!self.repeat && elapsed_s >= period) {
            return None;
        }
        let mut t = elapsed_s.rem_euclid(period);
        for (i, step) in self.steps.iter().enumerate() {
            let d = step.duration.as_secs_f64();
            if t < d {
                return Some(i);
            }
            t -= d;
        }
        None
    }

    /// Power asked of `spec`'s pack at `elapsed_s`, positive = discharge.
    pub fn power_w(&self, spec: &PackSpec, elapsed_s: f64) -> f64 {
        let Some(step) = self.step_at(elapsed_s).map(|i| self.steps[i]) else {
            return 0.0;
        };
        let kw = match step.setpoint {
            Setpoint::Kw(kw) => kw,
            Setpoint::CRate(c) => c * spec.rated_capacity_kwh,
        };
        match step.mode {
            StepMode::Charge => -kw.abs() * 1000.0,
            StepMode::Discharge => kw.abs() * 1000.0,
            StepMode::Rest => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::battery::{Dispatch, DispatchPhase, SimulatedPack, StatusFlags};

    fn day() -> Schedule {
        Schedule {
            steps: vec![
                ScheduleStep {
                    mode: StepMode::Charge,
                    setpoint: Setpoint::Kw(100.0),
                    duration: Duration::from_secs(60),
                },
                ScheduleStep {
                    mode: StepMode::Rest,
                    setpoint: Setpoint::Kw(0.0),
                    duration: Duration::from_secs(30),
                },
                ScheduleStep {
                    mode: StepMode::Discharge,
                    setpoint: Setpoint::CRate(0.25),
                    duration: Duration::from_secs(60),
                },
            ],
            repeat: true,
            soc_max: 0.95,
            soc_min: 0.05,
        }
    }

    #[test]
    fn step_in_force_follows_simulated_time_and_repeats() {
        let s = day();
        assert_eq!(s.step_at(0.0), Some(0));
        assert_eq!(s.step_at(59.9), Some(0));
        assert_eq!(s.step_at(60.0), Some(1));
        assert_eq!(s.step_at(100.0), Some(2));
        assert_eq!(s.step_at(150.0 + 10.0), Some(0));
        let once = Schedule {
            repeat: false,
            ..day()
        };
        assert_eq!(once.step_at(160.0), None);
    }

    #[test]
    fn c_rate_is_relative_to_rated_capacity_and_charge_is_negative() {
        let pack = SimulatedPack::new(1, 1);
        let s = day();
        assert_eq!(s.power_w(&pack.spec, 1.0), -100_000.0);
        assert_eq!(s.power_w(&pack.spec, 70.0), 0.0);
        assert_eq!(
            s.power_w(&pack.spec, 100.0),
            0.25 * pack.spec.rated_capacity_kwh * 1000.0
        );
    }

    #[test]
    fn scheduled_pack_charges_then_rests_then_discharges() {
        let mut pack = SimulatedPack::new(1, 1);
        pack.state.soc = 0.5;
        pack.dispatch = Dispatch::Schedule(day());
        pack.advance(300);
        assert!(pack.state.current_a < 0.0);
        assert!(pack.measure().status.contains(StatusFlags::CHARGING));
        pack.advance(400);
        assert_eq!(pack.state.current_a, 0.0);
        assert!(pack.measure().status.contains(StatusFlags::IDLE));
        pack.advance(400);
        assert_eq!(pack.state.phase, DispatchPhase::Discharging);
        assert!(pack.state.current_a > 0.0);
    }

    #[test]
    fn soc_limit_stops_charging_and_reports_derated() {
        let mut pack = SimulatedPack::new(1, 1);
        pack.state.soc = 0.96;
        pack.dispatch = Dispatch::Schedule(day());
        pack.advance(10);
        assert_eq!(pack.state.current_a, 0.0);
        assert!(pack.measure().status.contains(StatusFlags::DERATED));
    }
}
