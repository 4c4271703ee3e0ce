//! Flow keys and flow hashes for load balancing and flow tables.
//!
//! # The fragment rule
//! Only the first fragment of a datagram carries the L4 header, so a key built from ports
//! would send the fragments of one datagram to different places. For any IP fragment
//! (IPv4 MF set or offset != 0; IPv6 non-atomic Fragment header) the key therefore has
//! **ports zeroed**: all fragments of a datagram (first included) share
//! `(src, dst, protocol, 0, 0)` and hash alike, whichever balancer instance sees them.
//! The price is that fragments of a flow hash differently from its unfragmented packets;
//! TCP sets DF and avoids fragments, so in practice this touches UDP only. Non-TCP/UDP
//! protocols (ICMP included) also have ports 0.
//!
//! # Hashes
//! [`FlowKey::hash`] is direction-sensitive: `k` and `k.reversed()` usually differ. Use it
//! when each direction is its own table entry. [`FlowKey::symmetric_hash`] is equal for
//! both directions, so a balancer that must bring the return path to the same place can
//! decide on either direction. Both are fast (three 64×64→128 multiplies), not keyed
//! against adversaries unless a secret seed is passed to the `_seeded` variants, and
//! unrelated to the NIC's Toeplitz RSS hash.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::field::{bytes, u16_at};
use super::{parse_frame, Parsed, L3, L4};
use crate::stats::DropReason;

/// Identifies a flow (5-tuple). Fragments and port-less protocols have ports 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address of this direction.
    pub src: IpAddr,
    /// Destination address of this direction.
    pub dst: IpAddr,
    /// IP protocol (upper-layer protocol for IPv6).
    pub protocol: u8,
    /// TCP/UDP source port; 0 for fragments and port-less protocols.
    pub src_port: u16,
    /// TCP/UDP destination port; 0 for fragments and port-less protocols.
    pub dst_port: u16,
}

/// Seed of [`FlowKey::hash`] and [`FlowKey::symmetric_hash`] (fractional bits of π).
pub const DEFAULT_SEED: u64 = 0x243f_6a88_85a3_08d3;

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
const K3: u64 = 0x1656_67b1_9e37_79f9;

/// Folded multiply: the workhorse of wyhash/foldhash-style mixers.
#[inline(always)]
fn fmix(a: u64, b: u64) -> u64 {
    let m = (a as u128).wrapping_mul(b as u128);
    (m as u64) ^ ((m >> 64) as u64)
}

#[inline(always)]
fn addr_bits(a: &IpAddr) -> u128 {
    match a {
        // IPv4-mapped form, so 1.2.3.4 and ::ffff:1.2.3.4 are one host.
        IpAddr::V4(v4) => 0xffff_0000_0000u128 | u32::from(*v4) as u128,
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

#[inline(always)]
fn mix(seed: u64, s: u128, d: u128, tail: u64) -> u64 {
    let h = fmix((s as u64) ^ seed ^ K1, ((s >> 64) as u64) ^ K2);
    let h = fmix((d as u64) ^ h, ((d >> 64) as u64) ^ K3 ^ seed);
    fmix(h ^ tail, K1)
}

impl FlowKey {
    /// Parse the frame (as [`parse_frame`]) and build its key. Non-IP frames (ARP, other
    /// EtherTypes) have no flow and give `Err(DropReason::NotIp)`; malformed frames
    /// give their `parse_frame` drop reason.
    pub fn from_frame(frame: &[u8]) -> Result<FlowKey, DropReason> {
        let p = parse_frame(frame)?;
        Self::from_parsed(&p, frame).ok_or(DropReason::NotIp)
    }

    /// Build the key from an already classified frame (no re-validation); `None` when the
    /// frame is not IP. `frame` must be the buffer `parsed` came from.
    pub fn from_parsed(parsed: &Parsed, frame: &[u8]) -> Option<FlowKey> {
        let (src, dst, protocol) = match parsed.l3 {
            L3::Ipv4(ip) => (
                IpAddr::V4(Ipv4Addr::from(bytes::<4>(frame, ip.offset + 12))),
                IpAddr::V4(Ipv4Addr::from(bytes::<4>(frame, ip.offset + 16))),
                ip.protocol,
            ),
            L3::Ipv6(ip) => (
                IpAddr::V6(Ipv6Addr::from(bytes::<16>(frame, ip.offset + 8))),
                IpAddr::V6(Ipv6Addr::from(bytes::<16>(frame, ip.offset + 24))),
                ip.protocol,
            ),
            L3::Arp | L3::Other => return None,
        };
        let (src_port, dst_port) = match parsed.l4 {
            L4::Tcp(l4) | L4::Udp(l4) => (u16_at(frame, l4.offset), u16_at(frame, l4.offset + 2)),
            _ => (0, 0),
        };
        Some(FlowKey {
            src,
            dst,
            protocol,
            src_port,
            dst_port,
        })
    }

    /// The key of the other direction.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }

    /// The direction-independent form: the lower (address, port) endpoint first. Two
    /// directions of a flow have the same canonical key.
    pub fn canonical(&self) -> FlowKey {
        if (addr_bits(&self.src), self.src_port) <= (addr_bits(&self.dst), self.dst_port) {
            *self
        } else {
            self.reversed()
        }
    }

    /// Direction-sensitive hash (see module docs). Note: an inherent method, distinct from
    /// `std::hash::Hash::hash`, which `HashMap` keeps using.
    #[inline]
    pub fn hash(&self) -> u64 {
        self.hash_seeded(DEFAULT_SEED)
    }

    /// [`FlowKey::hash`] with a caller-chosen seed (a secret one resists crafted collisions).
    #[inline]
    pub fn hash_seeded(&self, seed: u64) -> u64 {
        let tail =
            ((self.protocol as u64) << 32) | ((self.src_port as u64) << 16) | self.dst_port as u64;
        mix(seed, addr_bits(&self.src), addr_bits(&self.dst), tail)
    }

    /// Same value for both directions of a flow (see module docs).
    #[inline]
    pub fn symmetric_hash(&self) -> u64 {
        self.symmetric_hash_seeded(DEFAULT_SEED)
    }

    /// [`FlowKey::symmetric_hash`] with a caller-chosen seed.
    #[inline]
    pub fn symmetric_hash_seeded(&self, seed: u64) -> u64 {
        self.canonical().hash_seeded(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ip_proto;
    use crate::packet::testutil::*;

    #[test]
    fn tcp_v4_key() {
        let f = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 443, 0);
        let k = FlowKey::from_frame(&f).unwrap();
        assert_eq!(k.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(k.dst, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(
            (k.protocol, k.src_port, k.dst_port),
            (ip_proto::TCP, 40000, 443)
        );
        let r = FlowKey::from_frame(&ipv4_tcp_frame(
            Some(7),
            [10, 0, 0, 2],
            [10, 0, 0, 1],
            443,
            40000,
            0,
        ))
        .unwrap();
        assert_eq!(r, k.reversed());
        assert_eq!(r.symmetric_hash(), k.symmetric_hash());
        assert_ne!(r.hash(), k.hash());
        assert_eq!(r.canonical(), k.canonical());
        assert_ne!(k.hash_seeded(1), k.hash_seeded(2));
    }

    #[test]
    fn fragments_zero_ports() {
        let first = ipv4_tcp_frame(None, [1, 1, 1, 1], [2, 2, 2, 2], 1000, 2000, 0x2000); // MF
        let later = ipv4_tcp_frame(None, [1, 1, 1, 1], [2, 2, 2, 2], 5555, 6666, 0x00b9); // offset
        let whole = ipv4_tcp_frame(None, [1, 1, 1, 1], [2, 2, 2, 2], 1000, 2000, 0x4000); // DF
        let (a, b, c) = (
            FlowKey::from_frame(&first).unwrap(),
            FlowKey::from_frame(&later).unwrap(),
            FlowKey::from_frame(&whole).unwrap(),
        );
        assert_eq!((a.src_port, a.dst_port), (0, 0));
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        assert_eq!((c.src_port, c.dst_port), (1000, 2000));
    }

    #[test]
    fn non_ip_has_no_flow() {
        assert_eq!(
            FlowKey::from_frame(&arp_request_frame(None)).unwrap_err(),
            DropReason::NotIp
        );
        assert_eq!(
            FlowKey::from_frame(&[0u8; 5]).unwrap_err(),
            DropReason::TruncatedEthernet
        );
    }

    #[test]
    fn v6_key() {
        let f = ipv6_udp_frame("2001:db8::1", "2001:db8::2", 5000, 53);
        let k = FlowKey::from_frame(&f).unwrap();
        assert_eq!(k.src, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (k.protocol, k.src_port, k.dst_port),
            (ip_proto::UDP, 5000, 53)
        );
    }

    #[test]
    fn hash_spreads() {
        // 4096 ports over 16 buckets: every bucket used, none grossly overloaded.
        let mut buckets = [0u32; 16];
        for p in 0..4096u16 {
            let k = FlowKey {
                src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                protocol: 6,
                src_port: 30000 + p,
                dst_port: 80,
            };
            buckets[(k.hash() % 16) as usize] += 1;
            buckets[(k.symmetric_hash() % 16) as usize] += 1;
        }
        for n in buckets {
            assert!((384..=640).contains(&n), "{buckets:?}");
        }
    }
}
