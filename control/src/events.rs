//! The control thread's event log: every decision (peer up/down, fence started/ok/failed,
//! takeover phase) as one timestamped line, kept bounded for `tapsplice ctl events` and
//! echoed to stderr.

use crate::ctl::proto::Event;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most recent events kept.
pub const EVENT_LOG: usize = 1024;

/// Shared by the control thread (writer) and the ctl connections (readers).
#[derive(Clone, Debug, Default)]
pub struct EventLog(Arc<Mutex<VecDeque<Event>>>);

impl EventLog {
    pub fn new() -> EventLog {
        EventLog::default()
    }

    /// Logs an event stamped now; `loud` ones are errors on stderr.
    pub fn push(&self, kind: &str, node: Option<&str>, message: String, loud: bool) {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.push_at(ts, kind, node, message, loud);
    }

    pub fn push_at(&self, ts_unix_ms: u64, kind: &str, node: Option<&str>, message: String, loud: bool) {
        if loud {
            eprintln!("tapsplice: ERROR: {message}");
        } else {
            eprintln!("tapsplice: {message}");
        }
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= EVENT_LOG {
            log.pop_front();
        }
        log.push_back(Event { ts_unix_ms, kind: kind.to_string(), node: node.map(str::to_string), message });
    }

    /// Every event kept, oldest first.
    pub fn snapshot(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_keeps_the_newest() {
        let log = EventLog::new();
        for i in 0..EVENT_LOG + 5 {
            log.push_at(i as u64, "peer_up", Some("a"), format!("e{i}"), false);
        }
        let s = log.snapshot();
        assert_eq!(s.len(), EVENT_LOG);
        assert_eq!(s[0].ts_unix_ms, 5);
        assert_eq!(s.last().unwrap().message, format!("e{}", EVENT_LOG + 4));
    }
}
