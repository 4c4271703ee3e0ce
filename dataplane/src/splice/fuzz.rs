//! The splice's pure logic on arbitrary bytes: the body of the `splice_all` fuzz target
//! (`dataplane/fuzz`, libFuzzer, nightly) and of a stable proptest that CI runs.
//!
//! * [`SynOffer::parse`] of the bytes as SYN options: no panic; what it accepts is
//!   written back by [`write_syn_options`] into a block it accepts again.
//! * Routing rules ([`Rules::decide`]) on the bytes as a first request: no panic.
//! * [`rewrite`] of the bytes as an IPv4 packet, with its checksums made right first and
//!   the translation numbers taken from the bytes themselves: when the rewrite accepts
//!   the packet, both checksums are still right — the incremental updates equal a full
//!   recomputation whatever the options, their alignment and the padding after the
//!   packet.

use super::options::{write_syn_options, SynOffer, SYN_OPTIONS_MAX};
use super::request::{HostMatch, Rule, Rules};
use super::translate::{rewrite, Direction, Endpoint, Offsets};
use crate::packet::{ip_proto, Ipv4, Tcp};
use std::net::Ipv4Addr;

/// Panics only on a real bug (see the module docs).
pub fn fuzz_entry(data: &[u8]) {
    syn_options(data);
    routing(data);
    translation(data);
}

fn syn_options(data: &[u8]) {
    let Ok(offer) = SynOffer::parse(data) else { return };
    let mut out = [0u8; SYN_OPTIONS_MAX];
    let n = write_syn_options(&mut out, &offer);
    assert!(SynOffer::parse(&out[..n]).is_ok(), "our own option block of {offer:?} is refused: {:?}", &out[..n]);
}

fn routing(data: &[u8]) {
    let rules = Rules {
        rules: vec![
            Rule { host: Some(HostMatch::parse("*.example.com")), path_prefix: None, methods: vec![], dst_ports: vec![], pool: 1 },
            Rule { host: None, path_prefix: Some("/assets/".into()), methods: vec!["GET".into()], dst_ports: vec![(80, 80)], pool: 2 },
        ],
        default_pool: 0,
    };
    let _ = rules.decide(80, data);
    let _ = rules.decide(8080, data);
}

fn translation(data: &[u8]) {
    if data.len() < 20 + 20 + 16 {
        return;
    }
    // The first 16 bytes choose the translation; the rest is the packet.
    let (knobs, packet) = data.split_at(16);
    let word = |i: usize| u32::from_be_bytes([knobs[i], knobs[i + 1], knobs[i + 2], knobs[i + 3]]);
    let o = Offsets { delta: word(0), ts_delta: (knobs[12] & 1 == 1).then(|| word(4)), ws_server: knobs[13] % 15, ws_promised: knobs[14] % 15 };
    let dir = if knobs[15] & 1 == 0 { Direction::ToServer } else { Direction::ToClient };
    let src = Endpoint { addr: Ipv4Addr::from(word(8)), port: u16::from_be_bytes([knobs[12], knobs[13]]) };
    let dst = Endpoint { addr: Ipv4Addr::from(word(8).rotate_left(8)), port: u16::from_be_bytes([knobs[14], knobs[15]]) };

    let mut p = packet.to_vec();
    let Ok(ip) = Ipv4::parse_unverified(&p[..]) else { return };
    let (hl, tl) = (ip.header_len(), ip.total_len());
    if ip.protocol() != ip_proto::TCP || tl > p.len() || tl < hl + 20 {
        return;
    }
    Ipv4::new_unchecked(&mut p[..]).fill_checksum();
    let (s, d) = (ip_addr(&p, 12), ip_addr(&p, 16));
    Tcp::new_unchecked(&mut p[hl..tl]).fill_checksum_v4(s, d);
    if rewrite(&mut p, dir, src, dst, &o).is_err() {
        return;
    }
    let ip = Ipv4::parse_unverified(&p[..]).expect("still IPv4");
    assert!(ip.verify_checksum(), "IPv4 checksum wrong after the rewrite");
    assert_eq!((ip_addr(&p, 12), ip_addr(&p, 16)), (src.addr, dst.addr));
    let tcp = Tcp::new_unchecked(&p[hl..tl]);
    assert!(tcp.verify_checksum_v4(src.addr, dst.addr), "TCP checksum wrong after the rewrite");
    assert_eq!((tcp.src_port(), tcp.dst_port()), (src.port, dst.port));
}

fn ip_addr(p: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid TCP segment (20-byte IPv4 header, options, payload) after 16 knob bytes.
    fn sample(opts: &[u8], payload: &[u8], pad: usize) -> Vec<u8> {
        let doff = 20 + opts.len();
        let total = 20 + doff + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, ip_proto::TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 2, ((doff / 4) as u8) << 4, 0x10, 0x10, 0, 0, 0, 0, 0]);
        p.extend_from_slice(opts);
        p.extend_from_slice(payload);
        p.resize(p.len() + pad, 0xee);
        let mut d = vec![0x12, 0x34, 0x56, 0x78, 0, 0, 0, 9, 192, 0, 2, 7, 1, 7, 9, 1];
        d.extend(p);
        d
    }

    #[test]
    fn the_entry_accepts_real_segments_and_trivia() {
        fuzz_entry(&[]);
        fuzz_entry(b"GET /assets/x HTTP/1.1\r\nHost: a.example.com\r\n\r\n");
        fuzz_entry(&[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]);
        // Timestamps after two NOPs, SACK at an odd offset, link padding after the packet.
        fuzz_entry(&sample(&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6], b"data", 0));
        fuzz_entry(&sample(&[1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 9, 0], b"x", 6));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Random bytes, and random mutations of a real segment (which reach the rewrite).
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            fuzz_entry(&bytes);
        }

        #[test]
        fn mutated_segments(flips in proptest::collection::vec((0usize..100, any::<u8>()), 0..6), pad in 0usize..8) {
            let mut d = sample(&[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6, 1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 9], b"payload", pad);
            for (at, v) in flips {
                if let Some(b) = d.get_mut(at) {
                    *b = v;
                }
            }
            fuzz_entry(&d);
        }
    }
}
