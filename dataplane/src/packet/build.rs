//! Building the few frames the appliance originates itself: in-band heartbeats (UDP over
//! IPv4), ARP requests for the neighbours it sends them to, and the TCP segments of the
//! splice's handshakes (SYN-ACK to a client, SYN and ACK to a backend, RSTs). Written into a caller's
//! buffer, so the control thread can build straight into a fixed-size message for an
//! lcore; no allocation.

use super::checksum;
use super::{arp, ethertype, ip_proto};
use std::net::Ipv4Addr;

/// Ethernet + IPv4 (no options) + UDP headers.
pub const UDP4_HEADERS: usize = 14 + 20 + 8;
/// An ARP request on Ethernet, without padding.
pub const ARP_LEN: usize = 14 + 28;

/// Addresses of one IPv4/UDP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Udp4Addrs {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

/// Writes an Ethernet/IPv4/UDP frame carrying `payload` into `out`; returns its length,
/// or `None` when `out` is too small or the datagram would exceed 65535 bytes. TTL 64,
/// DF set, both checksums filled in.
pub fn udp4(out: &mut [u8], a: &Udp4Addrs, ip_id: u16, payload: &[u8]) -> Option<usize> {
    let len = UDP4_HEADERS.checked_add(payload.len())?;
    let f = out.get_mut(..len)?;
    let rest = eth_ipv4(f, (a.src_mac, a.dst_mac), (a.src, a.dst), ip_proto::UDP, ip_id)?;
    let udp_len = rest.len() as u16;
    rest[0..2].copy_from_slice(&a.sport.to_be_bytes());
    rest[2..4].copy_from_slice(&a.dport.to_be_bytes());
    rest[4..6].copy_from_slice(&udp_len.to_be_bytes());
    rest[6..8].copy_from_slice(&[0, 0]);
    rest[8..].copy_from_slice(payload);
    // RFC 768: a computed zero is sent as all ones.
    let c = match checksum::l4_checksum_v4(a.src, a.dst, ip_proto::UDP, rest) {
        0 => 0xffff,
        c => c,
    };
    rest[6..8].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

/// Ethernet + IPv4 (no options) + TCP headers without options.
pub const TCP4_HEADERS: usize = 14 + 20 + 20;

/// The header fields of one IPv4/TCP segment the appliance originates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcp4Segment {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// [`super::tcp::flags`] bits.
    pub flags: u8,
    /// The window field as sent (already scaled down by the sender's shift).
    pub window: u16,
    pub ip_id: u16,
}

/// Writes an Ethernet/IPv4/TCP frame with `options` (a multiple of 4 bytes, at most 40)
/// and `payload` into `out`; returns its length, or `None` when `out` is too small, the
/// options are not a whole number of words or too long, or the datagram would exceed
/// 65535 bytes. TTL 64, DF set, both checksums filled in.
pub fn tcp4(out: &mut [u8], s: &Tcp4Segment, options: &[u8], payload: &[u8]) -> Option<usize> {
    if options.len() % 4 != 0 || options.len() > 40 {
        return None;
    }
    let len = TCP4_HEADERS.checked_add(options.len())?.checked_add(payload.len())?;
    let f = out.get_mut(..len)?;
    let rest = eth_ipv4(f, (s.src_mac, s.dst_mac), (s.src, s.dst), ip_proto::TCP, s.ip_id)?;
    let hl = 20 + options.len();
    rest[0..2].copy_from_slice(&s.sport.to_be_bytes());
    rest[2..4].copy_from_slice(&s.dport.to_be_bytes());
    rest[4..8].copy_from_slice(&s.seq.to_be_bytes());
    rest[8..12].copy_from_slice(&s.ack.to_be_bytes());
    rest[12] = ((hl / 4) as u8) << 4;
    rest[13] = s.flags;
    rest[14..16].copy_from_slice(&s.window.to_be_bytes());
    rest[16..20].copy_from_slice(&[0; 4]);
    rest[20..hl].copy_from_slice(options);
    rest[hl..].copy_from_slice(payload);
    let c = checksum::l4_checksum_v4(s.src, s.dst, ip_proto::TCP, rest);
    rest[16..18].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

/// Fills the Ethernet and IPv4 headers of `f` (the whole frame: the IPv4 total length is
/// what follows the Ethernet header) and returns the IPv4 payload; `None` when the frame
/// is shorter than both headers or the datagram exceeds 65535 bytes.
fn eth_ipv4<'f>(f: &'f mut [u8], (src_mac, dst_mac): ([u8; 6], [u8; 6]), (src, dst): (Ipv4Addr, Ipv4Addr), proto: u8, ip_id: u16) -> Option<&'f mut [u8]> {
    let ip_len = u16::try_from(f.len().checked_sub(14)?).ok().filter(|&l| l >= 20)?;
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    let (ip, rest) = f[14..].split_at_mut(20);
    ip.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    Some(rest)
}

/// Writes a broadcast "who has `target`? tell `src`" into `out`; returns its length.
pub fn arp_request(out: &mut [u8], src_mac: [u8; 6], src: Ipv4Addr, target: Ipv4Addr) -> Option<usize> {
    let f = out.get_mut(..ARP_LEN)?;
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, arp::OP_REQUEST as u8]);
    f[22..28].copy_from_slice(&src_mac);
    f[28..32].copy_from_slice(&src.octets());
    f[32..38].copy_from_slice(&[0; 6]);
    f[38..42].copy_from_slice(&target.octets());
    Some(ARP_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{parse_frame, Arp, Ipv4, Udp, L3, L4};

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn a_built_udp_frame_parses_with_valid_checksums() {
        let a = Udp4Addrs { src_mac: A, dst_mac: B, src: Ipv4Addr::new(10, 0, 1, 2), dst: Ipv4Addr::new(10, 0, 1, 9), sport: 7400, dport: 7401 };
        let mut buf = [0u8; 256];
        let n = udp4(&mut buf, &a, 77, b"hello heartbeat").unwrap();
        assert_eq!(n, UDP4_HEADERS + 15);
        let p = parse_frame(&buf[..n]).unwrap();
        assert_eq!((p.l2.src, p.l2.dst), (A, B));
        let (L3::Ipv4(_), L4::Udp(u)) = (p.l3, p.l4) else { panic!("not UDP/IPv4: {p:?}") };
        let ipv = Ipv4::parse(&buf[p.l2.l3_offset..n]).unwrap();
        assert!(ipv.verify_checksum());
        assert_eq!((ipv.src_addr(), ipv.dst_addr(), ipv.ttl(), ipv.is_fragment()), (a.src, a.dst, 64, false));
        let udp = Udp::parse(&buf[u.offset..n]).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port(), udp.payload()), (7400, 7401, &b"hello heartbeat"[..]));
        assert!(udp.verify_checksum_v4(a.src, a.dst));
        // Too small a buffer is refused, not a panic.
        assert_eq!(udp4(&mut buf[..40], &a, 1, b"x"), None);
        assert_eq!(udp4(&mut vec![0u8; 70_000], &a, 1, &[0u8; 65_600]), None);
    }

    #[test]
    fn a_built_tcp_segment_parses_with_valid_checksums() {
        let s = Tcp4Segment {
            src_mac: A,
            dst_mac: B,
            src: Ipv4Addr::new(10, 0, 1, 2),
            dst: Ipv4Addr::new(10, 0, 1, 9),
            sport: 80,
            dport: 40_000,
            seq: 0xffff_fff0,
            ack: 17,
            flags: crate::packet::tcp::flags::SYN | crate::packet::tcp::flags::ACK,
            window: 65_535,
            ip_id: 3,
        };
        let opts = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];
        let mut buf = [0u8; 128];
        let n = tcp4(&mut buf, &s, &opts, b"data").unwrap();
        assert_eq!(n, TCP4_HEADERS + 8 + 4);
        let p = parse_frame(&buf[..n]).unwrap();
        let L4::Tcp(t) = p.l4 else { panic!("not TCP: {p:?}") };
        let ipv = Ipv4::parse(&buf[p.l2.l3_offset..n]).unwrap();
        assert!(ipv.verify_checksum());
        let tcp = crate::packet::Tcp::parse(&buf[t.offset..n]).unwrap();
        assert!(tcp.verify_checksum_v4(s.src, s.dst));
        assert_eq!((tcp.src_port(), tcp.dst_port(), tcp.seq(), tcp.ack(), tcp.flags(), tcp.window()), (80, 40_000, 0xffff_fff0, 17, s.flags, 65_535));
        assert_eq!((tcp.option_bytes(), tcp.payload()), (&opts[..], &b"data"[..]));
        // Options that are not whole words, or too many, are refused; so is a short buffer.
        assert_eq!(tcp4(&mut buf, &s, &[1, 1, 1], b""), None);
        assert_eq!(tcp4(&mut buf, &s, &[1; 44], b""), None);
        assert_eq!(tcp4(&mut buf[..60], &s, &opts, b""), None);
    }

    #[test]
    fn a_built_arp_request_parses() {
        let mut buf = [0u8; 64];
        let n = arp_request(&mut buf, A, Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 9)).unwrap();
        let p = parse_frame(&buf[..n]).unwrap();
        assert_eq!(p.l2.dst, [0xff; 6]);
        assert_eq!(p.l3, L3::Arp);
        let arp = Arp::parse(&buf[p.l2.l3_offset..n]).unwrap();
        assert_eq!(arp.operation(), arp::OP_REQUEST);
        assert_eq!((arp.sender_mac(), arp.sender_ip(), arp.target_ip()), (A, Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 9)));
        assert!(!arp.is_gratuitous());
    }
}
