//! IPv6 fixed header (RFC 8200) and a bounded walk over extension headers.

use std::net::Ipv6Addr;

use super::field::{
    bytes, set_bytes, set_u16, set_u32, set_u8, sub, sub_mut, u16_at, u32_at, u8_at,
};
use super::ip_proto;
use crate::stats::DropReason;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Extension headers walked before giving up (a longer chain is malformed for us: it
/// bounds the work an attacker can make one packet cost).
pub const MAX_EXT_HEADERS: usize = 8;

/// What sits behind the extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Upper {
    /// Upper-layer protocol (TCP, UDP, ICMPv6, ...) or the header where the walk stopped
    /// (ESP, No Next Header, or the protocol of a fragment).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Set when a Fragment header with a non-zero offset or the M flag was found.
    pub fragment: Option<Ipv6Fragment>,
}

/// The fields of an IPv6 Fragment header that flow handling needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Offset in bytes.
    pub offset: u16,
    /// M flag: more fragments follow.
    pub more: bool,
    /// Identification shared by the fragments of one packet.
    pub ident: u32,
}

/// Zero-copy IPv6 header view over a buffer starting at the IPv6 header. The buffer may
/// extend past the packet (Ethernet padding); [`Ipv6::payload`] stops at payload length.
#[derive(Clone, Copy, Debug)]
pub struct Ipv6<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6<T> {
    /// Validate version and that the payload length fits in the buffer. Extension headers
    /// are checked lazily by [`Ipv6::upper_layer`], which `parse_frame` always calls.
    pub fn parse(buf: T) -> Result<Self, DropReason> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN || b[0] >> 4 != 6 {
            return Err(DropReason::MalformedIpv6);
        }
        if HEADER_LEN + u16_at(b, 4) as usize > b.len() {
            return Err(DropReason::MalformedIpv6);
        }
        Ok(Ipv6 { buf })
    }

    /// A view without validation, for building a header in a zeroed buffer.
    pub fn new_unchecked(buf: T) -> Self {
        Ipv6 { buf }
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Always 6 on a parsed view.
    pub fn version(&self) -> u8 {
        u8_at(self.b(), 0) >> 4
    }

    /// Traffic class (DSCP + ECN).
    pub fn traffic_class(&self) -> u8 {
        ((u32_at(self.b(), 0) >> 20) & 0xff) as u8
    }

    /// Flow label (20 bits); senders set it per flow.
    pub fn flow_label(&self) -> u32 {
        u32_at(self.b(), 0) & 0x000f_ffff
    }

    /// Length after the fixed header, extension headers included.
    pub fn payload_len(&self) -> usize {
        u16_at(self.b(), 4) as usize
    }

    /// The Next Header field of the fixed header (may name an extension header).
    pub fn next_header(&self) -> u8 {
        u8_at(self.b(), 6)
    }

    /// Hop limit (the IPv6 TTL).
    pub fn hop_limit(&self) -> u8 {
        u8_at(self.b(), 7)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(bytes::<16>(self.b(), 8))
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(bytes::<16>(self.b(), 24))
    }

    /// Everything after the fixed header up to payload length (extension headers included).
    pub fn payload(&self) -> &[u8] {
        sub(self.b(), HEADER_LEN, HEADER_LEN + self.payload_len())
    }

    /// Walk Hop-by-Hop, Routing, Destination Options, Fragment and AH headers to the
    /// upper layer. A fragment that is not atomic (offset or M set) stops the walk: later
    /// fragments carry no upper-layer header. Atomic fragments (RFC 6946) are walked
    /// through like any other extension header. An extension header running past the
    /// payload, or a chain longer than [`MAX_EXT_HEADERS`], is `MalformedIpv6`.
    pub fn upper_layer(&self) -> Result<Ipv6Upper, DropReason> {
        let p = self.payload();
        let mut nh = self.next_header();
        let mut off = 0usize;
        for _ in 0..=MAX_EXT_HEADERS {
            let len = match nh {
                ip_proto::HOPOPT | ip_proto::IPV6_ROUTE | ip_proto::IPV6_OPTS => {
                    if off + 2 > p.len() {
                        return Err(DropReason::MalformedIpv6);
                    }
                    (p[off + 1] as usize + 1) * 8
                }
                ip_proto::AH => {
                    if off + 2 > p.len() {
                        return Err(DropReason::MalformedIpv6);
                    }
                    (p[off + 1] as usize + 2) * 4
                }
                ip_proto::IPV6_FRAG => {
                    if off + 8 > p.len() {
                        return Err(DropReason::MalformedIpv6);
                    }
                    let w = u16_at(p, off + 2);
                    let frag = Ipv6Fragment {
                        offset: w & 0xfff8,
                        more: w & 1 != 0,
                        ident: u32_at(p, off + 4),
                    };
                    if frag.offset != 0 || frag.more {
                        return Ok(Ipv6Upper {
                            protocol: p[off],
                            offset: HEADER_LEN + off + 8,
                            fragment: Some(frag),
                        });
                    }
                    8
                }
                _ => {
                    return Ok(Ipv6Upper {
                        protocol: nh,
                        offset: HEADER_LEN + off,
                        fragment: None,
                    });
                }
            };
            if off + len > p.len() {
                return Err(DropReason::MalformedIpv6);
            }
            nh = p[off];
            off += len;
        }
        Err(DropReason::MalformedIpv6)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Version 6, traffic class and flow label share the first word.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        set_u32(
            self.bm(),
            0,
            (6 << 28) | ((traffic_class as u32) << 20) | (flow_label & 0x000f_ffff),
        );
    }

    /// Set the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        set_u16(self.bm(), 4, len);
    }

    /// Set the Next Header of the fixed header.
    pub fn set_next_header(&mut self, nh: u8) {
        set_u8(self.bm(), 6, nh);
    }

    /// Set the hop limit (no checksum covers it).
    pub fn set_hop_limit(&mut self, h: u8) {
        set_u8(self.bm(), 7, h);
    }

    /// Set the source (fix L4 checksums with `update_pseudo_ipv6_addr`).
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        set_bytes(self.bm(), 8, &a.octets());
    }

    /// Set the destination (fix L4 checksums with `update_pseudo_ipv6_addr`).
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        set_bytes(self.bm(), 24, &a.octets());
    }

    /// Exchange source and destination (L4 checksums stay valid: same pseudo-header sum).
    pub fn swap_addrs(&mut self) {
        let (s, d) = (self.src_addr(), self.dst_addr());
        self.set_src_addr(d);
        self.set_dst_addr(s);
    }

    /// Mutable bytes after the fixed header, up to payload length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + self.payload_len();
        sub_mut(self.bm(), HEADER_LEN, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(nh: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        let mut ip = Ipv6::new_unchecked(&mut b[..]);
        ip.set_version_tc_flow(0xb8, 0xabcde);
        ip.set_payload_len(payload.len() as u16);
        ip.set_next_header(nh);
        ip.set_hop_limit(64);
        ip.set_src_addr("2001:db8::1".parse().unwrap());
        ip.set_dst_addr("2001:db8::2".parse().unwrap());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn fixed_header() {
        let b = packet(ip_proto::UDP, &[0; 8]);
        let ip = Ipv6::parse(&b[..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0xb8);
        assert_eq!(ip.flow_label(), 0xabcde);
        assert_eq!(ip.payload_len(), 8);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            ip.upper_layer().unwrap(),
            Ipv6Upper {
                protocol: ip_proto::UDP,
                offset: 40,
                fragment: None
            }
        );
    }

    #[test]
    fn malformed() {
        let b = packet(ip_proto::UDP, &[0; 8]);
        assert_eq!(
            Ipv6::parse(&b[..39]).unwrap_err(),
            DropReason::MalformedIpv6
        );
        assert_eq!(
            Ipv6::parse(&b[..47]).unwrap_err(),
            DropReason::MalformedIpv6
        );
        let mut x = b.clone();
        x[0] = 0x45;
        assert_eq!(Ipv6::parse(&x[..]).unwrap_err(), DropReason::MalformedIpv6);
    }

    #[test]
    fn ext_headers() {
        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> TCP.
        let mut p = vec![ip_proto::IPV6_OPTS, 0, 1, 4, 0, 0, 0, 0];
        p.extend_from_slice(&[ip_proto::TCP, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&[0; 20]);
        let b = packet(ip_proto::HOPOPT, &p);
        let up = Ipv6::parse(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(
            up,
            Ipv6Upper {
                protocol: ip_proto::TCP,
                offset: 40 + 24,
                fragment: None
            }
        );
        // Truncated extension header.
        let b = packet(ip_proto::HOPOPT, &p[..12]);
        assert_eq!(
            Ipv6::parse(&b[..]).unwrap().upper_layer().unwrap_err(),
            DropReason::MalformedIpv6
        );
    }

    #[test]
    fn fragments() {
        // Non-first fragment: offset 1448, M set.
        let f = [ip_proto::UDP, 0, 0x05, 0xa9, 0, 0, 0, 42];
        let b = packet(ip_proto::IPV6_FRAG, &f);
        let up = Ipv6::parse(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(up.protocol, ip_proto::UDP);
        assert_eq!(
            up.fragment,
            Some(Ipv6Fragment {
                offset: 1448,
                more: true,
                ident: 42
            })
        );
        // Atomic fragment: walked through.
        let mut f = vec![ip_proto::UDP, 0, 0, 0, 0, 0, 0, 1];
        f.extend_from_slice(&[0; 8]);
        let b = packet(ip_proto::IPV6_FRAG, &f);
        let up = Ipv6::parse(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(
            up,
            Ipv6Upper {
                protocol: ip_proto::UDP,
                offset: 48,
                fragment: None
            }
        );
    }

    #[test]
    fn long_chain_is_malformed() {
        let mut p = Vec::new();
        for _ in 0..=MAX_EXT_HEADERS {
            p.extend_from_slice(&[ip_proto::IPV6_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        // The last one names UDP and a UDP header follows: only the limit rejects it.
        let last = p.len() - 8;
        p[last] = ip_proto::UDP;
        p.extend_from_slice(&[0; 8]);
        let b = packet(ip_proto::IPV6_OPTS, &p);
        assert_eq!(
            Ipv6::parse(&b[..]).unwrap().upper_layer().unwrap_err(),
            DropReason::MalformedIpv6
        );
    }
}
