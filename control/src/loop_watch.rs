//! How punctually the control thread's loop runs.
//!
//! The control thread ticks the failure detector, rebuilds balance tables and fences; it
//! does so from a loop that sleeps one period (at most half a heartbeat interval) between
//! iterations. If the thread is not run — a starved CPU, a signal storm (docs/heartbeat.md,
//! "The control thread and net_tap's signals"), a hypervisor pause — every decision waits
//! with it, and nothing else would show why. [`LoopWatch`] measures the gap between
//! iterations: a gap over two periods is *late*, one over [`LoopWatch::stall_after`] is a
//! *stall*, which the run loop also logs as an event (`ctl events`, kind
//! `control_stall`). `ctl status` and the metrics show the counts and the largest gap.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What `ctl status` and the metrics show of the control loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoopStats {
    /// The loop's sleep between iterations, ms.
    pub period_ms: f64,
    pub iterations: u64,
    /// Iterations that came more than two periods after the previous one.
    pub late: u64,
    /// Iterations that came more than the stall bound after the previous one.
    pub stalls: u64,
    /// The largest gap between two iterations since the start, ms.
    pub max_gap_ms: f64,
}

impl LoopStats {
    /// One line for people: `loop every 25 ms, largest gap 28 ms, 0 late (> 2 periods),
    /// 0 stalls` (`ctl status`, the report).
    pub fn describe(&self) -> String {
        format!(
            "loop every {:.0} ms, largest gap {:.0} ms, {} late (> 2 periods), {} stalls",
            self.period_ms, self.max_gap_ms, self.late, self.stalls
        )
    }
}

pub struct LoopWatch {
    period: Duration,
    stall_after: Duration,
    prev: Option<Instant>,
    stats: LoopStats,
}

impl LoopWatch {
    pub fn new(period: Duration) -> LoopWatch {
        LoopWatch {
            period,
            stall_after: Self::stall_after(period),
            prev: None,
            stats: LoopStats { period_ms: period.as_secs_f64() * 1e3, ..LoopStats::default() },
        }
    }

    /// The gap that counts as a stall: ten periods, and at least 250 ms (well past any
    /// scheduling noise, and past the detector bound of the rack defaults, 3 × 10 ms).
    pub fn stall_after(period: Duration) -> Duration {
        (period * 10).max(Duration::from_millis(250))
    }

    /// One iteration of the loop at `now`. Returns the gap when it was a stall.
    pub fn tick(&mut self, now: Instant) -> Option<Duration> {
        self.stats.iterations += 1;
        let prev = self.prev.replace(now)?;
        let gap = now.saturating_duration_since(prev);
        self.stats.max_gap_ms = self.stats.max_gap_ms.max(gap.as_secs_f64() * 1e3);
        if gap > self.period * 2 {
            self.stats.late += 1;
        }
        if gap > self.stall_after {
            self.stats.stalls += 1;
            return Some(gap);
        }
        None
    }

    pub fn stats(&self) -> LoopStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_counted_as_late_and_stalls_by_their_length() {
        let p = Duration::from_millis(25);
        let mut w = LoopWatch::new(p);
        let t0 = Instant::now();
        assert_eq!(w.tick(t0), None, "the first iteration has no gap");
        assert_eq!(w.tick(t0 + p), None);
        assert_eq!(w.stats().late, 0);
        // Exactly two periods is not late; a little more is.
        assert_eq!(w.tick(t0 + p * 3), None);
        assert_eq!(w.stats().late, 0);
        assert_eq!(w.tick(t0 + p * 5 + Duration::from_millis(1)), None);
        assert_eq!(w.stats().late, 1);
        // 250 ms is the bound here (10 periods); past it is a stall, and late too.
        let t = t0 + p * 5 + Duration::from_millis(1);
        assert_eq!(w.tick(t + Duration::from_millis(250)), None);
        let stall = w.tick(t + Duration::from_millis(250) + Duration::from_millis(4200));
        assert_eq!(stall, Some(Duration::from_millis(4200)));
        let s = w.stats();
        assert_eq!((s.iterations, s.late, s.stalls), (6, 3, 1));
        assert!((s.max_gap_ms - 4200.0).abs() < 1e-6, "{}", s.max_gap_ms);
        assert!((s.period_ms - 25.0).abs() < 1e-9);
        assert_eq!(s.describe(), "loop every 25 ms, largest gap 4200 ms, 3 late (> 2 periods), 1 stalls");
    }

    #[test]
    fn the_stall_bound_is_ten_periods_and_at_least_a_quarter_second() {
        assert_eq!(LoopWatch::stall_after(Duration::from_millis(5)), Duration::from_millis(250));
        assert_eq!(LoopWatch::stall_after(Duration::from_millis(50)), Duration::from_millis(500));
    }

    #[test]
    fn a_clock_that_does_not_advance_is_no_gap() {
        let mut w = LoopWatch::new(Duration::from_millis(25));
        let t0 = Instant::now();
        w.tick(t0);
        assert_eq!(w.tick(t0), None);
        assert_eq!(w.stats().max_gap_ms, 0.0);
    }
}
