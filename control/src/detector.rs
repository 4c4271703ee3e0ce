//! The failure detector: accepted heartbeats and a clock in, peer states and timestamped
//! decisions out (docs/heartbeat.md, "Detector").
//!
//! Pure (sans-IO): the caller feeds [`Detector::on_heartbeat`] with each accepted heartbeat
//! and its local receive time, and calls [`Detector::tick`] periodically. Every state
//! change and every observed restart is returned as an [`Event`] (so the caller can rebuild
//! balance tables, fence, re-splice) and kept in a bounded log (for `ctl` and post-mortems).
//!
//! Rules, per peer with heartbeat interval `i` and K missed intervals:
//! - `Unknown` until the first heartbeat, then `Up` (or `AppDown` if the heartbeat says
//!   the application is not alive). A never-heard peer is never declared `Down`: nothing
//!   is known about it, and it must never be fenced on the strength of silence at start-up.
//! - `Up`/`AppDown` → `Down` when no heartbeat was accepted for K·i. With a tick period
//!   `p`, the declaration happens between K·i and K·i + p after the last heartbeat; the
//!   caller must tick at least every i/2 ([`Detector::max_tick_period`]) to stay within
//!   (K+1)·i. Counted from the failure itself this is ((K−1)·i, K·i + p], as the thesis
//!   (§4.8.3 proxy failovers: "between 2t and 3t" for K = 3).
//! - `Down` → `Up` only after M ([`DetectorConfig::recovery_heartbeats`]) consecutive
//!   on-time heartbeats (gap ≤ `on_time_factor`·i; the first after the silence counts 1).
//! - `Up` ↔ `AppDown` immediately on the heartbeat's `app_alive` flag: the machine answers
//!   but its application does not (thesis §3.6.2), which calls for a different action than
//!   a dead machine.
//! - Flap damping: a state change that makes more than `flap_max_transitions` changes
//!   within `flap_window` sends the peer to `HeldDown` for `flap_hold_down`; at expiry it
//!   goes to `Up`/`AppDown` if its heartbeats are currently healthy (heard within K·i and M
//!   on time), else to `Down`.
//! - A higher incarnation is a restart: an event with unchanged state, the workload
//!   smoothing restarts from the new value.

use crate::config::{PeerClass, PeerConfig, TimersConfig};
use crate::heartbeat::udp::HbEvent;
use crate::heartbeat::wire::{HbRole, Heartbeat, NodeId};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// A peer's liveness as the detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// No heartbeat accepted yet.
    Unknown,
    /// Heartbeats on time, application alive.
    Up,
    /// Heartbeats on time but the application is reported dead: the machine is reachable
    /// (no fence needed to stop it speaking), its service is not.
    AppDown,
    /// K intervals without a heartbeat (or not yet stable again after that).
    Down,
    /// Flapping: kept out of service until the hold-down expires.
    HeldDown,
}

impl PeerState {
    /// Every state, for exposing one gauge per state.
    pub const ALL: [PeerState; 5] = [
        PeerState::Unknown,
        PeerState::Up,
        PeerState::AppDown,
        PeerState::Down,
        PeerState::HeldDown,
    ];
    /// Stable snake_case name (metrics label, ctl JSON).
    pub fn as_str(&self) -> &'static str {
        match self {
            PeerState::Unknown => "unknown",
            PeerState::Up => "up",
            PeerState::AppDown => "app_down",
            PeerState::Down => "down",
            PeerState::HeldDown => "held_down",
        }
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a decision was taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reason {
    /// The first heartbeat of an `Unknown` peer.
    FirstHeartbeat,
    /// No heartbeat for `silent` ≥ `intervals` × interval.
    Missed { intervals: u32, silent: Duration },
    /// `on_time` consecutive on-time heartbeats after a `Down`.
    Recovered { on_time: u32 },
    /// A heartbeat with `app_alive = false`.
    AppReportedDown,
    /// A heartbeat with `app_alive = true` after `AppDown`.
    AppReportedUp,
    /// `transitions` state changes within `window`: held down.
    Flapping { transitions: u32, window: Duration },
    /// The hold-down time is over.
    HoldDownExpired,
    /// The peer restarted (higher incarnation); its state is unchanged.
    Restarted { previous: u64, current: u64 },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::FirstHeartbeat => write!(f, "first heartbeat"),
            Reason::Missed { intervals, silent } => {
                write!(
                    f,
                    "no heartbeat for {:.1} ms ({intervals} intervals)",
                    silent.as_secs_f64() * 1e3
                )
            }
            Reason::Recovered { on_time } => write!(f, "{on_time} heartbeats on time"),
            Reason::AppReportedDown => write!(f, "application reported down"),
            Reason::AppReportedUp => write!(f, "application reported up"),
            Reason::Flapping {
                transitions,
                window,
            } => {
                write!(
                    f,
                    "{transitions} state changes within {} ms",
                    window.as_millis()
                )
            }
            Reason::HoldDownExpired => write!(f, "hold-down expired"),
            Reason::Restarted { previous, current } => {
                write!(f, "restarted (incarnation {previous} -> {current})")
            }
        }
    }
}

/// One decision. `from == to` only for [`Reason::Restarted`].
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Monotonic time of the decision (the `now` passed in).
    pub at: Instant,
    /// The same moment on the wall clock, for logs and operators.
    pub wall: SystemTime,
    pub peer: NodeId,
    pub from: PeerState,
    pub to: PeerState,
    pub reason: Reason,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer {}: {} -> {}: {}",
            self.peer, self.from, self.to, self.reason
        )
    }
}

/// Rack-wide detector settings (from `[timers]`).
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    pub flap_damping: bool,
    pub flap_window: Duration,
    /// More changes than this within `flap_window` hold the peer down.
    pub flap_max_transitions: u32,
    pub flap_hold_down: Duration,
    /// Exponential smoothing factor α ∈ (0, 1] of W: W̄ ← α·W + (1−α)·W̄.
    pub weight_smoothing: f64,
    /// M: consecutive on-time heartbeats needed to come back from `Down`.
    pub recovery_heartbeats: u32,
    /// A heartbeat is on time if it follows the previous one within this many intervals.
    pub on_time_factor: f64,
    /// Events kept in the log (oldest dropped first).
    pub log_capacity: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig::from_timers(&TimersConfig::default())
    }
}

impl DetectorConfig {
    /// Takes the `[timers]` keys; M = 3, on-time factor 1.5, log of 1024 events.
    pub fn from_timers(t: &TimersConfig) -> DetectorConfig {
        DetectorConfig {
            flap_damping: t.flap_damping,
            flap_window: Duration::from_millis(u64::from(t.flap_window_ms)),
            flap_max_transitions: t.flap_max_transitions,
            flap_hold_down: Duration::from_millis(u64::from(t.flap_hold_down_ms)),
            weight_smoothing: t.weight_smoothing,
            recovery_heartbeats: 3,
            on_time_factor: 1.5,
            log_capacity: 1024,
        }
    }
}

/// One monitored peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSpec {
    pub id: NodeId,
    pub class: PeerClass,
    /// The peer's heartbeat interval.
    pub interval: Duration,
    /// K: missed intervals before `Down` (0 is treated as 1).
    pub missed: u32,
}

impl PeerSpec {
    /// From a `[[peer]]`: interval from `timers.heartbeat_interval_ms`, K from the peer's
    /// `missed_intervals`, else its class's, else `timers.missed_intervals`. `None` if the
    /// id cannot travel in a heartbeat (see [`NodeId`]).
    pub fn from_config(p: &PeerConfig, t: &TimersConfig) -> Option<PeerSpec> {
        Some(PeerSpec {
            id: NodeId::new(&p.id)?,
            class: p.class,
            interval: Duration::from_millis(u64::from(t.heartbeat_interval_ms)),
            missed: p.missed_intervals.unwrap_or_else(|| t.missed_for(p.class)),
        })
    }
}

/// What is known about a peer, for the caller (balance weights, ctl, metrics).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerView {
    pub id: NodeId,
    pub class: PeerClass,
    pub state: PeerState,
    /// When the current state was entered (detector creation for `Unknown`).
    pub since: Instant,
    pub interval: Duration,
    pub missed: u32,
    pub last_heard: Option<Instant>,
    pub incarnation: Option<u64>,
    pub seq: Option<u64>,
    pub role: Option<HbRole>,
    /// Last reported workload factor W.
    pub workload: Option<f64>,
    /// Smoothed W̄ (what balance weights should use).
    pub workload_smoothed: Option<f64>,
    pub app_alive: bool,
    pub degraded: bool,
    pub draining: bool,
    /// Restarts seen (incarnation increases).
    pub restarts: u64,
    /// Heartbeats processed (not counting stale copies).
    pub heartbeats: u64,
    /// Heartbeats lost: sequence numbers skipped within an incarnation.
    pub heartbeats_lost: u64,
    /// Consecutive on-time heartbeats up to the last one.
    pub on_time: u32,
    /// End of the hold-down while `HeldDown`.
    pub held_until: Option<Instant>,
}

impl PeerView {
    /// Time since the last accepted heartbeat.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.last_heard.map(|l| now.saturating_duration_since(l))
    }
    /// The silence after which the peer is `Down`: K intervals.
    fn silence_bound(&self) -> Duration {
        mul(self.interval, self.missed)
    }
    /// `Up` and not draining: may be given new work.
    pub fn is_usable(&self) -> bool {
        self.state == PeerState::Up && !self.draining
    }
}

#[derive(Clone, Debug)]
struct Peer {
    view: PeerView,
    history: VecDeque<Instant>,
}

/// Counters of inputs the detector ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectorStats {
    /// Heartbeats for node ids that are not monitored.
    pub unknown_peer: u64,
    /// Heartbeats not newer than one already processed (second path, reordering).
    pub stale: u64,
    /// Events pushed out of the full log.
    pub log_dropped: u64,
}

/// The failure detector for the rack's peers.
#[derive(Clone, Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    peers: Vec<Peer>,
    index: HashMap<NodeId, usize>,
    log: VecDeque<Event>,
    stats: DetectorStats,
    anchor: (Instant, SystemTime),
}

fn mul(d: Duration, k: u32) -> Duration {
    d.checked_mul(k.max(1)).unwrap_or(Duration::MAX)
}

impl Detector {
    /// All peers start `Unknown` at `now`. Duplicate ids keep the first spec.
    pub fn new(cfg: DetectorConfig, peers: Vec<PeerSpec>, now: Instant) -> Detector {
        let mut d = Detector {
            cfg,
            peers: Vec::new(),
            index: HashMap::new(),
            log: VecDeque::new(),
            stats: DetectorStats::default(),
            anchor: (now, SystemTime::now()),
        };
        for s in peers {
            if d.index.contains_key(&s.id) {
                continue;
            }
            d.index.insert(s.id.clone(), d.peers.len());
            d.peers.push(Peer {
                view: PeerView {
                    id: s.id,
                    class: s.class,
                    state: PeerState::Unknown,
                    since: now,
                    interval: s.interval.max(Duration::from_micros(1)),
                    missed: s.missed.max(1),
                    last_heard: None,
                    incarnation: None,
                    seq: None,
                    role: None,
                    workload: None,
                    workload_smoothed: None,
                    app_alive: false,
                    degraded: false,
                    draining: false,
                    restarts: 0,
                    heartbeats: 0,
                    heartbeats_lost: 0,
                    on_time: 0,
                    held_until: None,
                },
                history: VecDeque::new(),
            });
        }
        d
    }

    /// Maps monotonic times to wall time through (`at`, `wall`) instead of the pair taken
    /// in [`Detector::new`] (deterministic tests, or a better-synchronised anchor).
    pub fn with_wall_anchor(mut self, at: Instant, wall: SystemTime) -> Detector {
        self.anchor = (at, wall);
        self
    }

    fn wall(&self, at: Instant) -> SystemTime {
        let (i, w) = self.anchor;
        if at >= i {
            w.checked_add(at - i).unwrap_or(w)
        } else {
            w.checked_sub(i - at).unwrap_or(w)
        }
    }

    /// The longest tick period that keeps every `Down` within (K+1) intervals of the last
    /// heartbeat: half the shortest interval.
    pub fn max_tick_period(&self) -> Duration {
        self.peers
            .iter()
            .map(|p| p.view.interval / 2)
            .min()
            .unwrap_or(Duration::from_millis(5))
    }

    /// The earliest time at which `tick` may change something (a silence reaching K·i, a
    /// hold-down ending); `None` if no timer runs. Lets the caller sleep precisely.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter_map(|p| match p.view.state {
                PeerState::Up | PeerState::AppDown => p
                    .view
                    .last_heard
                    .and_then(|l| l.checked_add(mul(p.view.interval, p.view.missed))),
                PeerState::HeldDown => p.view.held_until,
                _ => None,
            })
            .min()
    }

    /// A heartbeat event from the receiver (uses its `received_at`).
    pub fn on_event(&mut self, ev: &HbEvent) -> Vec<Event> {
        self.on_heartbeat(ev.peer.as_str(), &ev.hb, ev.received_at)
    }

    /// An accepted heartbeat from `peer`, received at `now`. Returns the decisions taken.
    pub fn on_heartbeat(&mut self, peer: &str, hb: &Heartbeat, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(&ix) = self.index.get(peer) else {
            self.stats.unknown_peer += 1;
            return out;
        };
        // A silence past the bound that no tick saw (the control thread was held up for
        // longer than the bound: a starved CPU) is still a failure, decided before this
        // heartbeat counts; otherwise the peer's restart or recovery would hide it. (Past,
        // not at: a heartbeat exactly one bound after the last shows the peer alive then.)
        let v = &self.peers[ix].view;
        if v.age(now).is_some_and(|silent| silent > v.silence_bound()) {
            self.step(ix, now, &mut out);
        }
        let alpha = self.cfg.weight_smoothing;
        let alpha = if alpha.is_finite() && alpha > 0.0 {
            alpha.min(1.0)
        } else {
            1.0
        };
        let on_time_factor = self.cfg.on_time_factor;
        let m = self.cfg.recovery_heartbeats.max(1);
        let p = &mut self.peers[ix].view;

        // Newer than anything processed? (The replay guard is per path; with two paths the
        // second copy arrives here and adds nothing.)
        let mut restarted = None;
        if let (Some(inc), Some(seq)) = (p.incarnation, p.seq) {
            if hb.incarnation < inc || (hb.incarnation == inc && hb.seq <= seq) {
                self.stats.stale += 1;
                return out;
            }
            if hb.incarnation > inc {
                restarted = Some(inc);
            }
        }

        // try_from: a NaN/infinite factor from a hand-built config must not panic.
        let slack = Duration::try_from_secs_f64(p.interval.as_secs_f64() * on_time_factor)
            .unwrap_or(Duration::MAX);
        let on_time = match p.last_heard {
            Some(l) => now.saturating_duration_since(l) <= slack,
            None => false,
        };
        p.on_time = if on_time {
            p.on_time.saturating_add(1)
        } else {
            1
        };
        p.heartbeats += 1;
        if let (Some(inc), Some(seq)) = (p.incarnation, p.seq) {
            if inc == hb.incarnation {
                p.heartbeats_lost = p.heartbeats_lost.saturating_add(hb.seq - seq - 1);
            }
        }
        p.last_heard = Some(now);
        p.incarnation = Some(hb.incarnation);
        p.seq = Some(hb.seq);
        p.role = Some(hb.role);
        p.app_alive = hb.status.app_alive;
        p.degraded = hb.status.degraded;
        p.draining = hb.status.draining;
        let w = hb.workload.as_f64();
        p.workload = Some(w);
        p.workload_smoothed = match (p.workload_smoothed, restarted) {
            (Some(prev), None) => Some(alpha * w + (1.0 - alpha) * prev),
            _ => Some(w),
        };
        let serving = if p.app_alive {
            PeerState::Up
        } else {
            PeerState::AppDown
        };
        let state = p.state;
        let streak = p.on_time;

        if let Some(previous) = restarted {
            p.restarts += 1;
            let ev = Event {
                at: now,
                wall: SystemTime::UNIX_EPOCH,
                peer: p.id.clone(),
                from: state,
                to: state,
                reason: Reason::Restarted {
                    previous,
                    current: hb.incarnation,
                },
            };
            self.emit(ev, &mut out);
        }

        match state {
            PeerState::Unknown => {
                self.transition(ix, serving, Reason::FirstHeartbeat, now, false, &mut out)
            }
            PeerState::Up if serving == PeerState::AppDown => {
                self.transition(ix, serving, Reason::AppReportedDown, now, true, &mut out)
            }
            PeerState::AppDown if serving == PeerState::Up => {
                self.transition(ix, serving, Reason::AppReportedUp, now, true, &mut out)
            }
            PeerState::Down if streak >= m => self.transition(
                ix,
                serving,
                Reason::Recovered { on_time: streak },
                now,
                true,
                &mut out,
            ),
            _ => {}
        }
        // A hold-down that ended between ticks ends now.
        self.step(ix, now, &mut out);
        out
    }

    /// Time-driven decisions for every peer. Call at least every
    /// [`Detector::max_tick_period`].
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        for ix in 0..self.peers.len() {
            self.step(ix, now, &mut out);
        }
        out
    }

    fn step(&mut self, ix: usize, now: Instant, out: &mut Vec<Event>) {
        let m = self.cfg.recovery_heartbeats.max(1);
        let p = &self.peers[ix].view;
        let silent = p.age(now);
        let limit = p.silence_bound();
        match p.state {
            PeerState::Up | PeerState::AppDown => {
                if let Some(s) = silent.filter(|s| *s >= limit) {
                    let reason = Reason::Missed {
                        intervals: p.missed,
                        silent: s,
                    };
                    self.transition(ix, PeerState::Down, reason, now, true, out);
                }
            }
            PeerState::HeldDown => {
                if p.held_until.map(|h| now >= h).unwrap_or(true) {
                    let healthy = silent.is_some_and(|s| s < limit) && p.on_time >= m;
                    let to = match (healthy, p.app_alive) {
                        (true, true) => PeerState::Up,
                        (true, false) => PeerState::AppDown,
                        (false, _) => PeerState::Down,
                    };
                    self.peers[ix].view.held_until = None;
                    self.transition(ix, to, Reason::HoldDownExpired, now, true, out);
                }
            }
            PeerState::Unknown | PeerState::Down => {}
        }
    }

    /// Moves peer `ix` to `to`, applying flap damping to counted changes.
    fn transition(
        &mut self,
        ix: usize,
        to: PeerState,
        reason: Reason,
        now: Instant,
        counted: bool,
        out: &mut Vec<Event>,
    ) {
        let cfg = &self.cfg;
        let peer = &mut self.peers[ix];
        let from = peer.view.state;
        if from == to {
            return;
        }
        let (mut to, mut reason) = (to, reason);
        if counted && cfg.flap_damping {
            while peer
                .history
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= cfg.flap_window)
            {
                peer.history.pop_front();
            }
            peer.history.push_back(now);
            let n = peer.history.len();
            if n > cfg.flap_max_transitions as usize {
                to = PeerState::HeldDown;
                reason = Reason::Flapping {
                    transitions: n as u32,
                    window: cfg.flap_window,
                };
                peer.view.held_until = Some(now.checked_add(cfg.flap_hold_down).unwrap_or(now));
                peer.history.clear();
            }
        }
        if from == to {
            return;
        }
        peer.view.state = to;
        peer.view.since = now;
        let ev = Event {
            at: now,
            wall: SystemTime::UNIX_EPOCH,
            peer: peer.view.id.clone(),
            from,
            to,
            reason,
        };
        self.emit(ev, out);
    }

    fn emit(&mut self, mut ev: Event, out: &mut Vec<Event>) {
        ev.wall = self.wall(ev.at);
        if self.cfg.log_capacity == 0 {
            self.stats.log_dropped += 1;
        } else {
            if self.log.len() >= self.cfg.log_capacity {
                self.log.pop_front();
                self.stats.log_dropped += 1;
            }
            self.log.push_back(ev.clone());
        }
        out.push(ev);
    }

    pub fn peer(&self, id: &str) -> Option<&PeerView> {
        self.index.get(id).map(|&i| &self.peers[i].view)
    }

    pub fn state(&self, id: &str) -> Option<PeerState> {
        self.peer(id).map(|p| p.state)
    }

    /// Every peer, in configuration order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerView> {
        self.peers.iter().map(|p| &p.view)
    }

    /// The event log, oldest first (at most `log_capacity`).
    pub fn log(&self) -> impl Iterator<Item = &Event> {
        self.log.iter()
    }

    pub fn stats(&self) -> DetectorStats {
        self.stats
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::wire::{StatusFlags, Workload};
    use proptest::prelude::*;

    const I: Duration = Duration::from_millis(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg() -> DetectorConfig {
        DetectorConfig {
            flap_damping: true,
            flap_window: ms(1000),
            flap_max_transitions: 3,
            flap_hold_down: ms(500),
            weight_smoothing: 0.5,
            recovery_heartbeats: 3,
            on_time_factor: 1.5,
            log_capacity: 1024,
        }
    }

    fn spec(id: &str, k: u32) -> PeerSpec {
        PeerSpec {
            id: NodeId::new(id).unwrap(),
            class: PeerClass::Proxy,
            interval: I,
            missed: k,
        }
    }

    /// A test peer that sends heartbeats with increasing seq.
    struct Src {
        id: &'static str,
        inc: u64,
        seq: u64,
        alive: bool,
        w: f64,
    }
    impl Src {
        fn new(id: &'static str) -> Src {
            Src {
                id,
                inc: 1,
                seq: 0,
                alive: true,
                w: 1.0,
            }
        }
        fn hb(&mut self) -> Heartbeat {
            self.seq += 1;
            Heartbeat {
                node: NodeId::new(self.id).unwrap(),
                incarnation: self.inc,
                seq: self.seq,
                role: HbRole::Proxy,
                workload: Workload::from_f64(self.w),
                status: StatusFlags {
                    app_alive: self.alive,
                    degraded: false,
                    draining: false,
                },
                sent_at_us: 0,
                tlvs: vec![],
            }
        }
    }

    fn send(d: &mut Detector, s: &mut Src, at: Instant) -> Vec<Event> {
        let hb = s.hb();
        d.on_heartbeat(s.id, &hb, at)
    }

    fn tos(evs: &[Event]) -> Vec<(PeerState, PeerState)> {
        evs.iter().map(|e| (e.from, e.to)).collect()
    }

    #[test]
    fn first_heartbeat_and_unknown_stays_unknown() {
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(), vec![spec("a", 3), spec("b", 3)], t0);
        assert!(d.tick(t0 + ms(10_000)).is_empty());
        assert_eq!(d.state("a"), Some(PeerState::Unknown));
        let mut a = Src::new("a");
        let ev = send(&mut d, &mut a, t0 + ms(10_001));
        assert_eq!(tos(&ev), vec![(PeerState::Unknown, PeerState::Up)]);
        assert_eq!(ev[0].reason, Reason::FirstHeartbeat);
        assert_eq!(d.state("b"), Some(PeerState::Unknown));
        assert_eq!(d.next_deadline(), Some(t0 + ms(10_031)));
    }

    #[test]
    fn down_after_k_intervals_not_before() {
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(), vec![spec("a", 3)], t0);
        let mut a = Src::new("a");
        for n in 0..5 {
            send(&mut d, &mut a, t0 + I * n);
        }
        let last = t0 + I * 4;
        assert!(d.tick(last + ms(29)).is_empty());
        assert_eq!(d.state("a"), Some(PeerState::Up));
        let ev = d.tick(last + ms(30));
        assert_eq!(tos(&ev), vec![(PeerState::Up, PeerState::Down)]);
        assert_eq!(
            ev[0].reason,
            Reason::Missed {
                intervals: 3,
                silent: ms(30)
            }
        );
        assert!(d.tick(last + ms(100)).is_empty());
        assert_eq!(d.log().count(), 2);
    }

    #[test]
    fn recovery_needs_m_on_time_heartbeats() {
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(), vec![spec("a", 3)], t0);
        let mut a = Src::new("a");
        send(&mut d, &mut a, t0);
        d.tick(t0 + ms(40));
        assert_eq!(d.state("a"), Some(PeerState::Down));
        // Resumes: 1st (streak 1), 2nd on time (2), then a late one resets to 1.
        assert!(send(&mut d, &mut a, t0 + ms(100)).is_empty());
        assert!(send(&mut d, &mut a, t0 + ms(110)).is_empty());
        assert!(send(&mut d, &mut a, t0 + ms(126)).is_empty()); // 16 ms > 1.5 i: late
        assert_eq!(d.peer("a").unwrap().on_time, 1);
        assert!(send(&mut d, &mut a, t0 + ms(136)).is_empty());
        let ev = send(&mut d, &mut a, t0 + ms(146));
        assert_eq!(tos(&ev), vec![(PeerState::Down, PeerState::Up)]);
        assert_eq!(ev[0].reason, Reason::Recovered { on_time: 3 });
    }

    #[test]
    fn app_down_is_not_machine_down() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.flap_max_transitions = 10; // four changes below; damping is tested apart
        let mut d = Detector::new(c, vec![spec("a", 3)], t0);
        let mut a = Src::new("a");
        a.alive = false;
        let ev = send(&mut d, &mut a, t0);
        assert_eq!(tos(&ev), vec![(PeerState::Unknown, PeerState::AppDown)]);
        a.alive = true;
        let ev = send(&mut d, &mut a, t0 + ms(10));
        assert_eq!(
            (tos(&ev), ev[0].reason),
            (
                vec![(PeerState::AppDown, PeerState::Up)],
                Reason::AppReportedUp
            )
        );
        a.alive = false;
        let ev = send(&mut d, &mut a, t0 + ms(20));
        assert_eq!(
            (tos(&ev), ev[0].reason),
            (
                vec![(PeerState::Up, PeerState::AppDown)],
                Reason::AppReportedDown
            )
        );
        assert!(!d.peer("a").unwrap().app_alive);
        // Heartbeats stop too: now the machine is down.
        let ev = d.tick(t0 + ms(50));
        assert_eq!(tos(&ev), vec![(PeerState::AppDown, PeerState::Down)]);
        // It comes back with the application still dead: AppDown after M heartbeats.
        for n in 0..2 {
            assert!(send(&mut d, &mut a, t0 + ms(200 + 10 * n)).is_empty());
        }
        let ev = send(&mut d, &mut a, t0 + ms(220));
        assert_eq!(tos(&ev), vec![(PeerState::Down, PeerState::AppDown)]);
    }

    #[test]
    fn flapping_is_held_down_then_released() {
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(), vec![spec("a", 1)], t0);
        let mut a = Src::new("a");
        let mut t = t0;
        send(&mut d, &mut a, t); // Unknown -> Up (not counted)
                                 // Alternate app flag: each heartbeat is a counted change.
        let mut states = vec![];
        for _ in 0..4 {
            t += ms(5);
            a.alive = !a.alive;
            let ev = send(&mut d, &mut a, t);
            states.push(ev[0].to);
        }
        assert_eq!(
            states,
            vec![
                PeerState::AppDown,
                PeerState::Up,
                PeerState::AppDown,
                PeerState::HeldDown
            ]
        );
        let held = d.log().last().unwrap().clone();
        assert_eq!(
            held.reason,
            Reason::Flapping {
                transitions: 4,
                window: ms(1000)
            }
        );
        assert_eq!(d.peer("a").unwrap().held_until, Some(t + ms(500)));
        // Heartbeats (healthy) while held: no change.
        a.alive = true;
        let held_at = t;
        while t < held_at + ms(495) {
            t += ms(5);
            assert!(send(&mut d, &mut a, t).is_empty());
            assert!(d.tick(t).is_empty());
        }
        t += ms(5);
        let ev = d.tick(t);
        assert_eq!(tos(&ev), vec![(PeerState::HeldDown, PeerState::Up)]);
        assert_eq!(ev[0].reason, Reason::HoldDownExpired);
        assert_eq!(
            d.next_deadline(),
            Some(d.peer("a").unwrap().last_heard.unwrap() + ms(10))
        );
    }

    #[test]
    fn hold_down_expiry_without_heartbeats_goes_down() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.flap_max_transitions = 1;
        let mut d = Detector::new(c, vec![spec("a", 3)], t0);
        let mut a = Src::new("a");
        send(&mut d, &mut a, t0);
        a.alive = false;
        send(&mut d, &mut a, t0 + ms(10)); // 1 change: AppDown
        a.alive = true;
        let ev = send(&mut d, &mut a, t0 + ms(20)); // 2nd: held
        assert_eq!(tos(&ev), vec![(PeerState::AppDown, PeerState::HeldDown)]);
        assert_eq!(d.next_deadline(), Some(t0 + ms(520)));
        let ev = d.tick(t0 + ms(520));
        assert_eq!(tos(&ev), vec![(PeerState::HeldDown, PeerState::Down)]);
    }

    #[test]
    fn changes_outside_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.flap_window = ms(100);
        c.flap_max_transitions = 2;
        // K = 10: the 60 ms between heartbeats stay within the bound.
        let mut d = Detector::new(c, vec![spec("a", 10)], t0);
        let mut a = Src::new("a");
        send(&mut d, &mut a, t0);
        let mut t = t0;
        for _ in 0..10 {
            t += ms(60); // at most 2 changes per 100 ms
            a.alive = !a.alive;
            let ev = send(&mut d, &mut a, t);
            assert_ne!(ev[0].to, PeerState::HeldDown);
        }
    }

    #[test]
    fn damping_off_never_holds() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.flap_damping = false;
        let mut d = Detector::new(c, vec![spec("a", 3)], t0);
        let mut a = Src::new("a");
        for n in 0..50 {
            a.alive = n % 2 == 0;
            send(&mut d, &mut a, t0 + ms(n));
            assert_ne!(d.state("a"), Some(PeerState::HeldDown));
        }
    }

    #[test]
    fn a_silence_no_tick_saw_is_still_a_failure() {
        // The control thread was held up for 100 ms (ten intervals, bound three): no tick
        // ran while the peer was silent, and the next thing it sees is the peer's restart.
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(), vec![spec("a", 3)], t0);
        let mut a = Src::new("a");
        send(&mut d, &mut a, t0);
        send(&mut d, &mut a, t0 + ms(10));
        a.inc = 2;
        a.seq = 0;
        let ev = send(&mut d, &mut a, t0 + ms(110));
        assert_eq!(tos(&ev), vec![(PeerState::Up, PeerState::Down), (PeerState::Down, PeerState::Down)]);
        assert_eq!(ev[0].reason, Reason::Missed { intervals: 3, silent: ms(100) });
        assert_eq!(ev[1].reason, Reason::Restarted { previous: 1, current: 2 });
        assert_eq!(d.state("a"), Some(PeerState::Down));
        // It comes back as any failed peer does: after three heartbeats on time.
        send(&mut d, &mut a, t0 + ms(120));
        let ev = send(&mut d, &mut a, t0 + ms(130));
        assert_eq!(tos(&ev), vec![(PeerState::Down, PeerState::Up)]);
        // The same incarnation after a gap: down, and not yet up.
        let ev = send(&mut d, &mut a, t0 + ms(200));
        assert_eq!(tos(&ev), vec![(PeerState::Up, PeerState::Down)]);
        // A gap within the bound changes nothing.
        let mut d = Detector::new(cfg(), vec![spec("b", 3)], t0);
        let mut b = Src::new("b");
        send(&mut d, &mut b, t0);
        assert!(send(&mut d, &mut b, t0 + ms(29)).is_empty());
        assert_eq!(d.state("b"), Some(PeerState::Up));
    }

    #[test]
    fn restart_is_an_event_and_resets_smoothing() {
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(), vec![spec("a", 3)], t0);
        let mut a = Src::new("a");
        a.w = 1.0;
        send(&mut d, &mut a, t0);
        a.w = 0.0;
        send(&mut d, &mut a, t0 + ms(10));
        assert_eq!(d.peer("a").unwrap().workload_smoothed, Some(0.5));
        a.w = 0.5;
        send(&mut d, &mut a, t0 + ms(20));
        assert_eq!(d.peer("a").unwrap().workload_smoothed, Some(0.5));
        a.w = 0.8;
        send(&mut d, &mut a, t0 + ms(30));
        assert!((d.peer("a").unwrap().workload_smoothed.unwrap() - 0.65).abs() < 1e-9);
        assert_eq!(d.peer("a").unwrap().workload, Some(0.8));
        a.inc = 7;
        a.seq = 0;
        a.w = 0.2;
        let ev = send(&mut d, &mut a, t0 + ms(40));
        assert_eq!(tos(&ev), vec![(PeerState::Up, PeerState::Up)]);
        assert_eq!(
            ev[0].reason,
            Reason::Restarted {
                previous: 1,
                current: 7
            }
        );
        let v = d.peer("a").unwrap();
        assert_eq!(
            (v.incarnation, v.seq, v.restarts, v.workload_smoothed),
            (Some(7), Some(1), 1, Some(0.2))
        );
    }

    #[test]
    fn stale_duplicate_and_unknown_heartbeats_are_ignored() {
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(), vec![spec("a", 3)], t0);
        let mut a = Src::new("a");
        let h1 = a.hb();
        let h2 = a.hb();
        d.on_heartbeat("a", &h2, t0);
        // The same heartbeat by the second path, and an older one: no refresh.
        assert!(d.on_heartbeat("a", &h2, t0 + ms(25)).is_empty());
        assert!(d.on_heartbeat("a", &h1, t0 + ms(25)).is_empty());
        assert_eq!(d.peer("a").unwrap().last_heard, Some(t0));
        assert_eq!(
            tos(&d.tick(t0 + ms(30))),
            vec![(PeerState::Up, PeerState::Down)]
        );
        let mut z = Src::new("z");
        assert!(send(&mut d, &mut z, t0).is_empty());
        assert_eq!(
            d.stats(),
            DetectorStats {
                unknown_peer: 1,
                stale: 2,
                log_dropped: 0
            }
        );
        // An older incarnation is stale too.
        let mut old = Src::new("a");
        old.inc = 0;
        old.seq = 100;
        assert!(send(&mut d, &mut old, t0 + ms(40)).is_empty());
    }

    #[test]
    fn counts_heartbeats_and_losses() {
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(), vec![spec("a", 3)], t0);
        let mut a = Src::new("a");
        send(&mut d, &mut a, t0); // seq 1
        a.seq = 4;
        send(&mut d, &mut a, t0 + ms(10)); // seq 5: 2, 3, 4 lost
        a.inc = 2;
        a.seq = 10;
        send(&mut d, &mut a, t0 + ms(20)); // restart: no loss counted across lives
        let v = d.peer("a").unwrap();
        assert_eq!((v.heartbeats, v.heartbeats_lost), (3, 3));
        assert_eq!(
            PeerState::ALL.map(|s| s.as_str()),
            ["unknown", "up", "app_down", "down", "held_down"]
        );
    }

    #[test]
    fn per_peer_k_and_from_config() {
        let mut t = TimersConfig {
            heartbeat_interval_ms: 20,
            ..Default::default()
        };
        t.missed_by_class.server = Some(5);
        let p = PeerConfig {
            id: "srv-1".into(),
            class: PeerClass::Server,
            ..Default::default()
        };
        let s = PeerSpec::from_config(&p, &t).unwrap();
        assert_eq!((s.interval, s.missed), (ms(20), 5));
        let p = PeerConfig {
            id: "px".into(),
            class: PeerClass::Proxy,
            missed_intervals: Some(7),
            ..Default::default()
        };
        assert_eq!(PeerSpec::from_config(&p, &t).unwrap().missed, 7);
        let p = PeerConfig {
            id: "ap".into(),
            ..Default::default()
        };
        assert_eq!(PeerSpec::from_config(&p, &t).unwrap().missed, 3);
        let p = PeerConfig {
            id: "x".repeat(40),
            ..Default::default()
        };
        assert!(PeerSpec::from_config(&p, &t).is_none());
        let c = DetectorConfig::from_timers(&t);
        assert_eq!(
            (c.flap_window, c.flap_hold_down, c.flap_max_transitions),
            (ms(10_000), ms(30_000), 3)
        );

        let t0 = Instant::now();
        let mut d = Detector::new(cfg(), vec![spec("k1", 1), spec("k5", 5)], t0);
        let (mut a, mut b) = (Src::new("k1"), Src::new("k5"));
        send(&mut d, &mut a, t0);
        send(&mut d, &mut b, t0);
        assert_eq!(d.max_tick_period(), ms(5));
        assert_eq!(
            tos(&d.tick(t0 + ms(10))),
            vec![(PeerState::Up, PeerState::Down)]
        );
        assert!(d.tick(t0 + ms(49)).is_empty());
        assert_eq!(d.tick(t0 + ms(50))[0].peer.as_str(), "k5");
    }

    #[test]
    fn log_is_bounded_and_wall_time_follows_the_anchor() {
        let t0 = Instant::now();
        let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = cfg();
        c.log_capacity = 4;
        c.flap_damping = false;
        let mut d = Detector::new(c, vec![spec("a", 3)], t0).with_wall_anchor(t0, wall0);
        let mut a = Src::new("a");
        for n in 0..10 {
            a.alive = n % 2 == 0;
            send(&mut d, &mut a, t0 + ms(n));
        }
        assert_eq!(d.log().count(), 4);
        assert_eq!(d.stats().log_dropped, 6);
        let last = d.log().last().unwrap();
        assert_eq!(last.wall, wall0 + ms(9));
        assert_eq!(last.at, t0 + ms(9));
        assert!(last.to_string().starts_with("peer a: up -> app_down"));
    }

    proptest! {
        /// With a tick every i/2 (any phase), Down is declared no earlier than K·i and no
        /// later than K·i + i/2 after the last heartbeat: within (K+1)·i.
        #[test]
        fn down_declared_within_bounds(interval_ms in 5u64..200, k in 1u32..10, beats in 1u32..20, phase_us in 0u64..100_000) {
            let t0 = Instant::now();
            let i = ms(interval_ms);
            let mut d = Detector::new(cfg(), vec![PeerSpec { id: NodeId::new("a").unwrap(), class: PeerClass::Server, interval: i, missed: k }], t0);
            let mut a = Src::new("a");
            let mut last = t0;
            for n in 0..beats { last = t0 + i * n; send(&mut d, &mut a, last); }
            let period = d.max_tick_period();
            let mut t = t0 + Duration::from_micros(phase_us % (period.as_micros() as u64).max(1));
            let mut declared = None;
            while t < last + i * (k + 3) {
                if t >= last {
                    let ev = d.tick(t);
                    if let Some(e) = ev.iter().find(|e| e.to == PeerState::Down) { declared = Some(e.at); break; }
                }
                t += period;
            }
            let at = declared.expect("never declared down");
            prop_assert!(at >= last + i * k);
            prop_assert!(at <= last + i * k + period);
            prop_assert!(at < last + i * (k + 1));
        }

        /// Arbitrary interleavings of heartbeats and ticks never panic, every event changes
        /// state (or is a restart), and the log stays bounded.
        #[test]
        fn arbitrary_inputs_keep_invariants(ops in proptest::collection::vec((0u8..4, 0u64..50, any::<bool>()), 1..300)) {
            let t0 = Instant::now();
            let mut c = cfg();
            c.log_capacity = 16;
            let mut d = Detector::new(c, vec![spec("a", 2)], t0);
            let mut a = Src::new("a");
            let mut t = t0;
            for (op, dt, flag) in ops {
                t += ms(dt);
                let evs = match op {
                    0 | 1 => { a.alive = flag || op == 0; send(&mut d, &mut a, t) }
                    2 => { if flag { a.inc += 1; a.seq = 0; } send(&mut d, &mut a, t) }
                    _ => d.tick(t),
                };
                for e in &evs {
                    let restart = matches!(e.reason, Reason::Restarted { .. });
                    prop_assert!(e.from != e.to || restart, "no-op event {}", e);
                    prop_assert_eq!(e.at, t);
                }
                prop_assert!(d.log().count() <= 16);
            }
        }
    }
}
