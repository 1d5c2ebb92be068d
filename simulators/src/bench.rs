//! CPU cost per simulated device: steps K devices through simulated
//! seconds the way a fleet at 1 Hz does (ten 100 ms model steps, one
//! measurement and one register encoding per device per second) on one
//! thread, and reports how many such devices one core keeps up with.

use std::time::{Duration, Instant};

use crate::{battery::SimulatedPack, profile::Profile};

/// What one benchmark run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub devices: usize,
    pub simulated_seconds: u32,
    pub profile: Profile,
    pub elapsed: Duration,
    /// CPU time one device costs per simulated second at 1 Hz.
    pub per_device_second: Duration,
    /// Devices at 1 Hz that one core can run (1 s / per-device cost).
    pub devices_per_core: f64,
}

/// Runs `devices` devices for `seconds` simulated seconds each.
pub fn run(devices: usize, seconds: u32, profile: Profile) -> BenchReport {
    let mut packs: Vec<SimulatedPack> = (0..devices)
        .map(|i| SimulatedPack::new(i as u64 / 247, (i % 247) as u8 + 1))
        .collect();
    let mut words = 0_usize;
    let started = Instant::now();
    for _ in 0..seconds {
        for (i, pack) in packs.iter_mut().enumerate() {
            pack.advance(10);
            let snapshot = profile.encode((i % 247) as u8 + 1, &pack.spec, &pack.measure());
            words += snapshot.blocks().len();
        }
    }
    let elapsed = started.elapsed();
    std::hint::black_box(words);
    let device_seconds = (devices as u32 * seconds).max(1);
    let per_device_second = elapsed / device_seconds;
    BenchReport {
        devices,
        simulated_seconds: seconds,
        profile,
        elapsed,
        per_device_second,
        devices_per_core: 1.0 / per_device_second.as_secs_f64().max(1e-12),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_reports_a_cost_and_a_device_count() {
        let report = run(3, 2, Profile::BessController);
        assert_eq!(report.devices, 3);
        assert!(report.devices_per_core > 0.0);
        assert!(report.per_device_second > Duration::ZERO);
    }
}
