//! Property tests of the packet layer: round trips through every view, no panics on
//! arbitrary or mutated bytes (via the shared fuzz body `packet::fuzz_entry`), and
//! incremental checksum updates equal to full recomputation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane::packet::checksum;
use dataplane::packet::ethernet::{self, ethertype};
use dataplane::packet::tcp::{SackBlocks, TcpOption};
use dataplane::packet::{
    fuzz_entry, ip_proto, parse_frame, Arp, Ethernet, FlowKey, Icmp, Ipv4, Ipv6, Tcp, TcpOptions,
    Udp, L3, L4,
};
use dataplane::role::local::{answer_local, LocalAddrs};
use dataplane::stats::DropReason;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Reference checksum and builders

fn naive_sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            (c[0] as u16) << 8
        };
        acc += w as u64;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

#[derive(Clone, Debug)]
enum L4Spec {
    Tcp {
        sp: u16,
        dp: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        win: u16,
        opts: Vec<OptSpec>,
        payload: Vec<u8>,
    },
    Udp {
        sp: u16,
        dp: u16,
        payload: Vec<u8>,
    },
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
        seq: u16,
        payload: Vec<u8>,
    },
}

#[derive(Clone, Debug)]
enum OptSpec {
    Mss(u16),
    Ws(u8),
    SackPerm,
    Sack(Vec<(u32, u32)>),
    Ts(u32, u32),
    Unknown(u8, Vec<u8>),
    Nop,
}

fn opt_spec() -> impl Strategy<Value = OptSpec> {
    prop_oneof![
        any::<u16>().prop_map(OptSpec::Mss),
        any::<u8>().prop_map(OptSpec::Ws),
        Just(OptSpec::SackPerm),
        prop::collection::vec(any::<(u32, u32)>(), 1..4).prop_map(OptSpec::Sack),
        any::<(u32, u32)>().prop_map(|(a, b)| OptSpec::Ts(a, b)),
        // Kinds the parser does not interpret (not 0..=5, 8).
        ((9u8..=255), prop::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(k, d)| OptSpec::Unknown(k, d)),
        Just(OptSpec::Nop),
    ]
}

/// Encode options, padding with End-of-List to a multiple of 4 (at most 40 bytes).
fn encode_opts(opts: &[OptSpec]) -> (Vec<u8>, Vec<TcpOption<'static>>) {
    let mut out = Vec::new();
    let mut expect = Vec::new();
    for o in opts {
        let mut buf = [0u8; 64];
        let sack_bytes: Vec<u8>;
        let n = match o {
            OptSpec::Nop => {
                buf[0] = 1;
                1
            }
            OptSpec::Mss(m) => TcpOption::Mss(*m).emit(&mut buf).unwrap(),
            OptSpec::Ws(s) => TcpOption::WindowScale(*s).emit(&mut buf).unwrap(),
            OptSpec::SackPerm => TcpOption::SackPermitted.emit(&mut buf).unwrap(),
            OptSpec::Ts(a, b) => TcpOption::Timestamps {
                tsval: *a,
                tsecr: *b,
            }
            .emit(&mut buf)
            .unwrap(),
            OptSpec::Sack(blocks) => {
                sack_bytes = blocks
                    .iter()
                    .flat_map(|(l, r)| [l.to_be_bytes(), r.to_be_bytes()].concat())
                    .collect();
                buf[0] = 5;
                buf[1] = 2 + sack_bytes.len() as u8;
                buf[2..2 + sack_bytes.len()].copy_from_slice(&sack_bytes);
                2 + sack_bytes.len()
            }
            OptSpec::Unknown(k, d) => {
                buf[0] = *k;
                buf[1] = 2 + d.len() as u8;
                buf[2..2 + d.len()].copy_from_slice(d);
                2 + d.len()
            }
        };
        if out.len() + n > 40 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        expect.push(o.clone());
    }
    while out.len() % 4 != 0 {
        out.push(0);
    }
    // Expected parsed options (owned data leaked into 'static for simple comparison).
    let parsed: Vec<TcpOption<'static>> = expect
        .iter()
        .filter_map(|o| match o {
            OptSpec::Nop => None,
            OptSpec::Mss(m) => Some(TcpOption::Mss(*m)),
            OptSpec::Ws(s) => Some(TcpOption::WindowScale(*s)),
            OptSpec::SackPerm => Some(TcpOption::SackPermitted),
            OptSpec::Ts(a, b) => Some(TcpOption::Timestamps {
                tsval: *a,
                tsecr: *b,
            }),
            OptSpec::Sack(_) => None, // compared separately
            OptSpec::Unknown(k, d) => Some(TcpOption::Unknown {
                kind: *k,
                data: Box::leak(d.clone().into_boxed_slice()),
            }),
        })
        .collect();
    (out, parsed)
}

/// Build the L4 segment with valid checksum for the given pseudo-header addresses.
fn build_l4(spec: &L4Spec, src: IpAddr, dst: IpAddr) -> (u8, Vec<u8>) {
    match spec {
        L4Spec::Tcp {
            sp,
            dp,
            seq,
            ack,
            flags,
            win,
            opts,
            payload,
        } => {
            let (ob, _) = encode_opts(opts);
            let hl = 20 + ob.len();
            let mut b = vec![0u8; hl];
            b.extend_from_slice(payload);
            let mut t = Tcp::new_unchecked(&mut b[..]);
            t.set_src_port(*sp);
            t.set_dst_port(*dp);
            t.set_seq(*seq);
            t.set_ack(*ack);
            t.set_header_len(hl);
            t.set_flags(*flags);
            t.set_window(*win);
            t.option_bytes_mut().copy_from_slice(&ob);
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => t.fill_checksum_v4(s, d),
                (IpAddr::V6(s), IpAddr::V6(d)) => t.fill_checksum_v6(&s, &d),
                _ => unreachable!(),
            }
            (ip_proto::TCP, b)
        }
        L4Spec::Udp { sp, dp, payload } => {
            let mut b = vec![0u8; 8];
            b.extend_from_slice(payload);
            let mut u = Udp::new_unchecked(&mut b[..]);
            u.set_src_port(*sp);
            u.set_dst_port(*dp);
            u.set_len((8 + payload.len()) as u16);
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => u.fill_checksum_v4(s, d),
                (IpAddr::V6(s), IpAddr::V6(d)) => u.fill_checksum_v6(&s, &d),
                _ => unreachable!(),
            }
            (ip_proto::UDP, b)
        }
        L4Spec::Icmp {
            ty,
            code,
            id,
            seq,
            payload,
        } => {
            let mut b = vec![0u8; 8];
            b.extend_from_slice(payload);
            let mut m = Icmp::new_unchecked(&mut b[..]);
            m.set_msg_type(*ty);
            m.set_code(*code);
            m.set_echo_ident(*id);
            m.set_echo_seq(*seq);
            match (src, dst) {
                (IpAddr::V4(_), _) => {
                    m.fill_checksum();
                    (ip_proto::ICMP, b)
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    m.fill_checksum_v6(&s, &d);
                    (ip_proto::ICMPV6, b)
                }
                _ => unreachable!(),
            }
        }
    }
}

#[derive(Clone, Debug)]
struct FrameSpec {
    dst: [u8; 6],
    src: [u8; 6],
    vlans: Vec<u16>,
    v6: bool,
    a: [u8; 16],
    b: [u8; 16],
    ttl: u8,
    ident: u16,
    ip_opts: usize,
    l4: L4Spec,
    padding: usize,
}

fn l4_spec() -> impl Strategy<Value = L4Spec> {
    let payload = || prop::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        (
            any::<(u16, u16, u32, u32, u8, u16)>(),
            prop::collection::vec(opt_spec(), 0..8),
            payload()
        )
            .prop_map(
                |((sp, dp, seq, ack, flags, win), opts, payload)| L4Spec::Tcp {
                    sp,
                    dp,
                    seq,
                    ack,
                    flags,
                    win,
                    opts,
                    payload
                }
            ),
        (any::<(u16, u16)>(), payload()).prop_map(|((sp, dp), payload)| L4Spec::Udp {
            sp,
            dp,
            payload
        }),
        (any::<(u8, u8, u16, u16)>(), payload()).prop_map(|((ty, code, id, seq), payload)| {
            L4Spec::Icmp {
                ty,
                code,
                id,
                seq,
                payload,
            }
        }),
    ]
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    (
        any::<([u8; 6], [u8; 6])>(),
        prop::collection::vec(0u16..4096, 0..=2),
        any::<bool>(),
        any::<([u8; 16], [u8; 16])>(),
        any::<(u8, u16)>(),
        0usize..=10,
        l4_spec(),
        0usize..20,
    )
        .prop_map(
            |((dst, src), vlans, v6, (a, b), (ttl, ident), ip_opts, l4, padding)| FrameSpec {
                dst,
                src,
                vlans,
                v6,
                a,
                b,
                ttl,
                ident,
                ip_opts,
                l4,
                padding,
            },
        )
}

impl FrameSpec {
    fn addrs(&self) -> (IpAddr, IpAddr) {
        if self.v6 {
            (
                IpAddr::V6(Ipv6Addr::from(self.a)),
                IpAddr::V6(Ipv6Addr::from(self.b)),
            )
        } else {
            let s = Ipv4Addr::new(self.a[0], self.a[1], self.a[2], self.a[3]);
            let d = Ipv4Addr::new(self.b[0], self.b[1], self.b[2], self.b[3]);
            (IpAddr::V4(s), IpAddr::V4(d))
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.src);
        for (i, v) in self.vlans.iter().enumerate() {
            let tpid = if i == 0 && self.vlans.len() == 2 {
                ethertype::QINQ
            } else {
                ethertype::VLAN
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(
            &(if self.v6 {
                ethertype::IPV6
            } else {
                ethertype::IPV4
            })
            .to_be_bytes(),
        );
        let l3 = f.len();
        let (s, d) = self.addrs();
        let (proto, seg) = build_l4(&self.l4, s, d);
        match (s, d) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let hl = 20 + 4 * self.ip_opts;
                f.resize(l3 + hl, 0);
                f.extend_from_slice(&seg);
                let mut ip = Ipv4::new_unchecked(&mut f[l3..]);
                ip.set_version_and_header_len(hl);
                ip.set_total_len((hl + seg.len()) as u16);
                ip.set_ident(self.ident);
                ip.set_frag(true, false, 0);
                ip.set_ttl(self.ttl);
                ip.set_protocol(proto);
                ip.set_src_addr(s);
                ip.set_dst_addr(d);
                ip.options_mut().fill(1); // NOPs
                ip.fill_checksum();
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.resize(l3 + 40, 0);
                f.extend_from_slice(&seg);
                let mut ip = Ipv6::new_unchecked(&mut f[l3..]);
                ip.set_version_tc_flow(0, self.ident as u32);
                ip.set_payload_len(seg.len() as u16);
                ip.set_next_header(proto);
                ip.set_hop_limit(self.ttl);
                ip.set_src_addr(s);
                ip.set_dst_addr(d);
            }
            _ => unreachable!(),
        }
        f.resize(f.len() + self.padding, 0);
        f
    }
}

fn local_addrs() -> LocalAddrs {
    LocalAddrs {
        mac: [0x02, 0, 0, 0, 0, 1],
        ipv4: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 168, 1, 1)],
        punt_udp: Some(7400),
        punt_arp: true,
    }
}

// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    // ---- checksums ----

    #[test]
    fn sum_matches_reference(data in prop::collection::vec(any::<u8>(), 0..300), split in 0usize..150) {
        prop_assert_eq!(checksum::sum(&data), naive_sum(&data));
        let split = (split * 2).min(data.len() & !1);
        let (a, b) = data.split_at(split);
        prop_assert_eq!(checksum::combine(checksum::sum(a), checksum::sum(b)), naive_sum(&data));
    }

    #[test]
    fn update16_equals_recompute(mut data in prop::collection::vec(any::<u8>(), 2..64), pos in 0usize..32, new in any::<u16>()) {
        let words = data.len() / 2;
        let at = (pos % words) * 2;
        let before = checksum::checksum(&data);
        let old = u16::from_be_bytes([data[at], data[at + 1]]);
        data[at..at + 2].copy_from_slice(&new.to_be_bytes());
        prop_assume!(data.iter().any(|&b| b != 0));
        prop_assert_eq!(checksum::update16(before, old, new), checksum::checksum(&data));
    }

    #[test]
    fn update32_equals_recompute(mut data in prop::collection::vec(any::<u8>(), 4..64), pos in 0usize..16, new in any::<u32>()) {
        let at = (pos % (data.len() / 4)) * 4;
        let before = checksum::checksum(&data);
        let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        data[at..at + 4].copy_from_slice(&new.to_be_bytes());
        prop_assume!(data.iter().any(|&b| b != 0));
        prop_assert_eq!(checksum::update32(before, old, new), checksum::checksum(&data));
    }

    #[test]
    fn ipv4_rewrites_equal_recompute(spec in frame_spec(), ns in any::<[u8; 4]>(), nd in any::<[u8; 4]>(), ttl in any::<u8>()) {
        prop_assume!(!spec.v6);
        let mut f = spec.build();
        let p = parse_frame(&f).unwrap();
        let L3::Ipv4(info) = p.l3 else { unreachable!() };
        let (ns, nd) = (Ipv4Addr::from(ns), Ipv4Addr::from(nd));
        let (l3, l4) = f.split_at_mut(info.offset + info.header_len);
        // `l3` ends at the header: the datagram was validated above, so no re-parse.
        let mut ip = Ipv4::new_unchecked(&mut l3[info.offset..]);
        let (os, od) = (ip.src_addr(), ip.dst_addr());
        ip.update_src_addr(ns);
        ip.update_dst_addr(nd);
        ip.update_ttl(ttl);
        let inc = ip.checksum();
        ip.fill_checksum();
        prop_assert_eq!(inc, ip.checksum());
        let seg = &mut l4[..info.end - info.offset - info.header_len];
        match spec.l4 {
            L4Spec::Tcp { .. } => {
                let mut t = Tcp::parse(seg).unwrap();
                t.update_pseudo_ipv4_addr(os, ns);
                t.update_pseudo_ipv4_addr(od, nd);
                let inc = t.checksum();
                t.fill_checksum_v4(ns, nd);
                prop_assert_eq!(inc, t.checksum());
            }
            L4Spec::Udp { .. } => {
                let mut u = Udp::parse(seg).unwrap();
                u.update_pseudo_ipv4_addr(os, ns);
                u.update_pseudo_ipv4_addr(od, nd);
                prop_assert!(u.verify_checksum_v4(ns, nd));
                let inc = u.checksum();
                u.fill_checksum_v4(ns, nd);
                prop_assert_eq!(inc, u.checksum());
            }
            L4Spec::Icmp { .. } => {}
        }
    }

    #[test]
    fn tcp_field_rewrites_equal_recompute(
        spec in frame_spec(), sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(), win in any::<u16>(),
    ) {
        let mut f = spec.build();
        let p = parse_frame(&f).unwrap();
        let L4::Tcp(i) = p.l4 else { return Ok(()) };
        let (s, d) = spec.addrs();
        let mut t = Tcp::parse(&mut f[i.offset..i.end]).unwrap();
        t.update_src_port(sp);
        t.update_dst_port(dp);
        t.update_seq(seq);
        t.update_ack(ack);
        t.update_window(win);
        let inc = t.checksum();
        match (s, d) {
            (IpAddr::V4(s), IpAddr::V4(d)) => t.fill_checksum_v4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => t.fill_checksum_v6(&s, &d),
            _ => unreachable!(),
        }
        prop_assert_eq!(inc, t.checksum());
        prop_assert_eq!((t.src_port(), t.dst_port(), t.seq(), t.ack(), t.window()), (sp, dp, seq, ack, win));
    }

    #[test]
    fn ipv6_pseudo_rewrite_equals_recompute(spec in frame_spec(), na in any::<[u8; 16]>()) {
        prop_assume!(spec.v6);
        let mut f = spec.build();
        let p = parse_frame(&f).unwrap();
        let (IpAddr::V6(s), IpAddr::V6(d)) = spec.addrs() else { unreachable!() };
        let na = Ipv6Addr::from(na);
        match p.l4 {
            L4::Tcp(i) => {
                let mut t = Tcp::parse(&mut f[i.offset..i.end]).unwrap();
                t.update_pseudo_ipv6_addr(&s, &na);
                prop_assert!(t.verify_checksum_v6(&na, &d));
            }
            L4::Udp(i) => {
                let mut u = Udp::parse(&mut f[i.offset..i.end]).unwrap();
                u.update_pseudo_ipv6_addr(&s, &na);
                prop_assert!(u.verify_checksum_v6(&na, &d));
            }
            _ => {}
        }
    }

    // ---- round trips ----

    #[test]
    fn frame_round_trip(spec in frame_spec()) {
        let f = spec.build();
        let p = parse_frame(&f).unwrap();
        prop_assert_eq!(p.l2.dst, spec.dst);
        prop_assert_eq!(p.l2.src, spec.src);
        prop_assert_eq!(p.l2.vlan, spec.vlans.first().copied());
        prop_assert_eq!(p.l2.inner_vlan, spec.vlans.get(1).copied());
        prop_assert_eq!(p.l2.l3_offset, 14 + 4 * spec.vlans.len());
        let e = Ethernet::parse(&f[..]).unwrap();
        prop_assert_eq!(e.ethertype(), p.l2.ethertype);
        let (s, d) = spec.addrs();
        let info = match p.l3 {
            L3::Ipv4(i) => {
                prop_assert!(!spec.v6);
                let ip = Ipv4::parse(&f[i.offset..]).unwrap();
                prop_assert_eq!((ip.ttl(), ip.ident(), ip.dont_frag(), ip.more_frags()), (spec.ttl, spec.ident, true, false));
                prop_assert_eq!(ip.header_len(), 20 + 4 * spec.ip_opts);
                prop_assert_eq!(IpAddr::V4(ip.src_addr()), s);
                prop_assert_eq!(IpAddr::V4(ip.dst_addr()), d);
                i
            }
            L3::Ipv6(i) => {
                prop_assert!(spec.v6);
                let ip = Ipv6::parse(&f[i.offset..]).unwrap();
                prop_assert_eq!((ip.hop_limit(), ip.flow_label()), (spec.ttl, spec.ident as u32));
                prop_assert_eq!(IpAddr::V6(ip.src_addr()), s);
                prop_assert_eq!(IpAddr::V6(ip.dst_addr()), d);
                i
            }
            other => { prop_assert!(false, "{:?}", other); unreachable!() }
        };
        prop_assert_eq!(info.end, f.len() - spec.padding);
        let key = FlowKey::from_frame(&f).unwrap();
        prop_assert_eq!((key.src, key.dst), (s, d));
        prop_assert_eq!(key.symmetric_hash(), key.reversed().symmetric_hash());
        match (&spec.l4, p.l4) {
            (L4Spec::Tcp { sp, dp, seq, ack, flags, win, opts, payload }, L4::Tcp(i)) => {
                let t = Tcp::parse(&f[i.offset..i.end]).unwrap();
                prop_assert_eq!((t.src_port(), t.dst_port(), t.seq(), t.ack(), t.flags(), t.window()), (*sp, *dp, *seq, *ack, *flags, *win));
                prop_assert_eq!(t.payload(), &payload[..]);
                prop_assert_eq!((key.src_port, key.dst_port, key.protocol), (*sp, *dp, ip_proto::TCP));
                match (s, d) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => prop_assert!(t.verify_checksum_v4(s, d)),
                    (IpAddr::V6(s), IpAddr::V6(d)) => prop_assert!(t.verify_checksum_v6(&s, &d)),
                    _ => unreachable!(),
                }
                let (_, expect) = encode_opts(opts);
                let got: Vec<_> = t.options().filter(|o| !matches!(o, TcpOption::Sack(_))).collect();
                prop_assert_eq!(got, expect);
                let sacks: Vec<Vec<(u32, u32)>> = t.options().filter_map(|o| match o {
                    TcpOption::Sack(s) => Some(s.iter().collect()), _ => None }).collect();
                let want: Vec<Vec<(u32, u32)>> = opts.iter().filter_map(|o| match o {
                    OptSpec::Sack(v) => Some(v.clone()), _ => None }).take(sacks.len()).collect();
                prop_assert_eq!(sacks, want);
            }
            (L4Spec::Udp { sp, dp, payload }, L4::Udp(i)) => {
                let u = Udp::parse(&f[i.offset..i.end]).unwrap();
                prop_assert_eq!((u.src_port(), u.dst_port()), (*sp, *dp));
                prop_assert_eq!(u.payload(), &payload[..]);
                prop_assert_eq!((key.src_port, key.dst_port), (*sp, *dp));
            }
            (L4Spec::Icmp { ty, code, id, seq, payload }, L4::Icmp(i) | L4::Icmpv6(i)) => {
                let m = Icmp::parse(&f[i.offset..i.end]).unwrap();
                prop_assert_eq!((m.msg_type(), m.code(), m.echo_ident(), m.echo_seq()), (*ty, *code, *id, *seq));
                prop_assert_eq!(m.payload(), &payload[..]);
                prop_assert_eq!((key.src_port, key.dst_port), (0, 0));
                if !spec.v6 { prop_assert!(m.verify_checksum()); }
            }
            (l, got) => prop_assert!(false, "{:?} parsed as {:?}", l, got),
        }
    }

    #[test]
    fn ipv4_fragments_share_key(spec in frame_spec(), off in 0u16..8192, mf in any::<bool>()) {
        prop_assume!(!spec.v6 && (mf || off != 0));
        let mut f = spec.build();
        let l3 = 14 + 4 * spec.vlans.len();
        {
            let mut ip = Ipv4::parse(&mut f[l3..]).unwrap();
            ip.set_frag(false, mf, off << 3);
            ip.fill_checksum();
        }
        let p = parse_frame(&f).unwrap();
        prop_assert_eq!(p.l4, L4::Fragment { first: off == 0 });
        let k = FlowKey::from_frame(&f).unwrap();
        prop_assert_eq!((k.src_port, k.dst_port), (0, 0));
        let (s, d) = spec.addrs();
        prop_assert_eq!((k.src, k.dst), (s, d));
    }

    #[test]
    fn arp_round_trip(op in any::<u16>(), sm in any::<[u8; 6]>(), si in any::<[u8; 4]>(), tm in any::<[u8; 6]>(), ti in any::<[u8; 4]>()) {
        let mut b = [0u8; 28];
        let mut a = Arp::new_unchecked(&mut b[..]);
        a.set_ethernet_ipv4();
        a.set_operation(op);
        a.set_sender_mac(sm);
        a.set_sender_ip(si.into());
        a.set_target_mac(tm);
        a.set_target_ip(ti.into());
        let a = Arp::parse(&b[..]).unwrap();
        prop_assert_eq!((a.operation(), a.sender_mac(), a.sender_ip(), a.target_mac(), a.target_ip()),
            (op, sm, Ipv4Addr::from(si), tm, Ipv4Addr::from(ti)));
    }

    #[test]
    fn ethernet_setters_round_trip(spec in frame_spec(), d in any::<[u8; 6]>(), s in any::<[u8; 6]>(), vid in 0u16..4096, et in any::<u16>()) {
        let mut f = spec.build();
        let mut e = Ethernet::parse(&mut f[..]).unwrap();
        e.set_dst(d);
        e.set_src(s);
        let tagged = e.set_vlan_id(vid);
        prop_assert_eq!(tagged, !spec.vlans.is_empty());
        // Changing the payload EtherType to a tag value would change the tag count.
        prop_assume!(!matches!(et, ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD));
        e.set_ethertype(et);
        let e = Ethernet::parse(&f[..]).unwrap();
        prop_assert_eq!((e.dst(), e.src(), e.ethertype()), (d, s, et));
        if tagged { prop_assert_eq!(e.vlan_id(), Some(vid)); }
        prop_assert_eq!(e.l3_offset(), ethernet::HEADER_LEN + 4 * spec.vlans.len());
    }

    #[test]
    fn option_emit_round_trip(opts in prop::collection::vec(opt_spec(), 0..8)) {
        let (bytes, expect) = encode_opts(&opts);
        let got: Vec<_> = TcpOptions::new(&bytes).collect::<Result<Vec<_>, _>>().unwrap();
        let got: Vec<_> = got.into_iter().filter(|o| !matches!(o, TcpOption::Sack(_))).collect();
        prop_assert_eq!(got, expect);
        // Re-encoding every parsed option reproduces the bytes (minus NOPs and padding).
        let mut re = Vec::new();
        for o in TcpOptions::new(&bytes) {
            let o = o.unwrap();
            let mut buf = [0u8; 64];
            let n = o.emit(&mut buf).unwrap();
            prop_assert_eq!(n, o.wire_len());
            re.extend_from_slice(&buf[..n]);
        }
        let stripped: Vec<_> = TcpOptions::new(&re).map(Result::unwrap).collect();
        let orig: Vec<_> = TcpOptions::new(&bytes).map(Result::unwrap).collect();
        prop_assert_eq!(stripped, orig);
        let _ = SackBlocks::len; // keep the type in the public surface under test
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]

    // ---- robustness (the fuzz body, on stable) ----

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        fuzz_entry(&data);
    }

    #[test]
    fn mutated_frames_never_panic(spec in frame_spec(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6), cut in any::<prop::sample::Index>(), do_cut in any::<bool>()) {
        let mut f = spec.build();
        for (i, v) in edits {
            let at = i.index(f.len());
            f[at] = v;
        }
        if do_cut {
            let n = cut.index(f.len() + 1);
            f.truncate(n);
        }
        fuzz_entry(&f);
    }

    #[test]
    fn answer_local_never_panics_and_keeps_length(data in prop::collection::vec(any::<u8>(), 0..120)) {
        let mut f = data.clone();
        let _ = answer_local(&mut f, &local_addrs());
        prop_assert_eq!(f.len(), data.len());
    }

    #[test]
    fn pings_to_us_are_answered(spec in frame_spec(), which in any::<bool>()) {
        // Turn any IPv4 ICMP frame into an echo request to one of our addresses.
        let L4Spec::Icmp { id, seq, payload, .. } = spec.l4.clone() else { return Ok(()) };
        let mut spec = spec;
        spec.v6 = false;
        spec.l4 = L4Spec::Icmp { ty: 8, code: 0, id, seq, payload: payload.clone() };
        let me = local_addrs();
        let ours = me.ipv4[which as usize];
        spec.b[..4].copy_from_slice(&ours.octets());
        spec.a[0] = 10 + (spec.a[0] % 100); // a unicast, non-loopback source
        let req = spec.build();
        let mut f = req.clone();
        prop_assert_eq!(answer_local(&mut f, &me), dataplane::role::local::LocalVerdict::Replied);
        let p = parse_frame(&f).unwrap();
        let (L3::Ipv4(i), L4::Icmp(l4)) = (p.l3, p.l4) else { unreachable!() };
        let ip = Ipv4::parse(&f[i.offset..]).unwrap();
        prop_assert_eq!(ip.src_addr(), ours);
        prop_assert_eq!(ip.ttl(), 64);
        let m = Icmp::parse(&f[l4.offset..l4.end]).unwrap();
        prop_assert!(m.verify_checksum());
        let mut copy = f[l4.offset..l4.end].to_vec();
        copy[2] = 0; copy[3] = 0;
        prop_assert_eq!(m.checksum(), checksum::checksum(&copy));
        prop_assert_eq!((m.msg_type(), m.echo_ident(), m.echo_seq()), (0, id, seq));
        prop_assert_eq!(m.payload(), &payload[..]);
        prop_assert_eq!(&f[0..6], &spec.src);
        prop_assert_eq!(&f[6..12], &me.mac);
    }
}

#[test]
fn drop_reasons_are_single() {
    // A frame broken at two layers reports the outer one.
    let mut f = vec![0u8; 14];
    f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
    f.extend_from_slice(&[0x45, 0, 0, 40]);
    assert_eq!(parse_frame(&f).unwrap_err(), DropReason::MalformedIpv4);
}
