//! The common frame, classified in one pass: untagged Ethernet, IPv4 without options, not a
//! fragment, a whole TCP or UDP header. Hot paths try [`fast_v4`] first and fall back to
//! [`parse_frame`](super::parse_frame) for everything else (VLAN tags, IP options,
//! fragments, other protocols, and every frame the full parser would refuse), so the
//! fast path never decides differently from the full one: a property test holds it to
//! that for arbitrary bytes and for mutations of valid frames.

use super::{ethertype, ip_proto, Tcp, Udp};
use std::net::Ipv4Addr;

/// Ethernet (14) + IPv4 without options (20).
const L4_OFFSET: usize = 34;

/// The flow fields of a common IPv4 TCP or UDP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastV4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// `ip_proto::TCP` or `ip_proto::UDP`.
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// The IPv4 total length (the frame may carry Ethernet padding beyond it).
    pub ip_len: u16,
}

/// Where the IPv4 header starts in a frame [`fast_v4`] accepted.
pub const FAST_V4_L3: usize = 14;

/// The flow fields when `frame` is a common IPv4 TCP/UDP frame that [`parse_frame`]
/// accepts; `None` sends the caller to the full parser. The IPv4 header checksum is not
/// verified (as `Ipv4::parse_unverified`): a role that forwards a frame unchanged above
/// layer 2 leaves that to the receiver, as a switch does.
///
/// [`parse_frame`]: super::parse_frame
#[inline(always)]
pub fn fast_v4(frame: &[u8]) -> Option<FastV4> {
    let h: &[u8; L4_OFFSET + 4] = frame.get(..L4_OFFSET + 4)?.try_into().ok()?;
    // Untagged IPv4, version 4, IHL 5; no MF flag and no fragment offset.
    if u16::from_be_bytes([h[12], h[13]]) != ethertype::IPV4 || h[14] != 0x45 || u16::from_be_bytes([h[20], h[21]]) & 0x3fff != 0 {
        return None;
    }
    let ip_len = u16::from_be_bytes([h[16], h[17]]);
    let seg = frame.get(L4_OFFSET..FAST_V4_L3 + usize::from(ip_len))?;
    let protocol = h[23];
    match protocol {
        ip_proto::UDP => {
            Udp::parse(seg).ok()?;
        }
        ip_proto::TCP => {
            Tcp::parse(seg).ok()?;
        }
        _ => return None,
    }
    Some(FastV4 {
        src: Ipv4Addr::new(h[26], h[27], h[28], h[29]),
        dst: Ipv4Addr::new(h[30], h[31], h[32], h[33]),
        protocol,
        src_port: u16::from_be_bytes([h[34], h[35]]),
        dst_port: u16::from_be_bytes([h[36], h[37]]),
        ip_len,
    })
}

/// The addresses and ports of what looks like an untagged IPv4 TCP frame without IP
/// options, read where they would be and **not validated**: for hints only (a prefetch of
/// the wrong table line costs nothing), never for a decision. `(src, dst, src_port,
/// dst_port)`.
#[inline(always)]
pub fn peek_tcp4_tuple(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, u16)> {
    let h: &[u8; L4_OFFSET + 4] = frame.get(..L4_OFFSET + 4)?.try_into().ok()?;
    if u16::from_be_bytes([h[12], h[13]]) != ethertype::IPV4 || h[14] != 0x45 || h[23] != ip_proto::TCP {
        return None;
    }
    Some((
        Ipv4Addr::new(h[26], h[27], h[28], h[29]),
        Ipv4Addr::new(h[30], h[31], h[32], h[33]),
        u16::from_be_bytes([h[34], h[35]]),
        u16::from_be_bytes([h[36], h[37]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::ipv4_tcp_frame;
    use crate::packet::{parse_frame, FlowKey, L3, L4};
    use proptest::prelude::*;
    use std::net::IpAddr;

    /// What the full parser says about a frame, in `FastV4` terms. The fast path does not
    /// read the IPv4 checksum, so the full parser sees the frame with its checksum made
    /// right (the only difference `fast_v4` allows itself).
    fn full(frame: &[u8]) -> Option<FastV4> {
        let mut f = frame.to_vec();
        if f.len() >= L4_OFFSET && f[14] == 0x45 {
            f[24] = 0;
            f[25] = 0;
            let c = crate::packet::checksum::checksum(&f[14..L4_OFFSET]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        let p = parse_frame(&f).ok()?;
        if p.l2.vlan.is_some() || p.l2.l3_offset != FAST_V4_L3 {
            return None;
        }
        let L3::Ipv4(ip) = p.l3 else { return None };
        let (L4::Tcp(_) | L4::Udp(_)) = p.l4 else { return None };
        let key = FlowKey::from_parsed(&p, &f)?;
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (key.src, key.dst) else { return None };
        let ip_len = u16::try_from(ip.end - ip.offset).ok()?;
        Some(FastV4 { src, dst, protocol: key.protocol, src_port: key.src_port, dst_port: key.dst_port, ip_len })
    }

    fn udp_frame(i: u8) -> Vec<u8> {
        use crate::packet::build::{udp4, Udp4Addrs, UDP4_HEADERS};
        let a = Udp4Addrs { src_mac: [2, 0, 0, 0, 0, 1], dst_mac: [2, 0, 0, 0, 0, 2], src: Ipv4Addr::new(10, 0, 0, i), dst: Ipv4Addr::new(10, 1, 0, 100), sport: 1000 + u16::from(i), dport: 9 };
        let mut f = vec![0u8; UDP4_HEADERS + 18];
        let n = udp4(&mut f, &a, 7, &[0xab; 18]).unwrap();
        f.truncate(n);
        f
    }

    #[test]
    fn accepts_common_frames_with_the_full_parsers_fields() {
        let t = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 1, 0, 100], 40000, 80, 0);
        let u = udp_frame(3);
        for f in [&t, &u] {
            let fast = fast_v4(f).expect("common frame");
            assert_eq!(Some(fast), full(f));
        }
        assert_eq!(fast_v4(&u).unwrap().dst_port, 9);
        assert_eq!(fast_v4(&t).unwrap().protocol, ip_proto::TCP);
    }

    #[test]
    fn the_peeked_tuple_is_the_fast_parsers_for_tcp_and_none_for_the_rest() {
        let t = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 1, 0, 100], 40000, 80, 0);
        let f = fast_v4(&t).unwrap();
        assert_eq!(peek_tcp4_tuple(&t), Some((f.src, f.dst, f.src_port, f.dst_port)));
        assert_eq!(peek_tcp4_tuple(&udp_frame(3)), None, "UDP");
        assert_eq!(peek_tcp4_tuple(&ipv4_tcp_frame(Some(7), [10, 0, 0, 1], [10, 1, 0, 100], 1, 2, 0)), None, "tagged");
        assert_eq!(peek_tcp4_tuple(&t[..37]), None, "truncated");
    }

    #[test]
    fn leaves_the_rest_to_the_full_parser() {
        // VLAN-tagged, fragment, IP options, ICMP, truncated.
        let tagged = ipv4_tcp_frame(Some(7), [10, 0, 0, 1], [10, 1, 0, 100], 40000, 80, 0);
        assert!(parse_frame(&tagged).is_ok());
        assert_eq!(fast_v4(&tagged), None);
        let mut frag = udp_frame(1);
        frag[20] = 0x20; // MF
        assert_eq!(fast_v4(&frag), None);
        let mut opts = udp_frame(1);
        opts[14] = 0x46;
        assert_eq!(fast_v4(&opts), None);
        let mut icmp = udp_frame(1);
        icmp[23] = ip_proto::ICMP;
        assert_eq!(fast_v4(&icmp), None);
        let u = udp_frame(1);
        assert_eq!(fast_v4(&u[..u.len() - 1]), None);
    }

    proptest! {
        /// Never accepts what the full parser refuses or classifies otherwise, and agrees on
        /// every field when it accepts: arbitrary bytes behind a plausible prefix.
        #[test]
        fn agrees_with_the_full_parser_on_arbitrary_bytes(tail in proptest::collection::vec(any::<u8>(), 0..80), proto in prop_oneof![Just(6u8), Just(17u8), any::<u8>()], len in 0u16..120, flags in prop_oneof![Just(0u8), any::<u8>()]) {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0, 0, 0, 0, 0, flags, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 1, 0, 100];
            f[16..18].copy_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&tail);
            if let Some(fast) = fast_v4(&f) {
                prop_assert_eq!(Some(fast), full(&f));
            }
        }

        /// Single-byte mutations of valid TCP and UDP frames.
        #[test]
        fn agrees_with_the_full_parser_on_mutated_frames(tcp in any::<bool>(), at in 0usize..80, byte in any::<u8>(), cut in 0usize..8) {
            let mut f = if tcp { ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 1, 0, 100], 40000, 80, 0) } else { udp_frame(5) };
            if at < f.len() {
                f[at] = byte;
            }
            f.truncate(f.len() - cut.min(f.len()));
            match fast_v4(&f) {
                Some(fast) => prop_assert_eq!(Some(fast), full(&f)),
                None => {}
            }
        }
    }
}
