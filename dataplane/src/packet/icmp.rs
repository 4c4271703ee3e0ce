//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages: the common 8-byte header, with echo
//! identifier and sequence number.

use std::net::Ipv6Addr;

use super::checksum;
use super::field::{set_u16, set_u8, sub, sub_mut, u16_at, u8_at};
use super::ip_proto;
use crate::stats::DropReason;

/// Type, code, checksum and the 4-byte rest-of-header (id/seq for echo).
pub const HEADER_LEN: usize = 8;

/// ICMPv4 message types the appliance deals with.
pub mod icmp_type {
    /// Echo reply (ping answer).
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (quotes the offending header).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request (ping).
    pub const ECHO_REQUEST: u8 = 8;
    /// Source quench (deprecated, RFC 6633; still quotes the offending header).
    pub const SOURCE_QUENCH: u8 = 4;
    /// Time exceeded (traceroute).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem (quotes the offending header).
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// ICMPv6 echo request.
    pub const V6_ECHO_REQUEST: u8 = 128;
    /// ICMPv6 echo reply.
    pub const V6_ECHO_REPLY: u8 = 129;
}

/// Zero-copy ICMP/ICMPv6 view over the whole message (the IP payload, trimmed to IP
/// length: the ICMPv4 checksum covers exactly the buffer).
#[derive(Clone, Copy, Debug)]
pub struct Icmp<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Icmp<T> {
    /// Every ICMP message has the 8-byte header; shorter is `MalformedIcmp`.
    pub fn parse(buf: T) -> Result<Self, DropReason> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(DropReason::MalformedIcmp);
        }
        Ok(Icmp { buf })
    }

    /// A view without validation, for building a message in a zeroed buffer.
    pub fn new_unchecked(buf: T) -> Self {
        Icmp { buf }
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Message type (see [`icmp_type`]).
    pub fn msg_type(&self) -> u8 {
        u8_at(self.b(), 0)
    }

    /// Code within the type (0 for echo).
    pub fn code(&self) -> u8 {
        u8_at(self.b(), 1)
    }

    /// The checksum field as received.
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    /// Echo identifier (meaningful for echo request/reply).
    pub fn echo_ident(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    pub fn echo_seq(&self) -> u16 {
        u16_at(self.b(), 6)
    }

    /// Data after the 8-byte header (echo data, or the quoted packet of an error).
    pub fn payload(&self) -> &[u8] {
        let b = self.b();
        sub(b, HEADER_LEN, b.len())
    }

    /// ICMPv4 checksum check (covers the message only).
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.b())
    }

    /// ICMPv6 checksum check (covers a pseudo-header too).
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.b();
        checksum::combine(
            checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, b.len() as u32),
            checksum::sum(b),
        ) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmp<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Set the type without fixing the checksum (see `update_type_code`).
    pub fn set_msg_type(&mut self, t: u8) {
        set_u8(self.bm(), 0, t);
    }

    /// Set the code without fixing the checksum.
    pub fn set_code(&mut self, c: u8) {
        set_u8(self.bm(), 1, c);
    }

    /// Write the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.bm(), 2, c);
    }

    /// Set the echo identifier.
    pub fn set_echo_ident(&mut self, id: u16) {
        set_u16(self.bm(), 4, id);
    }

    /// Set the echo sequence number.
    pub fn set_echo_seq(&mut self, s: u16) {
        set_u16(self.bm(), 6, s);
    }

    /// Mutable data after the 8-byte header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let b = self.bm();
        let end = b.len();
        sub_mut(b, HEADER_LEN, end)
    }

    /// Recompute the ICMPv4 checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.b());
        self.set_checksum(c);
    }

    /// Recompute the ICMPv6 checksum from scratch.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v6(src, dst, ip_proto::ICMPV6, self.b());
        self.set_checksum(c);
    }

    /// Set type and code keeping the checksum valid: turning a request into a reply must
    /// not cost a pass over the echo data.
    ///
    /// ICMPv4 has no pseudo-header, so the message can be all zero (an echo reply with id
    /// 0, seq 0 and zero data), whose checksum is 0xffff while RFC 1624 yields 0x0000. That
    /// is only possible when the update yields 0, so only then (1 in 65536) is the message
    /// scanned; the result always equals a full recomputation.
    pub fn update_type_code(&mut self, t: u8, code: u8) {
        let old = u16_at(self.b(), 0);
        self.set_msg_type(t);
        self.set_code(code);
        let mut c = checksum::update16(self.checksum(), old, u16::from_be_bytes([t, code]));
        if c == 0 {
            let b = self.b();
            let zero = |s: &[u8]| s.iter().all(|&x| x == 0);
            if zero(sub(b, 0, 2)) && zero(sub(b, 4, b.len())) {
                c = 0xffff;
            }
        }
        self.set_checksum(c);
    }
}

/// The flow of the datagram an ICMPv4 error message quotes (RFC 792: its IPv4 header and
/// at least the first 8 bytes of its payload, i.e. the TCP/UDP ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedV4 {
    pub src: std::net::Ipv4Addr,
    pub dst: std::net::Ipv4Addr,
    /// `ip_proto::TCP` or `ip_proto::UDP`.
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// The quoted TCP or UDP flow of an ICMPv4 error (destination unreachable — PMTU's
/// "fragmentation needed" —, source quench, time exceeded, parameter problem); `msg` is
/// the ICMP message (header and body). `None` for other messages, a quoted header that is
/// not a well-formed IPv4 header, another protocol, a non-first fragment (no ports), or a
/// quote too short to hold the ports.
pub fn quoted_v4(msg: &[u8]) -> Option<QuotedV4> {
    use icmp_type::*;
    let kind = *msg.first()?;
    if ![DEST_UNREACHABLE, SOURCE_QUENCH, TIME_EXCEEDED, PARAMETER_PROBLEM].contains(&kind) {
        return None;
    }
    let ip = msg.get(HEADER_LEN..)?;
    let (&vihl, _) = ip.split_first()?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
    if frag & 0x1fff != 0 {
        return None;
    }
    let protocol = *ip.get(9)?;
    if protocol != crate::packet::ip_proto::TCP && protocol != crate::packet::ip_proto::UDP {
        return None;
    }
    let a = |o: usize| -> Option<std::net::Ipv4Addr> { Some(std::net::Ipv4Addr::new(*ip.get(o)?, *ip.get(o + 1)?, *ip.get(o + 2)?, *ip.get(o + 3)?)) };
    let ports = ip.get(ihl..ihl + 4)?;
    Some(QuotedV4 {
        src: a(12)?,
        dst: a(16)?,
        protocol,
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// ICMP type/code, then a quoted IPv4 header (proto, src, dst) and ports.
    fn error(kind: u8, proto: u8, frag: u16, ports: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, 4, 0, 0, 0, 0, 0x05, 0xdc];
        m.extend_from_slice(&[0x45, 0, 0, 60, 0, 0]);
        m.extend_from_slice(&frag.to_be_bytes());
        m.extend_from_slice(&[64, proto, 0, 0, 192, 0, 2, 10, 198, 51, 100, 7]);
        m.extend_from_slice(ports);
        m
    }

    #[test]
    fn quoted_flows_of_icmp_errors() {
        let q = quoted_v4(&error(3, 6, 0, &[0, 80, 0x9c, 0x40, 1, 2, 3, 4])).unwrap();
        assert_eq!(q, QuotedV4 { src: [192, 0, 2, 10].into(), dst: [198, 51, 100, 7].into(), protocol: 6, src_port: 80, dst_port: 40000 });
        for kind in [4, 11, 12] {
            assert!(quoted_v4(&error(kind, 17, 0x4000, &[0, 53, 0, 99])).is_some(), "type {kind}, DF set");
        }
        assert_eq!(quoted_v4(&error(8, 6, 0, &[0, 80, 0, 81])), None, "echo request");
        assert_eq!(quoted_v4(&error(3, 1, 0, &[0, 80, 0, 81])), None, "quoted ICMP");
        assert_eq!(quoted_v4(&error(3, 6, 0x0010, &[0, 80, 0, 81])), None, "non-first fragment");
        assert_eq!(quoted_v4(&error(3, 6, 0, &[0, 80, 0])), None, "ports cut");
        let mut bad = error(3, 6, 0, &[0, 80, 0, 81]);
        bad[8] = 0x65;
        assert_eq!(quoted_v4(&bad), None, "not IPv4");
    }

    proptest! {
        #[test]
        fn quoted_v4_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = quoted_v4(&msg);
        }
    }

    use super::*;

    #[test]
    fn echo() {
        let mut b = vec![0u8; 8];
        b.extend_from_slice(b"abcdefgh");
        let mut m = Icmp::new_unchecked(&mut b[..]);
        m.set_msg_type(icmp_type::ECHO_REQUEST);
        m.set_echo_ident(0x1234);
        m.set_echo_seq(7);
        m.fill_checksum();
        let m = Icmp::parse(&b[..]).unwrap();
        assert_eq!(
            (m.msg_type(), m.code(), m.echo_ident(), m.echo_seq()),
            (8, 0, 0x1234, 7)
        );
        assert_eq!(m.payload(), b"abcdefgh");
        assert!(m.verify_checksum());
        let mut m = Icmp::parse(&mut b[..]).unwrap();
        m.update_type_code(icmp_type::ECHO_REPLY, 0);
        assert!(m.verify_checksum());
        let c = m.checksum();
        m.fill_checksum();
        assert_eq!(c, m.checksum());
    }

    #[test]
    fn v6_checksum() {
        let s: Ipv6Addr = "fe80::1".parse().unwrap();
        let d: Ipv6Addr = "fe80::2".parse().unwrap();
        let mut b = vec![icmp_type::V6_ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1, 0xaa];
        let mut m = Icmp::parse(&mut b[..]).unwrap();
        m.fill_checksum_v6(&s, &d);
        assert!(m.verify_checksum_v6(&s, &d));
        assert!(!m.verify_checksum_v6(&d, &d));
    }

    #[test]
    fn all_zero_reply_gets_0xffff() {
        // Echo request id 0 seq 0, no data: the reply is all zero but for its checksum.
        let mut b = [icmp_type::ECHO_REQUEST, 0, 0, 0, 0, 0, 0, 0];
        let mut m = Icmp::parse(&mut b[..]).unwrap();
        m.fill_checksum();
        m.update_type_code(icmp_type::ECHO_REPLY, 0);
        assert_eq!(m.checksum(), 0xffff);
        assert!(m.verify_checksum());
        // Same sum residue but non-zero data: 0x0000 is the recomputed value and stays.
        let mut b = [icmp_type::ECHO_REQUEST, 0, 0, 0, 0xff, 0xff, 0, 0];
        let mut m = Icmp::parse(&mut b[..]).unwrap();
        m.fill_checksum();
        m.update_type_code(icmp_type::ECHO_REPLY, 0);
        let inc = m.checksum();
        m.fill_checksum();
        assert_eq!(inc, m.checksum());
        assert!(m.verify_checksum());
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Icmp::parse(&[8u8, 0, 0, 0, 0, 0, 0][..]).unwrap_err(),
            DropReason::MalformedIcmp
        );
    }
}
