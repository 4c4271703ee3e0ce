//! Anti-replay for authenticated heartbeats: accept each (incarnation, seq) of a known node
//! at most once.
//!
//! The MAC proves a rack key holder made a message, not that it is new: a recorded
//! heartbeat of a dead node, played back, would keep it "alive". Per node we keep the
//! current incarnation and an IPsec-style sliding window (RFC 4303 §3.4.3): the highest
//! sequence number seen plus a 64-bit bitmap of the 64 numbers at and below it. Reordered
//! but new messages inside the window are accepted once; anything older is refused. A
//! higher incarnation (the peer restarted) starts a new window; a lower one is refused.
//!
//! Pure: no clock, no I/O. State is a few words per configured peer.

use super::wire::NodeId;
use std::collections::HashMap;
use std::fmt;

/// Width of the sliding window in sequence numbers.
pub const WINDOW: u64 = 64;

/// Why an authenticated heartbeat was refused as not new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplayDrop {
    /// The node id is not in the configured peer list.
    UnknownNode,
    /// Same incarnation, and the sequence number was seen already or is older than the window.
    Replayed,
    /// An incarnation older than the one in use (a pre-restart message).
    OldIncarnation,
}

impl ReplayDrop {
    pub const ALL: [ReplayDrop; 3] = [
        ReplayDrop::UnknownNode,
        ReplayDrop::Replayed,
        ReplayDrop::OldIncarnation,
    ];
    /// Stable snake_case name for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReplayDrop::UnknownNode => "unknown_node",
            ReplayDrop::Replayed => "replayed",
            ReplayDrop::OldIncarnation => "old_incarnation",
        }
    }
}

impl fmt::Display for ReplayDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an accepted heartbeat relates to what came before (for statistics; all are new).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// First heartbeat from this node since the guard was created.
    First,
    /// A higher incarnation: the node restarted. Carries the previous incarnation.
    NewIncarnation { previous: u64 },
    /// Beyond the highest sequence number seen (`gap` = how far; 1 = no loss).
    Advanced { gap: u64 },
    /// Below the highest seen but inside the window, and not seen before.
    Reordered,
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    seen: bool,
    incarnation: u64,
    top: u64,
    /// Bit i set = `top - i` was accepted.
    bitmap: u64,
}

/// Per-node replay windows for a fixed peer list (the peers of the rack file).
#[derive(Clone, Debug, Default)]
pub struct ReplayGuard {
    nodes: HashMap<NodeId, Window>,
}

impl ReplayGuard {
    /// A guard that knows exactly `peers`; every other node id is `UnknownNode`.
    pub fn new<I: IntoIterator<Item = NodeId>>(peers: I) -> ReplayGuard {
        ReplayGuard {
            nodes: peers.into_iter().map(|p| (p, Window::default())).collect(),
        }
    }

    pub fn knows(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Checks and, if new, records (incarnation, seq) for `node`. Call only after the MAC
    /// verified, so forged messages cannot move a window.
    pub fn check(&mut self, node: &str, incarnation: u64, seq: u64) -> Result<Fresh, ReplayDrop> {
        let w = self.nodes.get_mut(node).ok_or(ReplayDrop::UnknownNode)?;
        if !w.seen {
            *w = Window {
                seen: true,
                incarnation,
                top: seq,
                bitmap: 1,
            };
            return Ok(Fresh::First);
        }
        if incarnation > w.incarnation {
            let previous = w.incarnation;
            *w = Window {
                seen: true,
                incarnation,
                top: seq,
                bitmap: 1,
            };
            return Ok(Fresh::NewIncarnation { previous });
        }
        if incarnation < w.incarnation {
            return Err(ReplayDrop::OldIncarnation);
        }
        if seq > w.top {
            let gap = seq - w.top;
            w.bitmap = if gap >= WINDOW {
                1
            } else {
                (w.bitmap << gap) | 1
            };
            w.top = seq;
            return Ok(Fresh::Advanced { gap });
        }
        let back = w.top - seq;
        if back >= WINDOW {
            return Err(ReplayDrop::Replayed);
        }
        let bit = 1u64 << back;
        if w.bitmap & bit != 0 {
            return Err(ReplayDrop::Replayed);
        }
        w.bitmap |= bit;
        Ok(Fresh::Reordered)
    }

    /// The (incarnation, highest seq) accepted from `node`, if any.
    pub fn position(&self, node: &str) -> Option<(u64, u64)> {
        self.nodes
            .get(node)
            .filter(|w| w.seen)
            .map(|w| (w.incarnation, w.top))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashSet};

    fn guard() -> ReplayGuard {
        ReplayGuard::new(["a", "b"].iter().map(|s| NodeId::new(s).unwrap()))
    }

    #[test]
    fn unknown_nodes_are_refused() {
        let mut g = guard();
        assert_eq!(g.check("c", 1, 1), Err(ReplayDrop::UnknownNode));
        assert_eq!(g.check("", 1, 1), Err(ReplayDrop::UnknownNode));
        assert!(g.knows("a") && !g.knows("c"));
    }

    #[test]
    fn in_order_duplicates_and_window() {
        let mut g = guard();
        assert_eq!(g.check("a", 5, 10), Ok(Fresh::First));
        assert_eq!(g.check("a", 5, 10), Err(ReplayDrop::Replayed));
        assert_eq!(g.check("a", 5, 11), Ok(Fresh::Advanced { gap: 1 }));
        assert_eq!(g.check("a", 5, 14), Ok(Fresh::Advanced { gap: 3 }));
        assert_eq!(g.check("a", 5, 12), Ok(Fresh::Reordered));
        assert_eq!(g.check("a", 5, 12), Err(ReplayDrop::Replayed));
        assert_eq!(g.check("a", 5, 13), Ok(Fresh::Reordered));
        // Older than the first accepted but inside the window: new, accepted once.
        assert_eq!(g.check("a", 5, 9), Ok(Fresh::Reordered));
        assert_eq!(g.check("a", 5, 9), Err(ReplayDrop::Replayed));
        // Window edges: top - 63 is inside, top - 64 is outside.
        assert_eq!(g.check("a", 5, 200), Ok(Fresh::Advanced { gap: 186 }));
        assert_eq!(g.check("a", 5, 137), Ok(Fresh::Reordered)); // 200-63
        assert_eq!(g.check("a", 5, 136), Err(ReplayDrop::Replayed)); // 200-64: outside
        assert_eq!(g.check("a", 5, 14), Err(ReplayDrop::Replayed));
        assert_eq!(g.position("a"), Some((5, 200)));
        assert_eq!(g.position("b"), None);
    }

    #[test]
    fn incarnations() {
        let mut g = guard();
        g.check("a", 5, 100).unwrap();
        assert_eq!(g.check("a", 4, 1000), Err(ReplayDrop::OldIncarnation));
        assert_eq!(
            g.check("a", 6, 0),
            Ok(Fresh::NewIncarnation { previous: 5 })
        );
        assert_eq!(g.check("a", 6, 0), Err(ReplayDrop::Replayed));
        assert_eq!(g.check("a", 5, 101), Err(ReplayDrop::OldIncarnation));
        assert_eq!(g.check("a", 6, 1), Ok(Fresh::Advanced { gap: 1 }));
        // Nodes are independent.
        assert_eq!(g.check("b", 1, 0), Ok(Fresh::First));
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut g = guard();
        g.check("a", u64::MAX, u64::MAX).unwrap();
        assert_eq!(g.check("a", u64::MAX, 0), Err(ReplayDrop::Replayed));
        assert_eq!(g.check("a", u64::MAX, u64::MAX - 63), Ok(Fresh::Reordered));
        assert_eq!(g.check("a", 0, 0), Err(ReplayDrop::OldIncarnation));
    }

    /// Reference model: every (inc, seq) accepted at most once; same incarnation accepted
    /// iff unseen and within WINDOW-1 of the highest seen.
    fn model(msgs: &[(u64, u64)]) -> Vec<bool> {
        let mut cur: Option<(u64, u64, BTreeSet<u64>)> = None;
        msgs.iter()
            .map(|&(inc, seq)| match &mut cur {
                None => {
                    cur = Some((inc, seq, BTreeSet::from([seq])));
                    true
                }
                Some((ci, top, seen)) => {
                    if inc > *ci {
                        cur = Some((inc, seq, BTreeSet::from([seq])));
                        true
                    } else if inc < *ci
                        || seen.contains(&seq)
                        || (seq < *top && *top - seq >= WINDOW)
                    {
                        false
                    } else {
                        seen.insert(seq);
                        *top = (*top).max(seq);
                        true
                    }
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// A stream sent once, then shuffled and partly duplicated: each message is
        /// accepted at most once, and the guard agrees with the model exactly.
        #[test]
        fn at_most_once_under_reordering(
            n in 1usize..300,
            swaps in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..200),
            dups in proptest::collection::vec(any::<usize>(), 0..100),
            incs in proptest::collection::vec(0u64..3, 1..4),
        ) {
            let mut msgs: Vec<(u64, u64)> = Vec::new();
            for (i, inc) in incs.iter().enumerate() {
                for s in 0..n as u64 { msgs.push((*inc + i as u64, s)); }
            }
            for d in dups { let m = msgs[d % msgs.len()]; msgs.push(m); }
            let len = msgs.len();
            for (x, y) in swaps { msgs.swap(x % len, y % len); }
            let mut g = guard();
            let mut accepted = HashSet::new();
            let got: Vec<bool> = msgs.iter().map(|&(i, s)| g.check("a", i, s).is_ok()).collect();
            for (m, ok) in msgs.iter().zip(&got) {
                if *ok { prop_assert!(accepted.insert(*m), "{:?} accepted twice", m); }
            }
            prop_assert_eq!(got, model(&msgs));
        }

        /// Reordering inside blocks of 32 (less than the window) loses nothing.
        #[test]
        fn mild_reordering_accepts_everything(n in 1u64..500, swaps in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..200)) {
            let mut msgs: Vec<u64> = (0..n).collect();
            for (a, b) in swaps {
                let a = (a % n) as usize;
                let block = a / 32 * 32;
                let end = (block + 32).min(n as usize);
                let b = block + (b as usize) % (end - block);
                msgs.swap(a, b);
            }
            let mut g = guard();
            for s in msgs { prop_assert!(g.check("a", 1, s).is_ok()); }
        }
    }
}
