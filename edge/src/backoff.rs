//! `Backoff`: the one retry schedule of every edge loop that waits after a
//! failure (uplink redelivery, Modbus reconnect, mirror reconnect). The
//! delays come from `backon`'s exponential schedule without jitter: the
//! first wait is `min`, each next one doubles, capped at `max`, and the
//! schedule never runs out (a site waits for its broker or device for as
//! long as it takes). A success starts it again from `min`, by building the
//! schedule anew.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

pub struct Backoff {
    schedule: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Waits from `min` doubling up to `max` (`min` if `max` is smaller).
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        let schedule = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Self {
            schedule,
            delays: schedule.build(),
            max,
        }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// The last attempt succeeded: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.delays = self.schedule.build();
    }
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn delays_double_from_min_and_stay_at_max() {
        let mut backoff = Backoff::new(ms(250), Duration::from_secs(10));
        let delays: Vec<Duration> = (0..9).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000].map(ms)
        );
    }

    #[test]
    fn the_schedule_never_runs_out() {
        let mut backoff = Backoff::new(ms(500), Duration::from_secs(30));
        let last = (0..1000).map(|_| backoff.next_delay()).last();
        assert_eq!(last, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_reset_starts_again_from_min() {
        let mut backoff = Backoff::new(ms(500), Duration::from_secs(30));
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(500));
        assert_eq!(backoff.next_delay(), ms(1000));
    }

    #[test]
    fn equal_min_and_max_give_a_fixed_pause() {
        let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(2));
        assert!((0..5).all(|_| backoff.next_delay() == Duration::from_secs(2)));
    }
}
