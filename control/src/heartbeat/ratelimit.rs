//! Rate limiting of log lines about rejected messages.
//!
//! A peer with the wrong key, or an attacker, can send thousands of bad heartbeats per
//! second; logging each would flood the journal and cost more than the drop itself. At most
//! `per_sec` lines are let through per one-second window; the rest are counted and the
//! count is reported with the next line that is let through (or by [`LogLimiter::flush`]
//! when the flood stops). Pure: the caller passes the clock.

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct LogLimiter {
    per_sec: u32,
    window_start: Option<Instant>,
    emitted: u32,
    suppressed: u64,
    total_suppressed: u64,
}

impl LogLimiter {
    /// At most `per_sec` lines per second (0 = log nothing, count everything).
    pub fn new(per_sec: u32) -> LogLimiter {
        LogLimiter {
            per_sec,
            window_start: None,
            emitted: 0,
            suppressed: 0,
            total_suppressed: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.emitted = 0;
            }
        }
    }

    /// May a line be logged now? `Some(n)`: yes, and `n` lines were suppressed since the
    /// last one let through (say so in the line). `None`: suppressed and counted.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        self.roll(now);
        if self.emitted < self.per_sec {
            self.emitted += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            self.total_suppressed += 1;
            None
        }
    }

    /// Call periodically: `Some(n)` once the window in which `n` lines were suppressed
    /// is over and no line has reported them yet (log "n messages suppressed").
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed == 0 || self.per_sec == 0 {
            return None;
        }
        let expired = match self.window_start {
            Some(s) => now.saturating_duration_since(s) >= WINDOW,
            None => true,
        };
        if !expired {
            return None;
        }
        self.roll(now);
        self.emitted += 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Lines suppressed since creation.
    pub fn total_suppressed(&self) -> u64 {
        self.total_suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_second_and_reports_suppressed() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(3);
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0 + Duration::from_millis(10)), Some(0));
        for _ in 0..10 {
            assert_eq!(l.admit(t0 + Duration::from_millis(500)), None);
        }
        assert_eq!(l.flush(t0 + Duration::from_millis(900)), None);
        // Next window: the first line carries the count.
        assert_eq!(l.admit(t0 + Duration::from_millis(1000)), Some(10));
        assert_eq!(l.admit(t0 + Duration::from_millis(1001)), Some(0));
        assert_eq!(l.total_suppressed(), 10);
    }

    #[test]
    fn flush_reports_a_flood_that_stopped() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(1);
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0), None);
        assert_eq!(l.admit(t0), None);
        assert_eq!(l.flush(t0 + Duration::from_millis(999)), None);
        assert_eq!(l.flush(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(l.flush(t0 + Duration::from_secs(5)), None);
        // The flush used the new window's line.
        assert_eq!(l.admit(t0 + Duration::from_millis(1500)), None);
    }

    #[test]
    fn zero_logs_nothing() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(0);
        assert_eq!(l.admit(t0), None);
        assert_eq!(l.flush(t0 + Duration::from_secs(9)), None);
        assert_eq!(l.total_suppressed(), 1);
    }
}
