//! Packet layer: zero-copy typed views over frame bytes, checksums and flow keys.
//!
//! Every view (`Ethernet`, `Arp`, `Ipv4`, `Ipv6`, `Tcp`, `Udp`, `Icmp`) is generic over its
//! buffer (`&[u8]`, `&mut [u8]`, `Vec<u8>`...), in the style of smoltcp's `wire` module:
//! `parse` checks lengths and header consistency once and maps any defect to exactly one
//! [`DropReason`]; accessors then read fixed offsets and never panic (they are panic-free
//! even on an unchecked view); setters exist when the buffer is mutable. `update_*`
//! setters keep checksums valid incrementally (RFC 1624); plain `set_*` setters don't.
//!
//! [`parse_frame`] is the one-call classifier roles use; [`flow::FlowKey`] turns a frame
//! into a flow key for balancing. Nothing here allocates or touches DPDK.
//! See `docs/packet-layer.md` for the drop-reason table and the fragment rule.

pub mod arp;
pub mod build;
pub mod checksum;
pub mod ethernet;
pub mod fast;
mod field;
pub mod flow;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testutil;
pub mod udp;

pub use arp::Arp;
pub use ethernet::{ethertype, Ethernet};
pub use fast::{fast_v4, peek_tcp4_tuple, FastV4, FAST_V4_L3};
pub use flow::FlowKey;
pub use icmp::Icmp;
pub use ipv4::Ipv4;
pub use ipv6::Ipv6;
pub use tcp::{Tcp, TcpOption, TcpOptions};
pub use udp::Udp;

use crate::stats::DropReason;
use std::ops::Range;

/// IP protocol / IPv6 Next Header numbers the packet layer knows.
pub mod ip_proto {
    /// IPv6 Hop-by-Hop Options header.
    pub const HOPOPT: u8 = 0;
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 Routing header.
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 Fragment header.
    pub const IPV6_FRAG: u8 = 44;
    /// IPsec ESP (opaque: the extension walk stops there).
    pub const ESP: u8 = 50;
    /// IPsec Authentication Header (length in 4-byte units).
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 No Next Header.
    pub const IPV6_NONXT: u8 = 59;
    /// IPv6 Destination Options header.
    pub const IPV6_OPTS: u8 = 60;
}

/// L2 facts of a frame: what a role needs to reply on the same VLAN or pick an egress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2 {
    /// Destination MAC (replies and L2 filters need it).
    pub dst: [u8; 6],
    /// Source MAC (where a reply goes).
    pub src: [u8; 6],
    /// Outer VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Inner VLAN id of a QinQ frame.
    pub inner_vlan: Option<u16>,
    /// EtherType after the tags.
    pub ethertype: u16,
    /// Offset of the L3 header in the frame.
    pub l3_offset: usize,
}

/// Where the IP header is and what it carries (all offsets from the frame start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInfo {
    /// Offset of the IP header (= `L2::l3_offset`).
    pub offset: usize,
    /// IPv4 header with options, or IPv6 fixed header plus extension headers.
    pub header_len: usize,
    /// End of the IP packet (Ethernet padding excluded).
    pub end: usize,
    /// Upper-layer protocol (after IPv6 extension headers; for a fragment, its protocol).
    pub protocol: u8,
}

/// L3 classification. The EtherType of `Other` is in [`L2::ethertype`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    /// An Ethernet/IPv4 ARP body (validated).
    Arp,
    /// IPv4, header and checksum validated.
    Ipv4(IpInfo),
    /// IPv6, header and extension-header chain validated.
    Ipv6(IpInfo),
    /// An EtherType the appliance does not interpret: forwarded as is.
    Other,
}

/// Where an L4 header is (offsets from the frame start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Info {
    /// Offset of the L4 header.
    pub offset: usize,
    /// TCP header with options, 8 for UDP/ICMP, 0 for unknown protocols.
    pub header_len: usize,
    /// End of the L4 message (the UDP length field is authoritative for UDP).
    pub end: usize,
}

/// L4 classification. Fragments are a classification, not an error: whether a role can
/// handle them is the role's call (`DropReason::Fragment`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// Not IP.
    None,
    /// TCP, header and options validated.
    Tcp(L4Info),
    /// UDP, length field validated.
    Udp(L4Info),
    /// ICMP over IPv4.
    Icmp(L4Info),
    /// ICMPv6 (8-byte header present).
    Icmpv6(L4Info),
    /// A fragment; `first` when it is the one at offset 0 (it holds the L4 header, which
    /// is not validated here).
    Fragment {
        /// The fragment at offset 0.
        first: bool,
    },
    /// Another protocol (the header is not interpreted).
    Other(L4Info),
}

/// One-call classification of a frame (see [`parse_frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Ethernet and VLAN facts.
    pub l2: L2,
    /// Network layer.
    pub l3: L3,
    /// Transport layer.
    pub l4: L4,
}

impl Parsed {
    /// Offset of the L4 header, when there is one to look at.
    pub fn l4_offset(&self) -> Option<usize> {
        match self.l4 {
            L4::Tcp(i) | L4::Udp(i) | L4::Icmp(i) | L4::Icmpv6(i) | L4::Other(i) => Some(i.offset),
            L4::None | L4::Fragment { .. } => None,
        }
    }

    /// The L4 payload range in the frame (TCP/UDP data, ICMP data).
    pub fn payload_range(&self) -> Option<Range<usize>> {
        match self.l4 {
            L4::Tcp(i) | L4::Udp(i) | L4::Icmp(i) | L4::Icmpv6(i) | L4::Other(i) => {
                Some(i.offset + i.header_len..i.end)
            }
            L4::None | L4::Fragment { .. } => None,
        }
    }

    /// True for IP fragments, which most roles cannot balance by port.
    pub fn is_fragment(&self) -> bool {
        matches!(self.l4, L4::Fragment { .. })
    }
}

/// Validate and classify a frame in one pass, so roles branch on an enum instead of
/// re-parsing. Checks, in order: Ethernet/VLAN, then ARP body or IPv4 (structure, then
/// header checksum) or IPv6 (header and extension headers), then the TCP/UDP/ICMP header
/// of non-fragments. Each malformed input yields exactly one `DropReason`. L4 checksums
/// are not verified (that costs a pass over the payload; views offer it).
pub fn parse_frame(frame: &[u8]) -> Result<Parsed, DropReason> {
    let eth = Ethernet::parse(frame)?;
    let l3_offset = eth.l3_offset();
    let l2 = L2 {
        dst: eth.dst(),
        src: eth.src(),
        vlan: eth.vlan_id(),
        inner_vlan: eth.inner_vlan_id(),
        ethertype: eth.ethertype(),
        l3_offset,
    };
    let l3buf = eth.payload();
    let (l3, l4) = match l2.ethertype {
        ethertype::ARP => {
            Arp::parse(l3buf)?;
            (L3::Arp, L4::None)
        }
        ethertype::IPV4 => {
            let ip = Ipv4::parse(l3buf)?;
            let info = IpInfo {
                offset: l3_offset,
                header_len: ip.header_len(),
                end: l3_offset + ip.total_len(),
                protocol: ip.protocol(),
            };
            let l4 = if ip.is_fragment() {
                L4::Fragment {
                    first: ip.frag_offset() == 0,
                }
            } else {
                classify_l4(
                    info.protocol,
                    false,
                    ip.payload(),
                    l3_offset + info.header_len,
                )?
            };
            (L3::Ipv4(info), l4)
        }
        ethertype::IPV6 => {
            let ip = Ipv6::parse(l3buf)?;
            let up = ip.upper_layer()?;
            let end = ipv6::HEADER_LEN + ip.payload_len();
            let info = IpInfo {
                offset: l3_offset,
                header_len: up.offset,
                end: l3_offset + end,
                protocol: up.protocol,
            };
            let l4 = match up.fragment {
                Some(f) => L4::Fragment {
                    first: f.offset == 0,
                },
                None => classify_l4(
                    up.protocol,
                    true,
                    field::sub(l3buf, up.offset, end),
                    l3_offset + up.offset,
                )?,
            };
            (L3::Ipv6(info), l4)
        }
        _ => (L3::Other, L4::None),
    };
    Ok(Parsed { l2, l3, l4 })
}

/// The L4 classification of an IP payload (`seg`, starting at frame offset `offset`), as
/// [`parse_frame`] does it after the IP header.
pub fn classify_l4(protocol: u8, v6: bool, seg: &[u8], offset: usize) -> Result<L4, DropReason> {
    let end = offset + seg.len();
    Ok(match protocol {
        ip_proto::TCP => {
            let t = Tcp::parse(seg)?;
            L4::Tcp(L4Info {
                offset,
                header_len: t.header_len(),
                end,
            })
        }
        ip_proto::UDP => {
            let u = Udp::parse(seg)?;
            L4::Udp(L4Info {
                offset,
                header_len: udp::HEADER_LEN,
                end: offset + u.len(),
            })
        }
        ip_proto::ICMP if !v6 => {
            Icmp::parse(seg)?;
            L4::Icmp(L4Info {
                offset,
                header_len: icmp::HEADER_LEN,
                end,
            })
        }
        ip_proto::ICMPV6 if v6 => {
            Icmp::parse(seg)?;
            L4::Icmpv6(L4Info {
                offset,
                header_len: icmp::HEADER_LEN,
                end,
            })
        }
        _ => L4::Other(L4Info {
            offset,
            header_len: 0,
            end,
        }),
    })
}

/// The body of the `parse_all` fuzz target, shared with the proptest suite so the same
/// code runs on stable in CI. Runs every parser, option iterator, flow key and
/// `answer_local` on `data`, and asserts cross-checks between them (re-parsing at the
/// offsets `parse_frame` reports succeeds, symmetric hashes agree, replies carry valid
/// checksums). Panics only on a real bug. Not for the fast path (it allocates a copy).
pub fn fuzz_entry(data: &[u8]) {
    check_all(data);
    // Random bytes rarely carry a valid IPv4 header checksum, which gates everything
    // behind it; run again with the checksums fixed so the fuzzer reaches L4 and the
    // echo-reply path.
    if let Some(fixed) = with_fixed_checksums(data) {
        check_all(&fixed);
    }
}

fn with_fixed_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let l3 = Ethernet::parse(data).ok()?.l3_offset();
    let ip = Ipv4::parse_unverified(&data[l3..]).ok()?;
    let (hl, tl, proto) = (ip.header_len(), ip.total_len(), ip.protocol());
    let mut v = data.to_vec();
    Ipv4::new_unchecked(&mut v[l3..]).fill_checksum();
    if proto == ip_proto::ICMP && tl - hl >= icmp::HEADER_LEN {
        Icmp::new_unchecked(&mut v[l3 + hl..l3 + tl]).fill_checksum();
    }
    Some(v)
}

fn check_all(data: &[u8]) {
    use crate::role::local::{answer_local, LocalAddrs, LocalVerdict};
    use std::net::Ipv4Addr;

    // 1. Every view on the raw bytes and at every plausible L3 offset.
    for off in [0usize, 14, 18, 22] {
        let b = data.get(off..).unwrap_or(&[]);
        exercise_views(b);
    }
    for o in TcpOptions::new(data) {
        let _ = o.map(|o| o.wire_len());
    }

    // 2. The classifier and its promises.
    let parsed = parse_frame(data);
    let key = FlowKey::from_frame(data);
    match parsed {
        Ok(p) => {
            assert!(p.l2.l3_offset <= data.len());
            match p.l3 {
                L3::Arp => assert!(Arp::parse(&data[p.l2.l3_offset..]).is_ok()),
                L3::Ipv4(ip) | L3::Ipv6(ip) => {
                    assert!(ip.offset + ip.header_len <= ip.end && ip.end <= data.len());
                    let k = key.expect("IP frames have a flow key");
                    assert_eq!(Some(k), FlowKey::from_parsed(&p, data));
                    assert_eq!(k.symmetric_hash(), k.reversed().symmetric_hash());
                    assert_eq!(k.reversed().reversed(), k);
                    if p.is_fragment() {
                        assert_eq!((k.src_port, k.dst_port), (0, 0));
                    }
                }
                L3::Other => assert_eq!(key, Err(DropReason::NotIp)),
            }
            if let Some(r) = p.payload_range() {
                assert!(r.start <= r.end && r.end <= data.len(), "{p:?}");
            }
            match p.l4 {
                L4::Tcp(i) => {
                    let t = Tcp::parse(&data[i.offset..i.end]).expect("re-parse TCP");
                    assert_eq!(t.header_len(), i.header_len);
                    assert_eq!(
                        t.options().count(),
                        TcpOptions::new(t.option_bytes()).count()
                    );
                }
                L4::Udp(i) => assert!(Udp::parse(&data[i.offset..i.end]).is_ok()),
                L4::Icmp(i) | L4::Icmpv6(i) => assert!(Icmp::parse(&data[i.offset..i.end]).is_ok()),
                _ => {}
            }
        }
        Err(r) => assert_eq!(key, Err(r), "from_frame reports the parse_frame reason"),
    }

    // 3. answer_local on a copy: a reply must be a well-formed frame of the same length.
    let me = LocalAddrs {
        mac: [0x02, 0, 0, 0, 0, 0x01],
        ipv4: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 168, 1, 1)],
        punt_udp: Some(7400),
        punt_arp: true,
    };
    let mut copy = data.to_vec();
    if answer_local(&mut copy, &me) == LocalVerdict::Replied {
        let p = parse_frame(&copy).expect("a reply parses");
        assert_eq!(p.l2.src, me.mac);
        if let (L3::Ipv4(ip), L4::Icmp(i)) = (p.l3, p.l4) {
            let req_ok = Icmp::new_unchecked(&data[i.offset..i.end]).verify_checksum();
            let rep = Icmp::parse(&copy[i.offset..i.end]).expect("reply ICMP");
            assert_eq!(
                rep.verify_checksum(),
                req_ok,
                "incremental ICMP fix keeps validity"
            );
            assert!(Ipv4::parse(&copy[ip.offset..]).is_ok());
        }
    }
}

fn exercise_views(b: &[u8]) {
    if let Ok(e) = Ethernet::parse(b) {
        let _ = (
            e.dst(),
            e.src(),
            e.vlan_id(),
            e.inner_vlan_id(),
            e.ethertype(),
            e.payload().len(),
        );
    }
    if let Ok(a) = Arp::parse(b) {
        let _ = (
            a.operation(),
            a.sender_mac(),
            a.sender_ip(),
            a.target_mac(),
            a.target_ip(),
        );
    }
    if let Ok(ip) = Ipv4::parse_unverified(b) {
        let _ = (
            ip.options().len(),
            ip.payload().len(),
            ip.frag_offset(),
            ip.compute_checksum(),
        );
        assert!(ip.header_len() <= ip.total_len() && ip.total_len() <= b.len());
        let _ = ip.verify_checksum();
    }
    if let Ok(ip) = Ipv6::parse(b) {
        let _ = (
            ip.flow_label(),
            ip.traffic_class(),
            ip.src_addr(),
            ip.payload().len(),
        );
        if let Ok(up) = ip.upper_layer() {
            assert!(up.offset <= ipv6::HEADER_LEN + ip.payload_len());
        }
    }
    if let Ok(t) = Tcp::parse(b) {
        assert!(t.header_len() <= b.len());
        for o in t.options() {
            if let TcpOption::Sack(s) = o {
                let _ = s.iter().count();
            }
            let mut out = [0u8; 64];
            let _ = o.emit(&mut out);
        }
        let _ = t.payload().len();
    }
    if let Ok(u) = Udp::parse(b) {
        let _ = (u.src_port(), u.payload().len());
    }
    if let Ok(m) = Icmp::parse(b) {
        let _ = (
            m.msg_type(),
            m.echo_ident(),
            m.echo_seq(),
            m.verify_checksum(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn classify_tcp_vlan() {
        let f = ipv4_tcp_frame(Some(42), [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 0);
        let p = parse_frame(&f).unwrap();
        assert_eq!(p.l2.vlan, Some(42));
        assert_eq!(p.l2.l3_offset, 18);
        assert_eq!(
            p.l3,
            L3::Ipv4(IpInfo {
                offset: 18,
                header_len: 20,
                end: 62,
                protocol: ip_proto::TCP
            })
        );
        assert_eq!(
            p.l4,
            L4::Tcp(L4Info {
                offset: 38,
                header_len: 20,
                end: 62
            })
        );
        assert_eq!(p.payload_range(), Some(58..62));
    }

    #[test]
    fn padding_ignored() {
        let mut f = ipv6_udp_frame("::1", "::2", 1, 2);
        let n = f.len();
        f.resize(n + 20, 0);
        let p = parse_frame(&f).unwrap();
        assert_eq!(p.payload_range(), Some(n - 2..n));
        assert!(matches!(
            p.l3,
            L3::Ipv6(IpInfo {
                protocol: ip_proto::UDP,
                ..
            })
        ));
    }

    #[test]
    fn fragments_classified() {
        let f = ipv4_tcp_frame(None, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 0x2000);
        assert_eq!(parse_frame(&f).unwrap().l4, L4::Fragment { first: true });
        let mut f = ipv4_tcp_frame(None, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 0x0001);
        // A later fragment's payload is not a TCP header, even a broken one is fine.
        f[14 + 20 + 12] = 0xf0;
        assert_eq!(parse_frame(&f).unwrap().l4, L4::Fragment { first: false });
    }

    #[test]
    fn arp_and_other() {
        let p = parse_frame(&arp_request_frame(Some(3))).unwrap();
        assert_eq!((p.l3, p.l4, p.l2.vlan), (L3::Arp, L4::None, Some(3)));
        let p = parse_frame(&eth(None, 0x88cc)).unwrap();
        assert_eq!((p.l3, p.l2.ethertype), (L3::Other, 0x88cc));
    }

    #[test]
    fn each_defect_one_reason() {
        let good = ipv4_tcp_frame(None, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 0);
        let cases: Vec<(Vec<u8>, DropReason)> = vec![
            (good[..13].to_vec(), DropReason::TruncatedEthernet),
            (
                arp_request_frame(None)[..40].to_vec(),
                DropReason::MalformedArp,
            ),
            (good[..33].to_vec(), DropReason::MalformedIpv4),
            (
                {
                    let mut x = good.clone();
                    x[14 + 8] = 1; // TTL changed without checksum fix
                    x
                },
                DropReason::BadIpv4Checksum,
            ),
            (
                ipv6_udp_frame("::1", "::2", 1, 2)[..60].to_vec(),
                DropReason::MalformedIpv6,
            ),
            (
                {
                    let mut x = good.clone();
                    x[14 + 20 + 12] = 0x30;
                    x
                },
                DropReason::MalformedTcp,
            ),
            (
                {
                    let mut x = ipv6_udp_frame("::1", "::2", 1, 2);
                    x[14 + 40 + 5] = 11; // UDP length > IPv6 payload
                    x
                },
                DropReason::MalformedUdp,
            ),
        ];
        for (f, want) in cases {
            assert_eq!(parse_frame(&f).unwrap_err(), want);
        }
        // ICMP shorter than 8 bytes.
        let mut f = eth(None, ethertype::IPV4);
        f.extend_from_slice(&[
            0x45, 0, 0, 24, 0, 0, 0, 0, 64, 1, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 8, 0, 0, 0,
        ]);
        Ipv4::new_unchecked(&mut f[14..]).fill_checksum();
        assert_eq!(parse_frame(&f).unwrap_err(), DropReason::MalformedIcmp);
    }

    /// Found by `parse_all`: an echo request (IHL 6) whose reply is all zero but for the
    /// checksum, which must then be 0xffff, not RFC 1624's 0x0000.
    #[test]
    fn fuzz_regression_all_zero_echo_reply() {
        const CRASH: [u8; 184] = [
            0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x08, 0x00,
            0x46, 0xe8, 0x00, 0x46, 0x01, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0xfe, 0xff,
            0xff, 0xff, 0x0a, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x04, 0x08, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x02,
            0x00, 0x00, 0x46, 0x00, 0x02, 0xdf, 0xdf, 0xfe, 0x00, 0x00, 0x00, 0x98, 0x98, 0x98,
            0x00, 0x46, 0x02, 0x00, 0x18, 0x18, 0x91, 0x91, 0xf2, 0x81, 0x02, 0x14, 0x00, 0xff,
            0xff, 0x00, 0x00, 0x06, 0x96, 0x00, 0xe8, 0x00, 0x46, 0x46, 0x46, 0x18, 0xcf, 0x03,
            0x03, 0x17,
        ];
        fuzz_entry(&CRASH);
    }

    #[test]
    fn fuzz_entry_smoke() {
        fuzz_entry(&[]);
        fuzz_entry(&ipv4_tcp_frame(
            Some(1),
            [10, 0, 0, 2],
            [10, 0, 0, 1],
            1,
            2,
            0,
        ));
        fuzz_entry(&arp_request_frame(None));
        fuzz_entry(&ipv6_udp_frame("::1", "::2", 1, 2));
    }
}
