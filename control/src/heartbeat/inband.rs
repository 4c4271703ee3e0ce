//! The second heartbeat path: heartbeats in-band on a dataplane port (DESIGN.md "Control
//! plane": two independent paths, as ST-TCP used IP plus a serial line).
//!
//! Receiving: the lcores punt UDP datagrams to the appliance's address on the heartbeat
//! port (the port of `node.mgmt`) and ARP replies to its addresses (`role::local`); this
//! path's thread authenticates them with an [`Ingress`] of its own (its own replay window:
//! both paths carry the same heartbeat, each accepts it once, and the detector drops the
//! second copy by sequence number) and hands them to the detector like the UDP receiver.
//!
//! Sending: every heartbeat the management sender encodes is mirrored here (same
//! incarnation and sequence number) and sent to each in-band peer as an Ethernet/IPv4/UDP
//! frame from the port's address, through worker 0's TX queue. The peer's MAC comes from
//! the shared [`Neighbours`] table (ARP, run by the punt thread, or the peer's
//! authenticated heartbeats); nothing is sent before it is known.
//!
//! Nothing here can block an lcore: punts and transmits go through the bounded queues of
//! `dataplane::lcore_link`. The punt thread (`crate::punts`) calls [`Inband::on_frame`]
//! and [`Inband::send`].

use super::ingress::{HbCounters, Ingress};
use super::udp::HbEvent;
use super::wire::{MacKey, NodeId};
use crate::neighbours::{Neighbours, PortAddrs};
use crossbeam_channel::{Sender, TrySendError};
use dataplane::lcore_link::SmallFrame;
use dataplane::packet::build::{udp4, Udp4Addrs};
use dataplane::packet::{parse_frame, Udp, L3, L4};
use dataplane::role::PortIndex;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A peer reached in-band.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InbandPeer {
    pub id: String,
    pub port: PortIndex,
    pub addr: Ipv4Addr,
    /// UDP port its heartbeats go to (its `mgmt` port, else ours).
    pub udp_port: u16,
}

/// Counters of the in-band path (the rejections are also in the shared [`HbCounters`]).
#[derive(Debug, Default)]
pub struct InbandCounters {
    /// Heartbeats accepted.
    pub accepted: AtomicU64,
    /// Heartbeat frames handed to an lcore to send.
    pub sent: AtomicU64,
    /// Heartbeats not sent because the peer's MAC is not known yet.
    pub unresolved: AtomicU64,
    /// Frames the lcore queue refused (full).
    pub tx_refused: AtomicU64,
}

/// Sends a frame through an lcore; false when its queue refused it.
pub type Transmit = Box<dyn Fn(SmallFrame) -> bool + Send>;

/// The in-band path's state (driven by the punt thread).
pub struct Inband {
    udp_port: u16,
    ports: Vec<PortAddrs>,
    peers: Vec<InbandPeer>,
    ingress: Ingress,
    neighbours: Neighbours,
    events: Sender<HbEvent>,
    shared: Arc<HbCounters>,
    counters: Arc<InbandCounters>,
    transmit: Transmit,
    ip_id: u16,
}

impl Inband {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        udp_port: u16,
        ports: Vec<PortAddrs>,
        peers: Vec<InbandPeer>,
        key: MacKey,
        known: Vec<NodeId>,
        events: Sender<HbEvent>,
        shared: Arc<HbCounters>,
        transmit: Transmit,
        neighbours: Neighbours,
    ) -> Inband {
        for peer in &peers {
            if let Some(port) = ports.iter().find(|p| p.index == peer.port) {
                neighbours.want(port.wanted(peer.addr));
            }
        }
        Inband {
            udp_port,
            ports,
            peers,
            ingress: Ingress::new(key, known),
            neighbours,
            events,
            shared,
            counters: Arc::default(),
            transmit,
            ip_id: 0,
        }
    }

    pub fn counters(&self) -> Arc<InbandCounters> {
        self.counters.clone()
    }

    /// One punted UDP frame: a datagram to the heartbeat port is a heartbeat for the
    /// detector. Returns false when the detector's side has gone away.
    pub fn on_frame(&mut self, f: &SmallFrame, now: Instant) -> bool {
        let b = f.bytes();
        let Ok(p) = parse_frame(b) else { return true };
        match (p.l3, p.l4) {
            (L3::Ipv4(ip), L4::Udp(u)) => {
                let Ok(udp) = Udp::parse(&b[u.offset..u.end]) else { return true };
                if udp.dst_port() != self.udp_port {
                    return true;
                }
                let src = Ipv4Addr::from(<[u8; 4]>::try_from(&b[ip.offset + 12..ip.offset + 16]).unwrap_or([0; 4]));
                self.shared.received.fetch_add(1, Ordering::Relaxed);
                let r = self.ingress.accept(udp.payload());
                self.shared.record(&r);
                let Ok((hb, _)) = r else { return true };
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                // An authenticated heartbeat from the peer's configured address teaches
                // where to send ours.
                if self.peers.iter().any(|x| x.id == hb.node.as_str() && x.addr == src && x.port == f.port) {
                    self.neighbours.learn(f.port, src, p.l2.src);
                }
                let ev = HbEvent { peer: hb.node.clone(), hb, received_at: now, from: SocketAddr::V4(SocketAddrV4::new(src, udp.src_port())) };
                match self.events.try_send(ev) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        self.shared.queue_full.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(TrySendError::Disconnected(_)) => false,
                }
            }
            _ => true,
        }
    }

    /// Sends one encoded heartbeat to every in-band peer whose MAC is known (the others
    /// are counted `unresolved`; the punt thread is asking for them).
    pub fn send(&mut self, encoded: &[u8]) {
        for i in 0..self.peers.len() {
            let peer = self.peers[i].clone();
            let Some(port) = self.ports.iter().find(|p| p.index == peer.port) else { continue };
            let Some(dst_mac) = self.neighbours.get(peer.port, peer.addr) else {
                self.counters.unresolved.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            self.ip_id = self.ip_id.wrapping_add(1);
            let src = port.source_for(peer.addr);
            let a = Udp4Addrs { src_mac: port.mac, dst_mac, src, dst: peer.addr, sport: self.udp_port, dport: peer.udp_port };
            let id = self.ip_id;
            if let Some(f) = SmallFrame::build(peer.port, |buf| udp4(buf, &a, id, encoded)) {
                if (self.transmit)(f) {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.tx_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::keyfile::RackKey;
    use crate::heartbeat::wire::{encode_into, HbRole, Heartbeat, StatusFlags, Workload};
    use crossbeam_channel::bounded;
    use std::sync::Mutex;

    const ME: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn key() -> MacKey {
        RackKey::from_bytes(vec![7u8; 32]).unwrap().mac_key()
    }

    fn hb(node: &str, seq: u64) -> Vec<u8> {
        let hb = Heartbeat {
            node: NodeId::new(node).unwrap(),
            incarnation: 5,
            seq,
            role: HbRole::Server,
            workload: Workload::FULL,
            status: StatusFlags { app_alive: true, ..Default::default() },
            sent_at_us: 0,
            tlvs: Vec::new(),
        };
        let mut out = Vec::new();
        encode_into(&hb, &key(), &mut out).unwrap();
        out
    }

    fn path() -> (Inband, crossbeam_channel::Receiver<HbEvent>, Arc<Mutex<Vec<SmallFrame>>>) {
        let (tx, rx) = bounded(16);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s = sent.clone();
        let ports = vec![PortAddrs { index: 1, mac: ME, ipv4: vec![(Ipv4Addr::new(192, 0, 2, 1), 24), (Ipv4Addr::new(10, 0, 1, 2), 24)] }];
        let peers = vec![InbandPeer { id: "web1".into(), port: 1, addr: Ipv4Addr::new(10, 0, 1, 9), udp_port: 7500 }];
        let p = Inband::new(
            7400,
            ports,
            peers,
            key(),
            vec![NodeId::new("web1").unwrap()],
            tx,
            Arc::new(HbCounters::default()),
            Box::new(move |f| {
                s.lock().unwrap().push(f);
                true
            }),
            Neighbours::new(),
        );
        (p, rx, sent)
    }

    fn frame_from_peer(payload: &[u8], dport: u16) -> SmallFrame {
        let a = Udp4Addrs { src_mac: PEER, dst_mac: ME, src: Ipv4Addr::new(10, 0, 1, 9), dst: Ipv4Addr::new(10, 0, 1, 2), sport: 40000, dport };
        SmallFrame::build(1, |b| udp4(b, &a, 1, payload)).unwrap()
    }

    #[test]
    fn heartbeats_go_only_to_resolved_peers_from_the_address_on_their_subnet() {
        let (mut p, _rx, sent) = path();
        assert_eq!(p.neighbours.counts(), (1, 0), "the peer is wanted");
        p.send(b"payload");
        assert!(sent.lock().unwrap().is_empty());
        assert_eq!(p.counters.unresolved.load(Ordering::Relaxed), 1);
        p.neighbours.learn(1, Ipv4Addr::new(10, 0, 1, 9), PEER);
        p.send(b"payload");
        let s = sent.lock().unwrap();
        assert_eq!(s.len(), 1);
        let f = parse_frame(s[0].bytes()).unwrap();
        assert_eq!((f.l2.dst, f.l2.src), (PEER, ME));
        let L4::Udp(u) = f.l4 else { panic!("not UDP") };
        let udp = Udp::parse(&s[0].bytes()[u.offset..u.end]).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port(), udp.payload()), (7400, 7500, &b"payload"[..]));
        let src = &s[0].bytes()[26..30];
        assert_eq!(src, &[10, 0, 1, 2], "from our address on the peer's subnet, not the port's first one");
    }

    #[test]
    fn authenticated_heartbeats_reach_the_detector_once_and_forgeries_never() {
        let (mut p, rx, _sent) = path();
        let now = Instant::now();
        assert!(p.on_frame(&frame_from_peer(&hb("web1", 1), 7400), now));
        let ev = rx.try_recv().unwrap();
        assert_eq!((ev.peer.as_str(), ev.hb.seq), ("web1", 1));
        // Its MAC was learned from the authenticated heartbeat.
        assert_eq!(p.neighbours.get(1, Ipv4Addr::new(10, 0, 1, 9)), Some(PEER));
        // Replayed, other port number, forged MAC, unknown node: nothing reaches the detector.
        p.on_frame(&frame_from_peer(&hb("web1", 1), 7400), now);
        p.on_frame(&frame_from_peer(&hb("web1", 2), 7401), now);
        let mut forged = hb("web1", 3);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        p.on_frame(&frame_from_peer(&forged, 7400), now);
        p.on_frame(&frame_from_peer(&hb("intruder", 4), 7400), now);
        assert!(rx.try_recv().is_err());
        assert_eq!(p.counters.accepted.load(Ordering::Relaxed), 1);
        assert!(p.shared.snapshot().rejected.iter().map(|(_, n)| n).sum::<u64>() >= 3);
    }

}
