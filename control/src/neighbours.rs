//! The control thread's neighbour table: the MACs of the addresses the appliance itself
//! sends to on a dataplane port — in-band heartbeat peers and balance members (whose MAC
//! is the rewritten destination of every balanced frame).
//!
//! Only *wanted* addresses are learned (from ARP replies the lcores punt, or from
//! authenticated heartbeats), so a host on the segment cannot fill the table. Unresolved
//! addresses are asked for once a second, resolved ones refreshed every 30 s (a member
//! replaced by another machine with the same address gets its new MAC picked up).
//! Shared between the punt thread (writer) and the control thread (reader) behind a
//! mutex; `version` tells readers that something changed.

use dataplane::role::PortIndex;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An address the appliance needs the MAC of, and how to ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub port: PortIndex,
    pub target: Ipv4Addr,
    /// Our MAC and address on that port (the ARP request's sender).
    pub src_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
}

/// The appliance's side of a dataplane port: what it sends from there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortAddrs {
    pub index: PortIndex,
    pub mac: [u8; 6],
    /// Its IPv4 addresses with their prefix lengths.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
}

impl PortAddrs {
    /// Our address on `peer`'s subnet, else the port's first address.
    pub fn source_for(&self, peer: Ipv4Addr) -> Ipv4Addr {
        let same_net = |(a, len): &(Ipv4Addr, u8)| {
            let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from((*len).min(32))) };
            u32::from(*a) & mask == u32::from(peer) & mask
        };
        self.ipv4.iter().find(|x| same_net(x)).or(self.ipv4.first()).map_or(Ipv4Addr::UNSPECIFIED, |x| x.0)
    }

    /// `target` to resolve on this port, asked from our address on its subnet.
    pub fn wanted(&self, target: Ipv4Addr) -> Wanted {
        Wanted { port: self.index, target, src_mac: self.mac, src_ip: self.source_for(target) }
    }
}

/// How often an unresolved address is asked for, and a resolved one refreshed.
pub const ASK_UNRESOLVED: Duration = Duration::from_secs(1);
pub const REFRESH_RESOLVED: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Inner {
    wanted: Vec<Wanted>,
    macs: HashMap<(PortIndex, Ipv4Addr), [u8; 6]>,
    asked: HashMap<(PortIndex, Ipv4Addr), Instant>,
    version: u64,
}

/// See the module documentation. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Neighbours(Arc<Mutex<Inner>>);

impl Neighbours {
    pub fn new() -> Neighbours {
        Neighbours::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an address to resolve (idempotent).
    pub fn want(&self, w: Wanted) {
        let mut g = self.lock();
        if !g.wanted.iter().any(|x| x.port == w.port && x.target == w.target) {
            g.wanted.push(w);
        }
    }

    /// Learns `mac` for a wanted address; returns true when it is new or changed.
    pub fn learn(&self, port: PortIndex, ip: Ipv4Addr, mac: [u8; 6]) -> bool {
        let mut g = self.lock();
        if !g.wanted.iter().any(|w| w.port == port && w.target == ip) || mac == [0; 6] || mac[0] & 1 == 1 {
            return false;
        }
        if g.macs.insert((port, ip), mac) == Some(mac) {
            return false;
        }
        g.version += 1;
        true
    }

    pub fn get(&self, port: PortIndex, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.lock().macs.get(&(port, ip)).copied()
    }

    /// Changes so far (a reader rebuilds what depends on MACs when this moves).
    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// The ARP requests due now on ports that `up` says have a link (and notes them as
    /// asked; one on a port without link is asked as soon as the link is back).
    pub fn due(&self, now: Instant, up: impl Fn(crate::plan::PortIndex) -> bool) -> Vec<Wanted> {
        let mut g = self.lock();
        let Inner { wanted, macs, asked, .. } = &mut *g;
        let mut out = Vec::new();
        for w in wanted.iter().filter(|w| up(w.port)) {
            let key = (w.port, w.target);
            let every = if macs.contains_key(&key) { REFRESH_RESOLVED } else { ASK_UNRESOLVED };
            if asked.get(&key).is_none_or(|t| now.duration_since(*t) >= every) {
                asked.insert(key, now);
                out.push(*w);
            }
        }
        out
    }

    /// (wanted, resolved) counts, for metrics.
    pub fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        (g.wanted.len(), g.macs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn w(last: u8) -> Wanted {
        Wanted { port: 1, target: Ipv4Addr::new(10, 0, 0, last), src_mac: [2, 0, 0, 0, 0, 1], src_ip: Ipv4Addr::new(10, 0, 0, 3) }
    }

    #[test]
    fn the_source_address_is_the_one_on_the_peers_subnet() {
        let p = |ipv4: Vec<(Ipv4Addr, u8)>| PortAddrs { index: 1, mac: [2, 0, 0, 0, 0, 1], ipv4 };
        let ours = p(vec![(Ipv4Addr::new(192, 0, 2, 1), 24), (Ipv4Addr::new(10, 0, 1, 2), 16)]);
        assert_eq!(ours.source_for(Ipv4Addr::new(10, 0, 200, 3)), Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(ours.source_for(Ipv4Addr::new(172, 16, 0, 1)), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p(vec![]).source_for(Ipv4Addr::new(172, 16, 0, 1)), Ipv4Addr::UNSPECIFIED);
        assert_eq!(ours.wanted(Ipv4Addr::new(10, 0, 9, 9)).src_ip, Ipv4Addr::new(10, 0, 1, 2));
    }

    #[test]
    fn only_wanted_addresses_are_learned_and_changes_bump_the_version() {
        let n = Neighbours::new();
        n.want(w(21));
        n.want(w(21));
        assert_eq!(n.counts(), (1, 0));
        assert!(!n.learn(1, Ipv4Addr::new(10, 0, 0, 99), MAC), "not wanted");
        assert!(!n.learn(2, Ipv4Addr::new(10, 0, 0, 21), MAC), "wanted on another port");
        assert!(!n.learn(1, Ipv4Addr::new(10, 0, 0, 21), [0xff; 6]), "broadcast is no neighbour");
        assert_eq!(n.version(), 0);
        assert!(n.learn(1, Ipv4Addr::new(10, 0, 0, 21), MAC));
        assert!(!n.learn(1, Ipv4Addr::new(10, 0, 0, 21), MAC), "same MAC again is no change");
        assert_eq!((n.version(), n.get(1, Ipv4Addr::new(10, 0, 0, 21))), (1, Some(MAC)));
        assert!(n.learn(1, Ipv4Addr::new(10, 0, 0, 21), [2, 0, 0, 0, 0, 8]));
        assert_eq!(n.version(), 2);
    }

    #[test]
    fn unresolved_addresses_are_asked_every_second_resolved_ones_every_30() {
        let n = Neighbours::new();
        n.want(w(21));
        n.want(w(22));
        let t0 = Instant::now();
        assert_eq!(n.due(t0, |_| true).len(), 2);
        assert!(n.due(t0 + Duration::from_millis(500), |_| true).is_empty());
        n.learn(1, Ipv4Addr::new(10, 0, 0, 21), MAC);
        let again = n.due(t0 + Duration::from_secs(1), |_| true);
        assert_eq!(again, vec![w(22)], "only the unresolved one");
        assert!(n.due(t0 + Duration::from_secs(29), |_| true).iter().all(|x| x.target != w(21).target));
        assert!(n.due(t0 + Duration::from_secs(30), |_| true).contains(&w(21)));
    }

    #[test]
    fn a_neighbour_behind_a_port_without_link_is_asked_as_soon_as_the_link_is_back() {
        let n = Neighbours::new();
        n.want(w(21));
        let t0 = Instant::now();
        assert!(n.due(t0, |p| p != 1).is_empty(), "port 1 has no link");
        assert_eq!(n.due(t0 + Duration::from_millis(100), |_| true), vec![w(21)]);
    }
}
