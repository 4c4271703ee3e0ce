//! Frame builders for unit tests.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ethernet::ethertype;
use super::ip_proto;
use super::ipv4::Ipv4;
use super::ipv6::Ipv6;
use super::tcp::Tcp;
use super::udp::Udp;

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

pub fn eth(vlan: Option<u16>, et: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    if let Some(v) = vlan {
        f.extend_from_slice(&ethertype::VLAN.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&et.to_be_bytes());
    f
}

/// IPv4/TCP frame with a 20-byte TCP header and 4 bytes of payload; `frag` is the raw
/// flags/offset word.
pub fn ipv4_tcp_frame(
    vlan: Option<u16>,
    s: [u8; 4],
    d: [u8; 4],
    sp: u16,
    dp: u16,
    frag: u16,
) -> Vec<u8> {
    let mut f = eth(vlan, ethertype::IPV4);
    let l3 = f.len();
    f.resize(l3 + 20 + 20 + 4, 0);
    {
        let mut ip = Ipv4::new_unchecked(&mut f[l3..]);
        ip.set_version_and_header_len(20);
        ip.set_total_len(44);
        ip.set_ttl(64);
        ip.set_protocol(ip_proto::TCP);
        ip.set_src_addr(Ipv4Addr::from(s));
        ip.set_dst_addr(Ipv4Addr::from(d));
    }
    f[l3 + 6..l3 + 8].copy_from_slice(&frag.to_be_bytes());
    Ipv4::new_unchecked(&mut f[l3..]).fill_checksum();
    let mut t = Tcp::new_unchecked(&mut f[l3 + 20..]);
    t.set_src_port(sp);
    t.set_dst_port(dp);
    t.set_header_len(20);
    t.set_flags(super::tcp::flags::ACK);
    t.fill_checksum_v4(Ipv4Addr::from(s), Ipv4Addr::from(d));
    f
}

/// ARP request "who has 10.0.0.1? tell 10.0.0.2" from MAC_A, broadcast.
pub fn arp_request_frame(vlan: Option<u16>) -> Vec<u8> {
    let mut f = eth(vlan, ethertype::ARP);
    f[..6].copy_from_slice(&[0xff; 6]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[10, 0, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f
}

pub fn ipv6_udp_frame(s: &str, d: &str, sp: u16, dp: u16) -> Vec<u8> {
    let (s, d): (Ipv6Addr, Ipv6Addr) = (s.parse().unwrap(), d.parse().unwrap());
    let mut f = eth(None, ethertype::IPV6);
    let l3 = f.len();
    f.resize(l3 + 40 + 8 + 2, 0);
    let mut ip = Ipv6::new_unchecked(&mut f[l3..]);
    ip.set_version_tc_flow(0, 0);
    ip.set_payload_len(10);
    ip.set_next_header(ip_proto::UDP);
    ip.set_hop_limit(64);
    ip.set_src_addr(s);
    ip.set_dst_addr(d);
    let mut u = Udp::new_unchecked(&mut f[l3 + 40..]);
    u.set_src_port(sp);
    u.set_dst_port(dp);
    u.set_len(10);
    u.fill_checksum_v6(&s, &d);
    f
}
