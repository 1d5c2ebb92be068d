//! Frame timestamps: wall-clock milliseconds taken when the response
//! arrives, kept strictly increasing per poll group so that a clock step
//! backwards never gives two frames of one group the same time or reorders
//! them.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub struct FrameClock {
    last_ms: Vec<i64>,
}

impl FrameClock {
    pub fn new(groups: usize) -> Self {
        Self { last_ms: vec![i64::MIN; groups] }
    }

    pub fn stamp(&mut self, group: usize) -> i64 {
        self.stamp_at(group, now_ms())
    }

    fn stamp_at(&mut self, group: usize, wall_ms: i64) -> i64 {
        let last = &mut self.last_ms[group];
        let ts = wall_ms.max(last.saturating_add(1));
        if wall_ms < *last {
            tracing::warn!(step_back_ms = *last - wall_ms, "wall clock stepped backwards; keeping frame order");
        }
        *last = ts;
        ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_step_back_never_repeats_or_reorders_a_group_timestamp() {
        let mut clock = FrameClock::new(2);
        assert_eq!(clock.stamp_at(0, 1000), 1000);
        assert_eq!(clock.stamp_at(0, 1000), 1001);
        assert_eq!(clock.stamp_at(0, 900), 1002);
        assert_eq!(clock.stamp_at(1, 900), 900);
        assert_eq!(clock.stamp_at(0, 2000), 2000);
    }
}
