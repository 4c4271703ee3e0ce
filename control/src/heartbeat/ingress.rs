//! The receive path without the socket: decode + authenticate + anti-replay, and the
//! counters the control thread reads.
//!
//! Kept apart from `udp` so every acceptance rule is unit-tested without I/O, and so the
//! in-band path (frames from a dataplane port) can reuse it unchanged.

use super::replay::{Fresh, ReplayDrop, ReplayGuard};
use super::wire::{decode, HbDrop, Heartbeat, MacKey, NodeId};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every reason a datagram is not delivered as a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    Wire(HbDrop),
    Replay(ReplayDrop),
}

impl Reject {
    /// All reasons, in counter order.
    pub const ALL: [Reject; 8] = [
        Reject::Wire(HbDrop::Truncated),
        Reject::Wire(HbDrop::BadMagic),
        Reject::Wire(HbDrop::BadVersion),
        Reject::Wire(HbDrop::BadMac),
        Reject::Wire(HbDrop::Malformed),
        Reject::Replay(ReplayDrop::UnknownNode),
        Reject::Replay(ReplayDrop::Replayed),
        Reject::Replay(ReplayDrop::OldIncarnation),
    ];

    fn index(self) -> usize {
        match self {
            Reject::Wire(HbDrop::Truncated) => 0,
            Reject::Wire(HbDrop::BadMagic) => 1,
            Reject::Wire(HbDrop::BadVersion) => 2,
            Reject::Wire(HbDrop::BadMac) => 3,
            Reject::Wire(HbDrop::Malformed) => 4,
            Reject::Replay(ReplayDrop::UnknownNode) => 5,
            Reject::Replay(ReplayDrop::Replayed) => 6,
            Reject::Replay(ReplayDrop::OldIncarnation) => 7,
        }
    }

    /// Stable snake_case name (metrics label `reason`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::Wire(d) => d.as_str(),
            Reject::Replay(d) => d.as_str(),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejection with what is known about the claimed sender (only after the MAC verified:
/// an unauthenticated node id is not worth repeating in a log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub reason: Reject,
    /// Authenticated claims of the message, for replay-stage rejections.
    pub node: Option<NodeId>,
    pub incarnation: u64,
    pub seq: u64,
}

/// Heartbeat counters, shared between the I/O threads (writers) and the control thread
/// (reader, metrics). Relaxed atomics: each counter is independent and monotonic.
#[derive(Debug, Default)]
pub struct HbCounters {
    /// Datagrams read from the socket.
    pub received: AtomicU64,
    /// Heartbeats that passed every check.
    pub accepted: AtomicU64,
    /// Accepted, below the highest sequence seen (arrived out of order).
    pub reordered: AtomicU64,
    /// Accepted with a higher incarnation than before (the peer restarted).
    pub restarts: AtomicU64,
    /// Accepted, but the event channel to the control thread was full: the event was
    /// dropped (the receiver never blocks on the control thread).
    pub queue_full: AtomicU64,
    /// Socket receive errors other than timeouts.
    pub recv_errors: AtomicU64,
    /// Heartbeat datagrams sent (one per peer per interval).
    pub sent: AtomicU64,
    /// Failed sends.
    pub send_errors: AtomicU64,
    /// Log lines about rejected messages that the rate limit suppressed.
    pub log_suppressed: AtomicU64,
    rejected: [AtomicU64; 8],
}

/// A plain copy of [`HbCounters`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HbStats {
    pub received: u64,
    pub accepted: u64,
    pub reordered: u64,
    pub restarts: u64,
    pub queue_full: u64,
    pub recv_errors: u64,
    pub sent: u64,
    pub send_errors: u64,
    pub log_suppressed: u64,
    /// `(reason name, count)` for every [`Reject`], in [`Reject::ALL`] order.
    pub rejected: Vec<(&'static str, u64)>,
}

impl HbStats {
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected.get(r.index()).map_or(0, |x| x.1)
    }
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|x| x.1).sum()
    }
}

impl HbCounters {
    pub fn new() -> HbCounters {
        HbCounters::default()
    }
    pub fn count_reject(&self, r: Reject) {
        self.rejected[r.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected[r.index()].load(Ordering::Relaxed)
    }
    /// Counts the outcome of one [`Ingress::accept`].
    pub fn record(&self, r: &Result<(Heartbeat, Fresh), Rejected>) {
        match r {
            Ok((_, fresh)) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                match fresh {
                    Fresh::Reordered => {
                        self.reordered.fetch_add(1, Ordering::Relaxed);
                    }
                    Fresh::NewIncarnation { .. } => {
                        self.restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            Err(rej) => self.count_reject(rej.reason),
        }
    }
    pub fn snapshot(&self) -> HbStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HbStats {
            received: l(&self.received),
            accepted: l(&self.accepted),
            reordered: l(&self.reordered),
            restarts: l(&self.restarts),
            queue_full: l(&self.queue_full),
            recv_errors: l(&self.recv_errors),
            sent: l(&self.sent),
            send_errors: l(&self.send_errors),
            log_suppressed: l(&self.log_suppressed),
            rejected: Reject::ALL
                .iter()
                .map(|r| (r.as_str(), self.rejected(*r)))
                .collect(),
        }
    }
}

/// Decode, authenticate and replay-check datagrams of one path (one per path: with a
/// management and an in-band path each path accepts each heartbeat once, and the detector
/// drops the second copy).
#[derive(Debug)]
pub struct Ingress {
    key: MacKey,
    replay: ReplayGuard,
}

impl Ingress {
    /// Accepts heartbeats from `peers` only (the rack file's `[[peer]]` ids).
    pub fn new<I: IntoIterator<Item = NodeId>>(key: MacKey, peers: I) -> Ingress {
        Ingress {
            key,
            replay: ReplayGuard::new(peers),
        }
    }

    /// One datagram in; the heartbeat (with how it was new) or the reason it was refused.
    pub fn accept(&mut self, bytes: &[u8]) -> Result<(Heartbeat, Fresh), Rejected> {
        let hb = decode(bytes, &self.key).map_err(|d| Rejected {
            reason: Reject::Wire(d),
            node: None,
            incarnation: 0,
            seq: 0,
        })?;
        match self.replay.check(hb.node.as_str(), hb.incarnation, hb.seq) {
            Ok(fresh) => Ok((hb, fresh)),
            Err(d) => Err(Rejected {
                reason: Reject::Replay(d),
                node: Some(hb.node),
                incarnation: hb.incarnation,
                seq: hb.seq,
            }),
        }
    }

    pub fn replay_guard(&self) -> &ReplayGuard {
        &self.replay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::wire::{encode, HbRole, StatusFlags, Workload};

    fn key() -> MacKey {
        MacKey::new(b"ingress test key, 32 bytes long!").unwrap()
    }
    fn hb(node: &str, inc: u64, seq: u64) -> Heartbeat {
        Heartbeat {
            node: NodeId::new(node).unwrap(),
            incarnation: inc,
            seq,
            role: HbRole::Agent,
            workload: Workload::FULL,
            status: StatusFlags {
                app_alive: true,
                ..Default::default()
            },
            sent_at_us: 0,
            tlvs: vec![],
        }
    }

    #[test]
    fn every_reason_is_counted() {
        let k = key();
        let mut ing = Ingress::new(k.clone(), [NodeId::new("s1").unwrap()]);
        let c = HbCounters::new();
        let mut feed = |b: &[u8]| {
            let r = ing.accept(b);
            c.record(&r);
            r
        };
        let good = encode(&hb("s1", 10, 1), &k).unwrap();
        assert!(feed(&good).is_ok());
        let r = feed(&good).unwrap_err();
        assert_eq!(r.reason, Reject::Replay(ReplayDrop::Replayed));
        assert_eq!(r.node.as_ref().map(|n| n.as_str()), Some("s1"));
        assert!(matches!(
            feed(&encode(&hb("s1", 11, 0), &k).unwrap()),
            Ok((_, Fresh::NewIncarnation { previous: 10 }))
        ));
        assert!(feed(&encode(&hb("s1", 11, 5), &k).unwrap()).is_ok());
        assert!(matches!(
            feed(&encode(&hb("s1", 11, 3), &k).unwrap()),
            Ok((_, Fresh::Reordered))
        ));
        let old = feed(&encode(&hb("s1", 10, 2), &k).unwrap()).unwrap_err();
        assert_eq!(old.reason, Reject::Replay(ReplayDrop::OldIncarnation));
        let unk = feed(&encode(&hb("s9", 1, 1), &k).unwrap()).unwrap_err();
        assert_eq!(unk.reason, Reject::Replay(ReplayDrop::UnknownNode));
        let other = MacKey::new(b"a different rack key").unwrap();
        let bad = feed(&encode(&hb("s1", 12, 1), &other).unwrap()).unwrap_err();
        assert_eq!((bad.reason, bad.node), (Reject::Wire(HbDrop::BadMac), None));
        assert_eq!(
            feed(&good[..10]).unwrap_err().reason,
            Reject::Wire(HbDrop::Truncated)
        );
        assert_eq!(
            feed(b"hello world").unwrap_err().reason,
            Reject::Wire(HbDrop::BadMagic)
        );
        let mut v = good.clone();
        v[4] = 9;
        assert_eq!(
            feed(&v).unwrap_err().reason,
            Reject::Wire(HbDrop::BadVersion)
        );
        let mut v = good.clone();
        v.push(1);
        assert_eq!(
            feed(&v).unwrap_err().reason,
            Reject::Wire(HbDrop::Malformed)
        );

        let s = c.snapshot();
        assert_eq!((s.accepted, s.restarts, s.reordered), (4, 1, 1));
        for r in Reject::ALL {
            assert_eq!(s.rejected(r), 1, "{r}");
        }
        assert_eq!(s.rejected_total(), 8);
        assert_eq!(s.rejected.len(), 8);
        // A BadMac message never moved the window: (12, 1) from the right key is new.
        assert!(ing.accept(&encode(&hb("s1", 12, 1), &k).unwrap()).is_ok());
    }
}
