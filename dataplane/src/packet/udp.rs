//! UDP header (RFC 768).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::field::{set_u16, sub, sub_mut, u16_at};
use super::ip_proto;
use crate::stats::DropReason;

/// UDP header length.
pub const HEADER_LEN: usize = 8;

/// Zero-copy UDP view over the IP payload. The length field is authoritative for the
/// payload; the buffer may be longer (it never is after IP trimming, but be lenient).
#[derive(Clone, Copy, Debug)]
pub struct Udp<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Udp<T> {
    /// Validate the length field: at least the header, at most the buffer.
    pub fn parse(buf: T) -> Result<Self, DropReason> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::MalformedUdp);
        }
        let l = u16_at(b, 4) as usize;
        if l < HEADER_LEN || l > b.len() {
            return Err(DropReason::MalformedUdp);
        }
        Ok(Udp { buf })
    }

    /// A view without validation, for building a header in a zeroed buffer.
    pub fn new_unchecked(buf: T) -> Self {
        Udp { buf }
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        u16_at(self.b(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    /// Datagram length from the header (header + payload).
    pub fn len(&self) -> usize {
        u16_at(self.b(), 4) as usize
    }

    /// True for a header-only datagram.
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN
    }

    /// 0 over IPv4 means "no checksum".
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), 6)
    }

    /// Datagram data, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        sub(self.b(), HEADER_LEN, self.len())
    }

    fn datagram(&self) -> &[u8] {
        sub(self.b(), 0, self.len())
    }

    /// Checksum check over IPv4 (a zero checksum, meaning none, passes).
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let d = self.datagram();
        checksum::combine(
            checksum::pseudo_header_v4(src, dst, ip_proto::UDP, d.len() as u16),
            checksum::sum(d),
        ) == 0xffff
    }

    /// Checksum check over IPv6 (mandatory there, so zero fails).
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let d = self.datagram();
        self.checksum() != 0
            && checksum::combine(
                checksum::pseudo_header_v6(src, dst, ip_proto::UDP, d.len() as u32),
                checksum::sum(d),
            ) == 0xffff
    }
}

/// A computed 0 goes on the wire as 0xffff: 0 means "no checksum".
#[inline]
fn nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Udp<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Set without checksum fix (see `update_src_port`).
    pub fn set_src_port(&mut self, p: u16) {
        set_u16(self.bm(), 0, p);
    }

    /// Set without checksum fix (see `update_dst_port`).
    pub fn set_dst_port(&mut self, p: u16) {
        set_u16(self.bm(), 2, p);
    }

    /// Set the length field (header + data).
    pub fn set_len(&mut self, l: u16) {
        set_u16(self.bm(), 4, l);
    }

    /// Write the checksum field (0 = none over IPv4).
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.bm(), 6, c);
    }

    /// Mutable datagram data.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = self.len();
        sub_mut(self.bm(), HEADER_LEN, l)
    }

    /// Compute the checksum over IPv4 from scratch.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v4(src, dst, ip_proto::UDP, self.datagram());
        self.set_checksum(nonzero(c));
    }

    /// Compute the checksum over IPv6 from scratch.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v6(src, dst, ip_proto::UDP, self.datagram());
        self.set_checksum(nonzero(c));
    }

    /// Apply an incremental fix unless the datagram carries no checksum.
    fn fix(&mut self, f: impl FnOnce(u16) -> u16) {
        let c = self.checksum();
        if c != 0 {
            self.set_checksum(nonzero(f(c)));
        }
    }

    /// Set the source port keeping the checksum valid (left at 0 when absent).
    pub fn update_src_port(&mut self, p: u16) {
        let old = self.src_port();
        self.set_src_port(p);
        self.fix(|c| checksum::update16(c, old, p));
    }

    /// Set the destination port keeping the checksum valid.
    pub fn update_dst_port(&mut self, p: u16) {
        let old = self.dst_port();
        self.set_dst_port(p);
        self.fix(|c| checksum::update16(c, old, p));
    }

    /// Fix the checksum after the IPv4 header's address changed (pseudo-header).
    pub fn update_pseudo_ipv4_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        self.fix(|c| checksum::update_ipv4_addr(c, old, new));
    }

    /// Fix the checksum after an IPv6 address changed (pseudo-header).
    pub fn update_pseudo_ipv6_addr(&mut self, old: &Ipv6Addr, new: &Ipv6Addr) {
        self.fix(|c| checksum::update_ipv6_addr(c, old, new));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgram(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b.extend_from_slice(payload);
        let mut u = Udp::new_unchecked(&mut b[..]);
        u.set_src_port(5353);
        u.set_dst_port(53);
        u.set_len((HEADER_LEN + payload.len()) as u16);
        b
    }

    #[test]
    fn parse_and_checksum() {
        let (s, d) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 2));
        let mut b = dgram(b"hello");
        let u = Udp::parse(&b[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (5353, 53, 13));
        assert_eq!(u.payload(), b"hello");
        assert!(u.verify_checksum_v4(s, d), "no checksum passes");
        let mut u = Udp::parse(&mut b[..]).unwrap();
        u.fill_checksum_v4(s, d);
        assert!(u.verify_checksum_v4(s, d));
        u.update_dst_port(5300);
        u.update_pseudo_ipv4_addr(s, Ipv4Addr::new(1, 2, 3, 4));
        assert!(u.verify_checksum_v4(Ipv4Addr::new(1, 2, 3, 4), d));
        assert_ne!(u.checksum(), 0);
    }

    #[test]
    fn zero_checksum_stays_zero() {
        let mut b = dgram(b"x");
        let mut u = Udp::parse(&mut b[..]).unwrap();
        u.update_src_port(1);
        u.update_pseudo_ipv4_addr(Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2));
        assert_eq!(u.checksum(), 0);
    }

    #[test]
    fn v6_checksum() {
        let s: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut b = dgram(b"abc");
        let mut u = Udp::parse(&mut b[..]).unwrap();
        assert!(!u.verify_checksum_v6(&s, &d));
        u.fill_checksum_v6(&s, &d);
        assert!(u.verify_checksum_v6(&s, &d));
        let n: Ipv6Addr = "2001:db8::99".parse().unwrap();
        u.update_pseudo_ipv6_addr(&s, &n);
        assert!(u.verify_checksum_v6(&n, &d));
    }

    #[test]
    fn malformed() {
        let b = dgram(b"hello");
        assert_eq!(Udp::parse(&b[..7]).unwrap_err(), DropReason::MalformedUdp);
        assert_eq!(
            Udp::parse(&b[..12]).unwrap_err(),
            DropReason::MalformedUdp,
            "len > buffer"
        );
        let mut x = b.clone();
        x[5] = 7;
        assert_eq!(
            Udp::parse(&x[..]).unwrap_err(),
            DropReason::MalformedUdp,
            "len < 8"
        );
        let mut x = b.clone();
        x.push(0);
        assert_eq!(
            Udp::parse(&x[..]).unwrap().payload(),
            b"hello",
            "length field wins"
        );
    }
}
