//! Synthetic spliced connections for the fast-path benchmark (`testbed bench splice`,
//! `tapsplice run --bench-splices N`): one generator that both the appliance (which
//! preloads the entries) and the testbed (which writes the segments into a pcap file)
//! use, so that the tuples and NAT ports agree.
//!
//! Connection i: client 10.2.(i / 200).(i % 200 + 1), port 10000 + i, to the VIP; the
//! backend leg from our NAT address and `nat_first + i` to the backend. Its segments are
//! pure ACKs with 6 bytes of payload (60-byte frames, the Ethernet minimum): one from the
//! client, one from the backend, alternating over the connections.

use std::net::Ipv4Addr;

use super::table::{Entry, State};
use super::translate::Endpoint;
use crate::packet::build::{tcp4, Tcp4Segment, TCP4_HEADERS};
use crate::packet::tcp::flags;

/// Connections the generator can describe (distinct client addresses and ports).
pub const MAX_CONNECTIONS: usize = 40_000;

/// The fixed parts of every synthetic connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub vip: Endpoint,
    pub backend: Endpoint,
    pub nat: Ipv4Addr,
    /// The first NAT port (the lcore's range start: entries take `nat_first + i`).
    pub nat_first: u16,
    pub client_if: u8,
    pub backend_if: u8,
    pub client_mac: [u8; 6],
    pub backend_mac: [u8; 6],
}

impl Layout {
    /// The benchmarks' layout: VIP 10.0.0.100:80 behind interface 0, one backend
    /// 10.1.0.21:80 behind interface 1, FullNAT from `nat` with ports from 20000, and the
    /// synthetic MACs.
    pub fn example(nat: Ipv4Addr) -> Layout {
        Layout {
            vip: Endpoint { addr: Ipv4Addr::new(10, 0, 0, 100), port: 80 },
            backend: Endpoint { addr: Ipv4Addr::new(10, 1, 0, 21), port: 80 },
            nat,
            nat_first: 20_000,
            client_if: 0,
            backend_if: 1,
            client_mac: CLIENT_MAC,
            backend_mac: BACKEND_MAC,
        }
    }
}

/// The MACs of the synthetic clients' router and backend (both sides agree on them).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x01];
pub const BACKEND_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x02];

/// Connection i's client end.
pub fn client(i: usize) -> Endpoint {
    Endpoint { addr: Ipv4Addr::new(10, 2, (i / 200) as u8, (i % 200 + 1) as u8), port: 10_000 + i as u16 }
}

/// Connection i's table entry, established, with an arbitrary but fixed Δ and the
/// window shifts of a Linux pair.
pub fn entry(l: &Layout, i: usize, now_s: u32) -> Entry {
    Entry {
        client: client(i),
        vip: l.vip,
        backend: l.backend,
        nat: Endpoint { addr: l.nat, port: l.nat_first.wrapping_add(i as u16) },
        delta: 0x1234_5678u32.wrapping_mul(i as u32 + 1),
        ts_delta: 0,
        ws_server: 7,
        ws_promised: 9,
        flags: 0,
        state: State::Established,
        service: 0,
        pool: 0,
        member: 0,
        client_mac: l.client_mac,
        client_if: l.client_if,
        backend_if: l.backend_if,
        backend_mac: l.backend_mac,
        last_seen: now_s,
    }
}

/// The frames of `n` connections, both directions interleaved (client's, backend's,
/// next connection's ...), each 60 bytes; `dut_macs` are the appliance's port MACs
/// (client side, backend side), the frames' destinations.
pub fn frames(l: &Layout, n: usize, dut_macs: ([u8; 6], [u8; 6])) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n.min(MAX_CONNECTIONS) {
        let c = client(i);
        let nat = Endpoint { addr: l.nat, port: l.nat_first.wrapping_add(i as u16) };
        let mk = |src_mac, dst_mac, src: Endpoint, dst: Endpoint| {
            let s = Tcp4Segment { src_mac, dst_mac, src: src.addr, dst: dst.addr, sport: src.port, dport: dst.port, seq: 1000 + i as u32, ack: 5000, flags: flags::ACK, window: 1000, ip_id: 0 };
            let mut f = vec![0u8; TCP4_HEADERS + 6];
            tcp4(&mut f, &s, &[], b"bench!").expect("room for the segment");
            f
        };
        out.push(mk(l.client_mac, dut_macs.0, c, l.vip));
        out.push(mk(l.backend_mac, dut_macs.1, l.backend, nat));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_distinct_and_frames_match_the_entries() {
        let l = Layout::example(Ipv4Addr::new(10, 1, 0, 2));
        let mut seen = std::collections::HashSet::new();
        for i in 0..MAX_CONNECTIONS {
            let c = client(i);
            assert!(seen.insert((c.addr, c.port)), "client {i} repeats");
        }
        let f = frames(&l, 3, ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]));
        assert_eq!(f.len(), 6);
        assert!(f.iter().all(|x| x.len() == 60));
        let e = entry(&l, 2, 0);
        // The client's segment of connection 2 goes to the VIP from its client end; the
        // backend's to connection 2's NAT port.
        assert_eq!(&f[4][26..30], &e.client.addr.octets());
        assert_eq!(u16::from_be_bytes([f[4][34], f[4][35]]), e.client.port);
        assert_eq!(u16::from_be_bytes([f[5][36], f[5][37]]), e.nat.port);
        assert_eq!(&f[5][30..34], &e.nat.addr.octets());
    }
}
