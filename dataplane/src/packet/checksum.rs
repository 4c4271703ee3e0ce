//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Partial sums are `u32` values already folded to 16 bits, so they can be combined in any
//! order with [`combine`] (one's-complement addition is commutative). A checksum field holds
//! `!fold(sum)`; a received header is intact when the sum over it, checksum included,
//! folds to `0xffff`.
//!
//! Rewrites on the fast path (NAT-style address/port changes, TTL, ICMP type) use the
//! `update*` helpers, which cost a few additions instead of a pass over the packet. They
//! implement RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, which matches a full recomputation
//! whenever the covered data is not all zero (always true for IP headers and for TCP/UDP
//! with their pseudo-header, whose protocol word is non-zero).
//!
//! UDP over IPv4 uses a checksum of 0 for "none" and transmits a computed 0 as `0xffff`;
//! that rule lives in the UDP view (`Udp::update_*`, `Udp::fill_checksum_*`), not here.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Fold a wide one's-complement accumulator to 16 bits (end-around carries).
#[inline(always)]
pub fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// One's-complement sum of `data` as big-endian 16-bit words, folded to 16 bits.
///
/// An odd trailing byte is padded with a zero low byte, so only the last piece of a
/// multi-piece sum may have odd length.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // 32-bit words summed into a 64-bit accumulator: 2^32 words before it could overflow,
    // and 2^16 ≡ 1 (mod 0xffff) makes the 32-bit sum fold to the same 16-bit result.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64;
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u16::from_be_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if i < rest.len() {
        acc += (rest[i] as u64) << 8;
    }
    fold(acc) as u32
}

/// One's-complement addition of two partial sums.
#[inline(always)]
pub fn combine(a: u32, b: u32) -> u32 {
    fold(a as u64 + b as u64) as u32
}

/// The value to store in a checksum field for data whose sum is `partial`.
#[inline(always)]
pub fn finish(partial: u32) -> u16 {
    !fold(partial as u64)
}

/// Checksum of `data` (the checksum field inside it must be zero while computing).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// True when `data`, checksum field included, sums to `0xffff` (i.e. is intact).
#[inline]
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xffff
}

/// Partial sum of the IPv4 pseudo-header that TCP and UDP checksums cover.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u32 {
    let s = u32::from(src) as u64;
    let d = u32::from(dst) as u64;
    fold(s + d + protocol as u64 + l4_len as u64) as u32
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1) that TCP, UDP and ICMPv6 cover.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, l4_len: u32) -> u32 {
    let s = u128::from(*src);
    let d = u128::from(*dst);
    let mut acc: u64 = 0;
    for w in [s, d] {
        acc += (w as u64 & 0xffff_ffff) + ((w >> 32) as u64 & 0xffff_ffff);
        acc += ((w >> 64) as u64 & 0xffff_ffff) + (w >> 96) as u64;
    }
    acc += l4_len as u64 + next_header as u64;
    fold(acc) as u32
}

/// Full TCP/UDP checksum over IPv4 for `segment` (whose checksum field must be zero).
#[inline]
pub fn l4_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, segment: &[u8]) -> u16 {
    finish(combine(
        pseudo_header_v4(src, dst, protocol, segment.len() as u16),
        sum(segment),
    ))
}

/// Full TCP/UDP/ICMPv6 checksum over IPv6 for `segment` (checksum field zero).
#[inline]
pub fn l4_checksum_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, segment: &[u8]) -> u16 {
    finish(combine(
        pseudo_header_v6(src, dst, next_header, segment.len() as u32),
        sum(segment),
    ))
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word changed from `old` to `new`.
#[inline(always)]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(!csum as u64 + !old as u64 + new as u64)
}

/// As [`update16`] for an aligned 32-bit field (sequence numbers, IPv4 addresses).
#[inline(always)]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let o = !old;
    let acc = !csum as u64
        + (o >> 16) as u64
        + (o & 0xffff) as u64
        + (new >> 16) as u64
        + (new & 0xffff) as u64;
    !fold(acc)
}

/// As [`update16`] for an IPv4 address (in the IP header or in a pseudo-header).
#[inline(always)]
pub fn update_ipv4_addr(csum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update32(csum, u32::from(old), u32::from(new))
}

/// As [`update16`] for an IPv6 address in a pseudo-header.
#[inline]
pub fn update_ipv6_addr(csum: u16, old: &Ipv6Addr, new: &Ipv6Addr) -> u16 {
    let o = !u128::from(*old);
    let n = u128::from(*new);
    let mut acc = !csum as u64;
    for w in [o, n] {
        acc += (w as u64 & 0xffff_ffff) + ((w >> 32) as u64 & 0xffff_ffff);
        acc += ((w >> 64) as u64 & 0xffff_ffff) + (w >> 96) as u64;
    }
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: 0001 f203 f4f5 f6f7 sums to 0xddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn odd_length_pads_low_byte() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn known_ipv4_header() {
        // Classic example header (Wikipedia): checksum 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verify(&h));
    }

    #[test]
    fn carries_fold() {
        let data = [0xffu8; 4096];
        assert_eq!(sum(&data), 0xffff);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(combine(0xffff, 1), 1);
    }

    #[test]
    fn incremental_matches_full() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] = 0x3f;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let inc = update16(0xb861, old, new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, checksum(&h));

        let old = Ipv4Addr::new(192, 168, 0, 1);
        let new = Ipv4Addr::new(10, 1, 2, 3);
        h[12..16].copy_from_slice(&new.octets());
        let inc2 = update_ipv4_addr(inc, old, new);
        assert_eq!(inc2, checksum(&h));
    }

    #[test]
    fn pseudo_v6_matches_bytes() {
        let s: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d: Ipv6Addr = "fe80::abcd:1234".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&s.octets());
        bytes.extend_from_slice(&d.octets());
        bytes.extend_from_slice(&1234u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(pseudo_header_v6(&s, &d, 6, 1234), sum(&bytes));
        let n: Ipv6Addr = "2001:db8:ffff::9".parse().unwrap();
        let c = finish(pseudo_header_v6(&s, &d, 6, 1234));
        assert_eq!(
            update_ipv6_addr(c, &s, &n),
            finish(pseudo_header_v6(&n, &d, 6, 1234))
        );
    }
}
