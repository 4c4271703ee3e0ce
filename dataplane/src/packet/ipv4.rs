//! IPv4 header (RFC 791) with options and fragment fields.

use std::net::Ipv4Addr;

use super::checksum;
use super::field::{bytes, set_bytes, set_u16, set_u8, sub, sub_mut, u16_at, u8_at};
use crate::stats::DropReason;

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// The TTL the appliance puts on packets it originates.
pub const DEFAULT_TTL: u8 = 64;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// Zero-copy IPv4 header view over a buffer starting at the IP header. The buffer may be
/// longer than the datagram (Ethernet padding); [`Ipv4::payload`] stops at total length.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4<T> {
    /// Full validation: structure, then the header checksum. A parsed view has a trustworthy
    /// header and a payload that lies entirely inside the buffer.
    pub fn parse(buf: T) -> Result<Self, DropReason> {
        let ip = Self::parse_unverified(buf)?;
        if !ip.verify_checksum() {
            return Err(DropReason::BadIpv4Checksum);
        }
        Ok(ip)
    }

    /// Structural validation only (version, IHL, total length), for paths where the NIC
    /// already verified the checksum, or for headers being rewritten.
    pub fn parse_unverified(buf: T) -> Result<Self, DropReason> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN || b[0] >> 4 != 4 {
            return Err(DropReason::MalformedIpv4);
        }
        let hl = ((b[0] & 0x0f) as usize) * 4;
        let total = u16_at(b, 2) as usize;
        if hl < MIN_HEADER_LEN || hl > b.len() || total < hl || total > b.len() {
            return Err(DropReason::MalformedIpv4);
        }
        Ok(Ipv4 { buf })
    }

    /// A view without validation, for building a header in a zeroed buffer. Accessors stay
    /// panic-free on any buffer.
    pub fn new_unchecked(buf: T) -> Self {
        Ipv4 { buf }
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Always 4 on a parsed view.
    pub fn version(&self) -> u8 {
        u8_at(self.b(), 0) >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        (u8_at(self.b(), 0) & 0x0f) as usize * 4
    }

    /// DiffServ code point (upper 6 bits of the TOS byte).
    pub fn dscp(&self) -> u8 {
        u8_at(self.b(), 1) >> 2
    }

    /// ECN bits (lower 2 bits of the TOS byte).
    pub fn ecn(&self) -> u8 {
        u8_at(self.b(), 1) & 0x03
    }

    /// Datagram length (header + payload) from the header.
    pub fn total_len(&self) -> usize {
        u16_at(self.b(), 2) as usize
    }

    /// Identification: groups the fragments of one datagram.
    pub fn ident(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    /// DF flag.
    pub fn dont_frag(&self) -> bool {
        u16_at(self.b(), 6) & FLAG_DF != 0
    }

    /// MF flag: more fragments follow.
    pub fn more_frags(&self) -> bool {
        u16_at(self.b(), 6) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field × 8).
    pub fn frag_offset(&self) -> u16 {
        (u16_at(self.b(), 6) & OFFSET_MASK) << 3
    }

    /// Part of a fragmented datagram (MF set or non-zero offset): its L4 header is absent
    /// or incomplete for flow purposes, see `flow` for the hashing rule.
    pub fn is_fragment(&self) -> bool {
        u16_at(self.b(), 6) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        u8_at(self.b(), 8)
    }

    /// Payload protocol (see [`crate::packet::ip_proto`]).
    pub fn protocol(&self) -> u8 {
        u8_at(self.b(), 9)
    }

    /// Header checksum field as received.
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), 10)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(bytes::<4>(self.b(), 12))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(bytes::<4>(self.b(), 16))
    }

    /// Raw option bytes (between the fixed header and IHL × 4).
    pub fn options(&self) -> &[u8] {
        sub(self.b(), MIN_HEADER_LEN, self.header_len())
    }

    /// The datagram payload, without Ethernet padding.
    pub fn payload(&self) -> &[u8] {
        sub(self.b(), self.header_len(), self.total_len())
    }

    /// True when the header (options included) sums to 0xffff.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(sub(self.b(), 0, self.header_len()))
    }

    /// The checksum the header should carry (ignores the current field value).
    pub fn compute_checksum(&self) -> u16 {
        let h = sub(self.b(), 0, self.header_len());
        let with_field = checksum::sum(h);
        // Remove the field's own contribution instead of copying the header.
        let field = self.checksum() as u32;
        checksum::finish(checksum::combine(with_field, !field & 0xffff))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Version 4 and the header length in bytes (multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        set_u8(self.bm(), 0, 0x40 | ((header_len / 4) as u8 & 0x0f));
    }

    /// Set the TOS byte (no checksum fix).
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        set_u8(self.bm(), 1, (dscp << 2) | (ecn & 0x03));
    }

    /// Set the datagram length (no checksum fix).
    pub fn set_total_len(&mut self, len: u16) {
        set_u16(self.bm(), 2, len);
    }

    /// Set the identification (no checksum fix).
    pub fn set_ident(&mut self, id: u16) {
        set_u16(self.bm(), 4, id);
    }

    /// Flags and offset together (offset in bytes, a multiple of 8) because they share a word.
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut w = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            w |= FLAG_DF;
        }
        if more_frags {
            w |= FLAG_MF;
        }
        set_u16(self.bm(), 6, w);
    }

    /// Set the TTL without fixing the checksum (see `update_ttl`).
    pub fn set_ttl(&mut self, ttl: u8) {
        set_u8(self.bm(), 8, ttl);
    }

    /// Set the payload protocol (no checksum fix).
    pub fn set_protocol(&mut self, p: u8) {
        set_u8(self.bm(), 9, p);
    }

    /// Write the header checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.bm(), 10, c);
    }

    /// Set the source without fixing checksums (see `update_src_addr`).
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        set_bytes(self.bm(), 12, &a.octets());
    }

    /// Set the destination without fixing checksums (see `update_dst_addr`).
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        set_bytes(self.bm(), 16, &a.octets());
    }

    /// Recompute the header checksum from scratch (after building a header).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(sub(self.b(), 0, self.header_len()));
        self.set_checksum(c);
    }

    /// Set the TTL and fix the header checksum incrementally (forwarding, replies).
    pub fn update_ttl(&mut self, ttl: u8) {
        let old = u16_at(self.b(), 8);
        self.set_ttl(ttl);
        let new = u16_at(self.b(), 8);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Set the source address and fix the header checksum incrementally (NAT). The L4
    /// checksum covers the address too: fix it with the L4 view's `update_pseudo_*`.
    pub fn update_src_addr(&mut self, a: Ipv4Addr) {
        let c = checksum::update_ipv4_addr(self.checksum(), self.src_addr(), a);
        self.set_src_addr(a);
        self.set_checksum(c);
    }

    /// As [`Ipv4::update_src_addr`] for the destination.
    pub fn update_dst_addr(&mut self, a: Ipv4Addr) {
        let c = checksum::update_ipv4_addr(self.checksum(), self.dst_addr(), a);
        self.set_dst_addr(a);
        self.set_checksum(c);
    }

    /// Exchange source and destination. Needs no checksum fix: the one's-complement sum
    /// (header and pseudo-header alike) does not depend on word order.
    pub fn swap_addrs(&mut self) {
        let (s, d) = (self.src_addr(), self.dst_addr());
        self.set_src_addr(d);
        self.set_dst_addr(s);
    }

    /// Mutable option bytes.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        sub_mut(self.bm(), MIN_HEADER_LEN, hl)
    }

    /// Mutable payload (up to total length).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), self.total_len());
        sub_mut(self.bm(), hl, tl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic example header from RFC-style tutorials (UDP, checksum 0xb861).
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn datagram() -> Vec<u8> {
        let mut v = HDR.to_vec();
        v.resize(0x73, 0xab);
        v
    }

    #[test]
    fn parse_known() {
        let d = datagram();
        let ip = Ipv4::parse(&d[..]).unwrap();
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.total_len(), 0x73);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert!(!ip.is_fragment());
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), 17);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(ip.payload().len(), 0x73 - 20);
        assert!(ip.options().is_empty());
        assert_eq!(ip.compute_checksum(), 0xb861);
    }

    #[test]
    fn padding_is_not_payload() {
        let mut d = datagram();
        d.extend_from_slice(&[0; 10]);
        let ip = Ipv4::parse(&d[..]).unwrap();
        assert_eq!(ip.payload().len(), 0x73 - 20);
    }

    #[test]
    fn malformed() {
        let d = datagram();
        assert_eq!(
            Ipv4::parse(&d[..19]).unwrap_err(),
            DropReason::MalformedIpv4
        );
        assert_eq!(
            Ipv4::parse(&d[..0x72]).unwrap_err(),
            DropReason::MalformedIpv4,
            "total > buffer"
        );
        let mut x = d.clone();
        x[0] = 0x65;
        assert_eq!(
            Ipv4::parse(&x[..]).unwrap_err(),
            DropReason::MalformedIpv4,
            "version"
        );
        let mut x = d.clone();
        x[0] = 0x44;
        assert_eq!(
            Ipv4::parse(&x[..]).unwrap_err(),
            DropReason::MalformedIpv4,
            "ihl < 5"
        );
        let mut x = d.clone();
        x[2] = 0;
        x[3] = 19;
        assert_eq!(
            Ipv4::parse(&x[..]).unwrap_err(),
            DropReason::MalformedIpv4,
            "total < ihl"
        );
        let mut x = d[..24].to_vec();
        x[0] = 0x47; // 28-byte header in a 24-byte buffer
        x[3] = 24;
        assert_eq!(
            Ipv4::parse(&x[..]).unwrap_err(),
            DropReason::MalformedIpv4,
            "ihl > buffer"
        );
        let mut x = d.clone();
        x[11] ^= 1;
        assert_eq!(
            Ipv4::parse(&x[..]).unwrap_err(),
            DropReason::BadIpv4Checksum
        );
        assert!(Ipv4::parse_unverified(&x[..]).is_ok());
    }

    #[test]
    fn options_and_fragments() {
        let mut b = [0u8; 40];
        let mut ip = Ipv4::new_unchecked(&mut b[..]);
        ip.set_version_and_header_len(24);
        ip.set_total_len(40);
        ip.set_frag(false, true, 1480);
        ip.set_ttl(3);
        ip.set_protocol(6);
        ip.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        ip.fill_checksum();
        let ip = Ipv4::parse(&b[..]).unwrap();
        assert_eq!(ip.header_len(), 24);
        assert_eq!(ip.options(), &[1, 1, 1, 0]);
        assert!(ip.more_frags() && ip.is_fragment());
        assert_eq!(ip.frag_offset(), 1480);
        assert_eq!(ip.payload().len(), 16);
    }

    #[test]
    fn incremental_updates_keep_checksum_valid() {
        let mut d = datagram();
        let mut ip = Ipv4::parse(&mut d[..]).unwrap();
        ip.update_ttl(1);
        ip.update_src_addr(Ipv4Addr::new(10, 9, 8, 7));
        ip.update_dst_addr(Ipv4Addr::new(172, 16, 254, 1));
        ip.swap_addrs();
        assert!(ip.verify_checksum());
        let c = ip.checksum();
        ip.fill_checksum();
        assert_eq!(c, ip.checksum());
        assert_eq!(ip.src_addr(), Ipv4Addr::new(172, 16, 254, 1));
    }

    #[test]
    fn short_unchecked_is_harmless() {
        let mut b = [0x4fu8; 3];
        let mut ip = Ipv4::new_unchecked(&mut b[..]);
        assert!(ip.payload().is_empty());
        assert!(ip.options().is_empty());
        ip.update_ttl(9);
        ip.fill_checksum();
        assert_eq!(ip.src_addr(), Ipv4Addr::UNSPECIFIED);
    }
}
