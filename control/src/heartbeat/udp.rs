//! Heartbeats over the management network: a sender thread and a receiver thread on one
//! kernel UDP socket (bound to `node.mgmt`, so peers see heartbeats come from there).
//!
//! Thin by design: the receiver only reads datagrams, hands them to [`Ingress`] (all the
//! rules), counts, logs with a rate limit and forwards accepted heartbeats on a bounded
//! crossbeam channel without ever blocking. The sender only stamps, encodes and sends.
//! Both poll a stop flag (socket read timeout / short sleeps), so they stop within
//! `poll` of the flag being set.

use super::ingress::{HbCounters, Ingress, Reject, Rejected};
use super::ratelimit::LogLimiter;
use super::wire::{
    encode_into, HbRole, Heartbeat, MacKey, NodeId, StatusFlags, Tlv, Workload, MAX_LEN,
};
use crossbeam_channel::{Sender, TrySendError};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One accepted heartbeat, as the control thread receives it.
#[derive(Clone, Debug)]
pub struct HbEvent {
    /// The (configured, authenticated) sender.
    pub peer: NodeId,
    pub hb: Heartbeat,
    /// Local monotonic receive time: the detector's clock.
    pub received_at: Instant,
    /// Source address of the datagram (informational: the MAC, not the address, is trusted).
    pub from: SocketAddr,
}

/// Where rejected-message log lines go (stderr by default; tests capture them).
pub type LogSink = Box<dyn FnMut(&str) + Send>;

/// The default sink: one `tapsplice: heartbeat: ...` line on stderr.
pub fn stderr_sink() -> LogSink {
    Box::new(|line: &str| eprintln!("tapsplice: heartbeat: {line}"))
}

/// Current wall clock in µs since the UNIX epoch (0 if the clock is before 1970).
pub fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// An incarnation for a process starting now: the wall clock in µs, and strictly above
/// `previous` if one is known (e.g. persisted), so a clock stepped backwards cannot make a
/// restarted node look older than its previous life.
pub fn next_incarnation(now_us: u64, previous: Option<u64>) -> u64 {
    match previous {
        Some(p) => now_us.max(p.saturating_add(1)),
        None => now_us.max(1),
    }
}

/// Receiver settings.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    pub key: MacKey,
    /// Node ids heartbeats are accepted from (`[[peer]]` ids).
    pub peers: Vec<NodeId>,
    /// Socket read timeout = how often the stop flag is checked.
    pub poll: Duration,
    /// Log lines about rejected datagrams per second, at most.
    pub log_lines_per_sec: u32,
}

impl ReceiverConfig {
    pub fn new(key: MacKey, peers: Vec<NodeId>) -> ReceiverConfig {
        ReceiverConfig {
            key,
            peers,
            poll: Duration::from_millis(50),
            log_lines_per_sec: 5,
        }
    }
}

/// The receiving half: read, [`Ingress::accept`], count, forward.
pub struct Receiver {
    socket: UdpSocket,
    ingress: Ingress,
    events: Sender<HbEvent>,
    counters: Arc<HbCounters>,
    stop: Arc<AtomicBool>,
    limiter: LogLimiter,
    log: LogSink,
}

impl Receiver {
    /// Sets the socket's read timeout to `cfg.poll`. Use a bounded channel: when the
    /// control thread lags, heartbeats are dropped (`queue_full`), never queued forever.
    pub fn new(
        socket: UdpSocket,
        cfg: ReceiverConfig,
        events: Sender<HbEvent>,
        counters: Arc<HbCounters>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Receiver> {
        socket.set_read_timeout(Some(cfg.poll.max(Duration::from_millis(1))))?;
        Ok(Receiver {
            socket,
            ingress: Ingress::new(cfg.key, cfg.peers),
            events,
            counters,
            stop,
            limiter: LogLimiter::new(cfg.log_lines_per_sec),
            log: stderr_sink(),
        })
    }

    /// Sends rejected-message log lines to `sink` instead of stderr.
    pub fn with_log(mut self, sink: LogSink) -> Receiver {
        self.log = sink;
        self
    }

    /// Runs [`Receiver::run`] on a thread named `tapsplice-hb-rx`.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("tapsplice-hb-rx".into())
            .spawn(move || self.run())
    }

    /// Receives until the stop flag is set or the event channel is disconnected.
    pub fn run(mut self) {
        let mut buf = vec![0u8; MAX_LEN + 1];
        while !self.stop.load(Ordering::Relaxed) {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let now = Instant::now();
                    if !self.handle(&buf[..n], from, now) {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    self.counters.recv_errors.fetch_add(1, Ordering::Relaxed);
                    self.log_line(Instant::now(), &format!("receive error: {e}"));
                    // Do not spin on a persistent error.
                    thread::sleep(Duration::from_millis(10));
                }
            }
            if let Some(n) = self.limiter.flush(Instant::now()) {
                (self.log)(&format!(
                    "{n} more rejected heartbeat messages were not logged"
                ));
            }
        }
    }

    /// One datagram; false when the control side has gone away.
    fn handle(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) -> bool {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let r = self.ingress.accept(bytes);
        self.counters.record(&r);
        match r {
            // Restarts are counted (`restarts`) and become detector events; not logged here.
            Ok((hb, _fresh)) => {
                let ev = HbEvent {
                    peer: hb.node.clone(),
                    hb,
                    received_at: now,
                    from,
                };
                match self.events.try_send(ev) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(TrySendError::Disconnected(_)) => false,
                }
            }
            Err(rej) => {
                let line = describe(&rej, from, bytes.len());
                self.log_line(now, &line);
                true
            }
        }
    }

    fn log_line(&mut self, now: Instant, line: &str) {
        match self.limiter.admit(now) {
            Some(0) => (self.log)(line),
            Some(n) => (self.log)(&format!("{line} ({n} similar messages suppressed)")),
            None => {
                self.counters.log_suppressed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn describe(rej: &Rejected, from: SocketAddr, len: usize) -> String {
    match (&rej.reason, &rej.node) {
        (Reject::Replay(_), Some(node)) => format!(
            "rejected heartbeat from {from} ({len} bytes): {} (node {node}, incarnation {}, seq {})",
            rej.reason, rej.incarnation, rej.seq
        ),
        _ => format!("rejected datagram from {from} ({len} bytes): {}", rej.reason),
    }
}

/// What this node currently reports about itself; the control thread updates it, the
/// sender reads it every interval.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalStatus {
    pub role: HbRole,
    pub workload: Workload,
    pub status: StatusFlags,
    pub tlvs: Vec<Tlv>,
}

/// Shared [`LocalStatus`] (a mutex held only for a copy, by two threads).
#[derive(Debug)]
pub struct StatusCell(Mutex<LocalStatus>);

impl StatusCell {
    pub fn new(s: LocalStatus) -> StatusCell {
        StatusCell(Mutex::new(s))
    }
    pub fn set(&self, s: LocalStatus) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
    pub fn update(&self, f: impl FnOnce(&mut LocalStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()));
    }
    pub fn get(&self) -> LocalStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Sender settings.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    pub node: NodeId,
    /// From [`next_incarnation`] at process start.
    pub incarnation: u64,
    pub interval: Duration,
    /// Every peer's `mgmt` address.
    pub peers: Vec<SocketAddr>,
    pub key: MacKey,
    /// Longest sleep between stop-flag checks.
    pub poll: Duration,
    /// Every encoded heartbeat is also offered here (the in-band path sends the same
    /// message, so both paths carry one sequence number); a full queue skips a round.
    pub mirror: Option<crossbeam_channel::Sender<Vec<u8>>>,
}

/// The sending half: every `interval`, one heartbeat (same sequence number) to each peer.
pub struct HbSender {
    socket: UdpSocket,
    cfg: SenderConfig,
    status: Arc<StatusCell>,
    counters: Arc<HbCounters>,
    stop: Arc<AtomicBool>,
    seq: u64,
    buf: Vec<u8>,
    limiter: LogLimiter,
    log: LogSink,
}

impl HbSender {
    pub fn new(
        socket: UdpSocket,
        cfg: SenderConfig,
        status: Arc<StatusCell>,
        counters: Arc<HbCounters>,
        stop: Arc<AtomicBool>,
    ) -> HbSender {
        HbSender {
            socket,
            cfg,
            status,
            counters,
            stop,
            seq: 0,
            buf: Vec::with_capacity(MAX_LEN),
            limiter: LogLimiter::new(5),
            log: stderr_sink(),
        }
    }

    pub fn with_log(mut self, sink: LogSink) -> HbSender {
        self.log = sink;
        self
    }

    /// Builds the next heartbeat (advances the sequence number).
    pub fn next_heartbeat(&mut self) -> Heartbeat {
        let s = self.status.get();
        self.seq = self.seq.wrapping_add(1);
        Heartbeat {
            node: self.cfg.node.clone(),
            incarnation: self.cfg.incarnation,
            seq: self.seq,
            role: s.role,
            workload: s.workload,
            status: s.status,
            sent_at_us: now_unix_us(),
            tlvs: s.tlvs,
        }
    }

    /// Sends one round (one datagram per peer); returns how many were sent.
    pub fn send_round(&mut self) -> usize {
        let hb = self.next_heartbeat();
        self.buf.clear();
        if let Err(e) = encode_into(&hb, &self.cfg.key, &mut self.buf) {
            self.counters
                .send_errors
                .fetch_add(self.cfg.peers.len() as u64, Ordering::Relaxed);
            self.log_line(&format!("cannot encode heartbeat: {e}"));
            return 0;
        }
        if let Some(m) = &self.cfg.mirror {
            let _ = m.try_send(self.buf.clone());
        }
        let mut sent = 0;
        for i in 0..self.cfg.peers.len() {
            let to = self.cfg.peers[i];
            match self.socket.send_to(&self.buf, to) {
                Ok(_) => {
                    sent += 1;
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    self.log_line(&format!("send to {to} failed: {e}"));
                }
            }
        }
        sent
    }

    fn log_line(&mut self, line: &str) {
        match self.limiter.admit(Instant::now()) {
            Some(0) => (self.log)(line),
            Some(n) => (self.log)(&format!("{line} ({n} similar messages suppressed)")),
            None => {}
        }
    }

    /// Runs [`HbSender::run`] on a thread named `tapsplice-hb-tx`.
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("tapsplice-hb-tx".into())
            .spawn(move || self.run())
    }

    /// Sends on a fixed schedule (start + n·interval, so sleep overshoot does not
    /// accumulate; rounds missed while descheduled are skipped, not burst) until stopped.
    pub fn run(mut self) {
        let interval = self.cfg.interval.max(Duration::from_millis(1));
        let poll = self.cfg.poll.max(Duration::from_millis(1));
        let mut next = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                self.send_round();
                next += interval;
                if next <= now {
                    next = now + interval;
                }
            } else {
                thread::sleep((next - now).min(poll));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_increase() {
        assert_eq!(next_incarnation(0, None), 1);
        assert_eq!(next_incarnation(500, None), 500);
        assert_eq!(next_incarnation(500, Some(100)), 500);
        assert_eq!(next_incarnation(500, Some(900)), 901);
        assert_eq!(next_incarnation(5, Some(u64::MAX)), u64::MAX);
        assert!(now_unix_us() > 1_600_000_000_000_000);
    }

    #[test]
    fn status_cell_round_trip() {
        let c = StatusCell::new(LocalStatus {
            role: HbRole::Appliance,
            workload: Workload::FULL,
            status: StatusFlags::default(),
            tlvs: vec![],
        });
        c.update(|s| s.status.draining = true);
        assert!(c.get().status.draining);
    }
}
