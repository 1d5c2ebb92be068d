//! Time: frame timestamps, clock-step detection and the wait for a trusted
//! clock.
//!
//! Timestamps are wall-clock milliseconds taken when the response arrives,
//! kept strictly increasing per poll group so that a clock step backwards
//! never gives two frames of one group the same time or reorders them.
//! `ClockMonitor` compares every wall-clock reading with the monotonic clock
//! since the previous one; a difference beyond the threshold is a clock step
//! (warned, counted in `bess_edge_clock_steps_total`, shown in `/status`).
//!
//! With `require_ntp_sync = true`, `ClockGate` holds frames until the system
//! reports its clock synchronised, then **re-dates** them: each held frame
//! is moved by the step the clock made meanwhile (wall time elapsed minus
//! monotonic time elapsed), so frames taken before the sync carry the
//! corrected time. If the clock is not trusted within `ntp_wait_max`, the
//! held frames go out with the local clock's times and a warning.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

use bess_protocol::Frame;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Watches the wall clock against the monotonic clock.
pub struct ClockMonitor {
    threshold_ms: AtomicI64,
    anchor: Mutex<(i64, Instant)>,
    steps: AtomicU64,
    last_step_ms: AtomicI64,
    last_step_at_ms: AtomicI64,
    trusted: AtomicBool,
    held_frames: AtomicU64,
}

/// What `/status` shows about the clock.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
pub struct ClockStatus {
    pub steps: u64,
    pub last_step_ms: Option<i64>,
    pub last_step_at_ms: Option<i64>,
    pub trusted: bool,
    pub held_frames: u64,
}

impl ClockMonitor {
    pub fn new(threshold: Duration) -> Self {
        Self {
            threshold_ms: AtomicI64::new(threshold.as_millis() as i64),
            anchor: Mutex::new((now_ms(), Instant::now())),
            steps: AtomicU64::new(0),
            last_step_ms: AtomicI64::new(0),
            last_step_at_ms: AtomicI64::new(0),
            trusted: AtomicBool::new(true),
            held_frames: AtomicU64::new(0),
        }
    }

    pub fn set_threshold(&self, threshold: Duration) {
        self.threshold_ms
            .store(threshold.as_millis() as i64, Ordering::Relaxed);
    }

    /// The wall clock now, checked for a step since the last reading.
    pub fn now_ms(&self) -> i64 {
        let wall = now_ms();
        self.observe(wall, Instant::now());
        wall
    }

    /// Returns the step, if the wall clock moved more than the threshold
    /// away from what the monotonic clock says since the last reading.
    fn observe(&self, wall_ms: i64, mono: Instant) -> Option<i64> {
        let mut anchor = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        let expected = anchor.0 + mono.saturating_duration_since(anchor.1).as_millis() as i64;
        *anchor = (wall_ms, mono);
        let step = wall_ms - expected;
        if step.abs() <= self.threshold_ms.load(Ordering::Relaxed) {
            return None;
        }
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.last_step_ms.store(step, Ordering::Relaxed);
        self.last_step_at_ms.store(wall_ms, Ordering::Relaxed);
        metrics::counter!("bess_edge_clock_steps_total").increment(1);
        tracing::warn!(
            step_ms = step,
            "wall clock stepped; frame order is kept, times follow the new clock"
        );
        Some(step)
    }

    pub fn set_trusted(&self, trusted: bool) {
        self.trusted.store(trusted, Ordering::Relaxed);
    }

    pub fn status(&self) -> ClockStatus {
        let steps = self.steps.load(Ordering::Relaxed);
        ClockStatus {
            steps,
            last_step_ms: (steps > 0).then(|| self.last_step_ms.load(Ordering::Relaxed)),
            last_step_at_ms: (steps > 0).then(|| self.last_step_at_ms.load(Ordering::Relaxed)),
            trusted: self.trusted.load(Ordering::Relaxed),
            held_frames: self.held_frames.load(Ordering::Relaxed),
        }
    }
}

impl Default for ClockMonitor {
    fn default() -> Self {
        Self::new(Duration::from_secs(2))
    }
}

pub struct FrameClock {
    last_ms: Vec<i64>,
}

impl FrameClock {
    pub fn new(groups: usize) -> Self {
        Self {
            last_ms: vec![i64::MIN; groups],
        }
    }

    pub fn stamp(&mut self, group: usize) -> i64 {
        self.stamp_at(group, now_ms())
    }

    /// A timestamp from `monitor`, which reports clock steps.
    pub fn stamp_with(&mut self, group: usize, monitor: &ClockMonitor) -> i64 {
        self.stamp_at(group, monitor.now_ms())
    }

    fn stamp_at(&mut self, group: usize, wall_ms: i64) -> i64 {
        let last = &mut self.last_ms[group];
        let ts = wall_ms.max(last.saturating_add(1));
        if wall_ms < *last {
            tracing::debug!(
                step_back_ms = *last - wall_ms,
                "wall clock behind the last frame; keeping frame order"
            );
        }
        *last = ts;
        ts
    }
}

/// Is the system clock synchronised? `timedatectl show -p NTPSynchronized
/// --value` says `yes` once systemd-timesyncd, chrony or ntpd synchronised
/// it. Without timedatectl the clock is trusted.
pub async fn ntp_synchronized() -> bool {
    match tokio::process::Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .output()
        .await
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim() == "yes",
        Ok(_) | Err(_) => {
            tracing::warn!("timedatectl is not available: trusting the system clock");
            true
        }
    }
}

/// Frames held before the clock is trusted, at most this many (then the
/// oldest go out with local times).
const MAX_HELD_FRAMES: usize = 500_000;

/// The stage between the pollers and the sealer: holds frames until the
/// clock is trusted (re-dating them), then passes every frame through,
/// handing each to `tap` (the MQTT mirror) on the way.
pub struct ClockGate {
    pub monitor: Arc<ClockMonitor>,
    pub require_sync: bool,
    pub wait_max: Duration,
    pub check_every: Duration,
}

impl ClockGate {
    pub async fn run<F, C, Fut>(
        self,
        mut frames: mpsc::Receiver<Frame>,
        out: mpsc::Sender<Frame>,
        mut tap: F,
        check: C,
    ) where
        F: FnMut(&Frame),
        C: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        if self.require_sync && !check().await {
            self.monitor.set_trusted(false);
            tracing::warn!(wait_max = ?self.wait_max, "system clock not synchronised yet: holding frames to re-date them");
            let (wall0, mono0) = (now_ms(), Instant::now());
            let mut held: VecDeque<Frame> = VecDeque::new();
            let mut ticker = tokio::time::interval(self.check_every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let released_by_sync = loop {
                tokio::select! {
                    frame = frames.recv() => match frame {
                        Some(frame) => {
                            held.push_back(frame);
                            if held.len() > MAX_HELD_FRAMES {
                                let frame = held.pop_front().expect("non-empty");
                                metrics::counter!("bess_edge_frames_undated_total").increment(1);
                                tap(&frame);
                                if out.send(frame).await.is_err() { return; }
                            }
                            self.monitor.held_frames.store(held.len() as u64, Ordering::Relaxed);
                        }
                        None => break false,
                    },
                    _ = ticker.tick() => {
                        if check().await { break true; }
                        if mono0.elapsed() >= self.wait_max { break false; }
                    }
                }
            };
            let step = if released_by_sync {
                redate_step(wall0, mono0, now_ms(), Instant::now())
            } else {
                0
            };
            if released_by_sync {
                tracing::info!(
                    frames = held.len(),
                    step_ms = step,
                    "system clock synchronised: re-dating held frames"
                );
            } else {
                tracing::warn!(
                    frames = held.len(),
                    "clock still not synchronised: sending held frames with local times"
                );
                metrics::counter!("bess_edge_frames_undated_total").increment(held.len() as u64);
            }
            for mut frame in held {
                frame.ts_ms += step;
                tap(&frame);
                if out.send(frame).await.is_err() {
                    return;
                }
            }
            self.monitor.held_frames.store(0, Ordering::Relaxed);
            self.monitor.set_trusted(true);
        }
        while let Some(frame) = frames.recv().await {
            tap(&frame);
            if out.send(frame).await.is_err() {
                return;
            }
        }
    }
}

/// How far the wall clock moved beyond the monotonic clock since the anchor.
fn redate_step(wall0: i64, mono0: Instant, wall_now: i64, mono_now: Instant) -> i64 {
    (wall_now - wall0) - mono_now.saturating_duration_since(mono0).as_millis() as i64
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

    #[test]
    fn a_wall_clock_jump_beyond_the_threshold_is_counted_as_a_step() {
        let monitor = ClockMonitor::new(Duration::from_secs(1));
        let t0 = Instant::now();
        *monitor.anchor.lock().unwrap() = (10_000, t0);
        assert_eq!(
            monitor.observe(10_500, t0 + Duration::from_millis(500)),
            None,
            "in step"
        );
        assert_eq!(
            monitor.observe(11_400, t0 + Duration::from_millis(1000)),
            None,
            "slew within threshold"
        );
        assert_eq!(
            monitor.observe(3_600_000, t0 + Duration::from_millis(2000)),
            Some(3_600_000 - 12_400)
        );
        assert_eq!(
            monitor.observe(3_601_000, t0 + Duration::from_millis(3000)),
            None,
            "re-anchored after the step"
        );
        let status = monitor.status();
        assert_eq!(status.steps, 1);
        assert_eq!(status.last_step_ms, Some(3_600_000 - 12_400));
    }

    #[test]
    fn held_frames_are_moved_by_the_step_the_clock_made() {
        let mono0 = Instant::now();
        // 10 s passed; the wall clock jumped from 1970-ish to now: +1 h.
        let step = redate_step(
            1_000,
            mono0,
            1_000 + 10_000 + 3_600_000,
            mono0 + Duration::from_secs(10),
        );
        assert_eq!(step, 3_600_000);
    }

    #[tokio::test]
    async fn the_gate_holds_frames_until_the_clock_is_trusted() {
        use bess_protocol::GroupIndex;
        let monitor = Arc::new(ClockMonitor::default());
        let gate = ClockGate {
            monitor: monitor.clone(),
            require_sync: true,
            wait_max: Duration::from_secs(600),
            check_every: Duration::from_millis(10),
        };
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let synced = Arc::new(AtomicBool::new(false));
        let flag = synced.clone();
        let task = tokio::spawn(gate.run(
            rx,
            out_tx,
            |_| {},
            move || {
                let flag = flag.clone();
                async move { flag.load(Ordering::Relaxed) }
            },
        ));
        for ts_ms in [1, 2, 3] {
            tx.send(Frame {
                group: GroupIndex(0),
                ts_ms,
                values: vec![],
            })
            .await
            .unwrap();
        }
        while monitor.status().held_frames < 3 {
            tokio::task::yield_now().await;
        }
        assert!(
            out_rx.try_recv().is_err(),
            "nothing passes before the clock is trusted"
        );
        assert!(!monitor.status().trusted);
        synced.store(true, Ordering::Relaxed);
        let first = out_rx.recv().await.unwrap();
        assert!(first.ts_ms >= 1);
        drop(tx);
        task.await.unwrap();
        assert!(monitor.status().trusted);
    }
}
