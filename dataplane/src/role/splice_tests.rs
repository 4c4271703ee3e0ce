//! Tests of the splice role: whole connections driven through it with frames as the
//! clients' and backends' TCP stacks would send them, every emitted and rewritten frame
//! checked field by field (and its checksums recomputed).

use super::*;
use crate::balance::{member_key, FlowHasher, HashPolicy, MemberEntry, MemberSpec, SelectionTable};
use crate::packet::build::TCP4_HEADERS;
use crate::packet::{arp, Arp, Ipv4};
use crate::role::VecEmit;
use crate::stats::LcoreCounters;
use proptest::prelude::*;

const PORT_MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 0xa0], [2, 0, 0, 0, 0, 0xb0]];
const OWN: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 1, 0, 2)];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
const BACKENDS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 21), Ipv4Addr::new(10, 1, 0, 22)];
const BACKEND_MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 1, 21], [2, 0, 0, 0, 1, 22]];
/// The role's clock runs at 1000 ticks per second: one tick is a millisecond.
const T0_MS: u64 = 1_700_000_000_000;

fn local() -> Vec<LocalAddrs> {
    (0..2).map(|i| LocalAddrs { mac: PORT_MAC[i], ipv4: vec![OWN[i]], punt_udp: None, punt_arp: true }).collect()
}

fn pool_table(weights: &[u32], macs: &[[u8; 6]]) -> Option<SelectionTable> {
    let members: Vec<MemberSpec> = weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| MemberSpec { key: member_key(format!("b{i}").as_bytes()), weight, entry: MemberEntry { mac: macs[i], port: 1 } })
        .collect();
    let t = SelectionTable::build(FlowHasher::new(HashPolicy::L34, 1), &members, None).ok();
    t.filter(|_| weights.iter().any(|&w| w > 0))
}

fn tables(weights: &[u32]) -> Arc<BalanceTables> {
    Arc::new(BalanceTables { vips: vec![pool_table(weights, &BACKEND_MAC)] })
}

/// Pool 1 for the routing tests: one backend.
const STATIC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 31);
const STATIC_MAC: [u8; 6] = [2, 0, 0, 0, 1, 31];

fn keys() -> CookieKeys {
    CookieKeys { current: cookie::Key([7; 16]), previous: None }
}

struct Net {
    role: Splice,
    counters: LcoreCounters,
    /// Milliseconds since T0_MS.
    now: u64,
}

impl Net {
    fn new(capacity: usize, attempts: u32) -> Net {
        Net::with(capacity, attempts, tables(&[1, 1]))
    }

    fn with(capacity: usize, attempts: u32, tables: Arc<BalanceTables>) -> Net {
        Net::routed(capacity, attempts, tables, Rules::default())
    }

    fn routed(capacity: usize, attempts: u32, tables: Arc<BalanceTables>, rules: Rules) -> Net {
        Net::build(capacity, attempts, tables, rules, false, false)
    }

    /// `least`: pool 0 chooses by least connections; `transparent`: the service keeps the
    /// client's address on the backend leg (and a second transparent service on `VIP2`
    /// uses the same pool).
    fn build(capacity: usize, attempts: u32, tables: Arc<BalanceTables>, rules: Rules, least: bool, transparent: bool) -> Net {
        Net::build_with(capacity, attempts, tables, rules, least, transparent, |_| {})
    }

    /// As `build`, with the settings changed by `tweak` first.
    #[allow(clippy::too_many_arguments)]
    fn build_with(capacity: usize, attempts: u32, tables: Arc<BalanceTables>, rules: Rules, least: bool, transparent: bool, tweak: impl FnOnce(&mut SpliceSettings)) -> Net {
        let service = SpliceService {
            vip: VIP,
            ports: vec![(80, 80)],
            rules,
            max_connections: 1000,
            transparent,
            first_request_ms: 3000,
            connect_ms: 1000,
            connect_attempts: attempts,
            idle_ms: 60_000,
            half_closed_ms: 10_000,
            reset_without_backend: false,
        };
        let settings = SpliceSettings {
            mss: 1400,
            wscale: 9,
            capacity,
            handshakes: 64,
            request_buffer_bytes: 4096,
            nat: NatSlices::new(20_000, 20_099, 1).unwrap(),
            worker: 0,
            rss: Vec::new(),
            seed: 42,
            clock: Clock { tsc_hz: 1000, tsc0: 0, unix_ms0: T0_MS },
        };
        let mut settings = settings;
        tweak(&mut settings);
        let pools = vec![
            SplicePool { backends: BACKENDS.iter().map(|&a| (a, Some(8080))).collect(), least_connections: least },
            SplicePool { backends: vec![(STATIC, None)], least_connections: false },
        ];
        let mut services = vec![service.clone()];
        if transparent {
            services.push(SpliceService { vip: VIP2, ..service });
        }
        let role = Splice::new(services, pools, settings, keys(), tables, local(), &[0], None).unwrap();
        Net { role, counters: LcoreCounters::default(), now: 0 }
    }

    /// One frame in; the verdict, the frame as it leaves, and what was emitted.
    fn send(&mut self, port: PortIndex, frame: &[u8]) -> (Verdict, Vec<u8>, Vec<(PortIndex, Vec<u8>)>) {
        let mut f = frame.to_vec();
        let mut emit = VecEmit::default();
        let mut ctx = Ctx { now_tsc: self.now, counters: &mut self.counters, emit: &mut emit, clock: None };
        let v = self.role.handle(port, &mut f, &mut ctx);
        (v, f, emit.frames)
    }

    /// Lcore `worker` of `workers` sharing the NAT ports 20_000..=20_099, with `rss` per port.
    fn lcore(worker: u16, workers: u16, rss: Vec<Option<RssSteer>>) -> Net {
        Net::build_with(64, 3, tables(&[1, 1]), Rules::default(), false, false, |s| {
            s.nat = NatSlices::new(20_000, 20_099, workers).unwrap();
            s.worker = worker;
            s.rss = rss;
        })
    }

    fn tick(&mut self) -> Vec<(PortIndex, Vec<u8>)> {
        let mut emit = VecEmit::default();
        let mut ctx = Ctx { now_tsc: self.now, counters: &mut self.counters, emit: &mut emit, clock: None };
        self.role.tick(&mut ctx);
        emit.frames
    }

    fn stat(&self, s: SpliceStat) -> u64 {
        self.role.counters().get(s)
    }
}

/// A segment as a peer's stack sends it.
#[allow(clippy::too_many_arguments)]
fn seg(src_mac: [u8; 6], dst_mac: [u8; 6], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), seq: u32, ack: u32, fl: u8, window: u16, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    let s = Tcp4Segment { src_mac, dst_mac, src: src.0, dst: dst.0, sport: src.1, dport: dst.1, seq, ack, flags: fl, window, ip_id: 1 };
    let mut buf = vec![0u8; TCP4_HEADERS + opts.len() + payload.len()];
    tcp4(&mut buf, &s, opts, payload).unwrap();
    buf
}

fn ts_opt(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend(tsval.to_be_bytes());
    o.extend(tsecr.to_be_bytes());
    o
}

/// A frame's TCP segment, after checking both checksums.
struct Seen {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: SynOffer,
    payload: Vec<u8>,
}

fn seen(frame: &[u8]) -> Seen {
    let ip = Ipv4::parse(&frame[14..]).expect("IPv4 header and checksum");
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let end = 14 + ip.total_len();
    let tcp = Tcp::parse(&frame[34..end]).unwrap();
    assert!(tcp.verify_checksum_v4(src, dst), "TCP checksum");
    Seen {
        src_mac: mac_at(frame, 6),
        dst_mac: mac_at(frame, 0),
        src: (src, tcp.src_port()),
        dst: (dst, tcp.dst_port()),
        seq: tcp.seq(),
        ack: tcp.ack(),
        flags: tcp.flags(),
        window: tcp.window(),
        opts: SynOffer::parse(tcp.option_bytes()).unwrap(),
        payload: tcp.payload().to_vec(),
    }
}

const LINUX_SYN_OPTS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0x13, 0x88, 0, 0, 0, 0, 1, 3, 3, 7];
const C0: u32 = 0xffff_fff0; // the client's ISN: its sequence numbers wrap during the test
const CPORT: u16 = 40_000;

fn from_client(n: &mut Net, cport: u16, seq: u32, ack: u32, fl: u8, opts: &[u8], payload: &[u8]) -> (Verdict, Vec<u8>, Vec<(PortIndex, Vec<u8>)>) {
    let f = seg(CLIENT_MAC, PORT_MAC[0], (CLIENT, cport), (VIP, 80), seq, ack, fl, 502, opts, payload);
    n.send(0, &f)
}

/// SYN and the handshake's ACK (with `payload`) from the client on `cport`: the cookie
/// ISN a0 and the SYN the appliance sent the backend.
fn connect(n: &mut Net, cport: u16, payload: &[u8]) -> (u32, Seen) {
    let (v, _, out) = from_client(n, cport, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(out.len(), 1);
    let synack = seen(&out[0].1);
    let a0 = synack.seq;
    let (v, _, out) = from_client(n, cport, C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK, &ts_opt(5001, synack.opts.ts.unwrap().0), payload);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(out.len(), 1, "one SYN to a backend");
    assert_eq!(out[0].0, 1);
    (a0, seen(&out[0].1))
}

#[test]
fn a_connection_is_answered_spliced_and_closed() {
    let mut n = Net::new(64, 3);
    n.now = 5;
    // SYN → a SYN-ACK with a cookie and our options, nothing stored.
    let (v, _, out) = from_client(&mut n, CPORT, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    assert_eq!(v, Verdict::Consumed);
    let sa = seen(&out[0].1);
    assert_eq!(out[0].0, 0);
    assert_eq!((sa.src_mac, sa.dst_mac), (PORT_MAC[0], CLIENT_MAC));
    assert_eq!((sa.src, sa.dst), ((VIP, 80), (CLIENT, CPORT)));
    assert_eq!((sa.ack, sa.flags), (C0.wrapping_add(1), flags::SYN | flags::ACK));
    assert_eq!(sa.opts, SynOffer { mss: Some(1400), wscale: Some(9), sack: true, ts: Some(((T0_MS + 5) as u32, 5000)) });
    assert!(n.role.table().is_empty());
    let a0 = sa.seq;
    let t = Tuple { client: CLIENT, client_port: CPORT, vip: VIP, vip_port: 80 };
    assert!(cookie::check(&keys(), &t, C0, a0, cookie::slot_of((T0_MS + 5) / 1000)).is_some());

    // The handshake's ACK → a SYN to a backend with the client's ISN and options.
    n.now = 7;
    let (v, _, out) = from_client(&mut n, CPORT, C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK, &ts_opt(5001, sa.opts.ts.unwrap().0), b"");
    assert_eq!(v, Verdict::Consumed);
    let syn = seen(&out[0].1);
    assert_eq!(out[0].0, 1);
    let b = BACKENDS.iter().position(|&a| a == syn.dst.0).expect("to a backend");
    assert_eq!((syn.src_mac, syn.dst_mac), (PORT_MAC[1], BACKEND_MAC[b]));
    assert_eq!((syn.src.0, syn.dst.1), (OWN[1], 8080));
    assert!((20_000..=20_099).contains(&syn.src.1), "a NAT port");
    assert_eq!((syn.seq, syn.flags), (C0, flags::SYN));
    assert_eq!(syn.opts, SynOffer { mss: Some(1400), wscale: Some(7), sack: true, ts: Some((5001, 0)) });
    assert_eq!(n.role.table().len(), 1);

    // The request arrives before the backend answers: kept, not acknowledged.
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (v, _, out) = from_client(&mut n, CPORT, C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK | flags::PSH, &ts_opt(5002, sa.opts.ts.unwrap().0), req);
    assert_eq!((v, out.len()), (Verdict::Consumed, 0));

    // The backend's SYN-ACK → the request replayed at its own sequence numbers.
    n.now = 9;
    let nat = syn.src;
    let backend = syn.dst;
    let s0: u32 = 0x0000_0100;
    let mut opts = vec![2, 4, 5, 0xb4, 4, 2];
    opts.extend(ts_opt(90_000, 5001)[2..].iter());
    opts.extend([1, 3, 3, 5]);
    let f = seg(BACKEND_MAC[b], PORT_MAC[1], backend, nat, s0, C0.wrapping_add(1), flags::SYN | flags::ACK, 65_535, &opts, b"");
    let (v, _, out) = n.send(1, &f);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(out.len(), 1);
    let replay = seen(&out[0].1);
    assert_eq!((replay.src, replay.dst), (nat, backend));
    assert_eq!((replay.seq, replay.ack), (C0.wrapping_add(1), s0 + 1));
    assert_eq!(replay.flags, flags::ACK | flags::PSH);
    assert_eq!(replay.payload, req);
    assert_eq!(replay.opts.ts, Some((5001, 90_000)));
    assert_eq!(n.stat(SpliceStat::Established), 1);
    assert_eq!(n.stat(SpliceStat::ReplayedBytes), req.len() as u64);
    // Set up 2 ms after the handshake's ACK (7 → 9): counted in [2^10, 2^11) µs.
    let h = n.role.counters().setup_buckets();
    assert_eq!((h[11], h.iter().sum::<u64>()), (1, 1), "{h:?}");

    // The response, spliced to the client: seq + Δ, TSval + offset, window rescaled 5 → 9.
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let ack_req = C0.wrapping_add(1).wrapping_add(req.len() as u32);
    let f = seg(BACKEND_MAC[b], PORT_MAC[1], backend, nat, s0 + 1, ack_req, flags::ACK | flags::PSH, 1000, &ts_opt(90_010, 5002), resp);
    let (v, out_frame, _) = n.send(1, &f);
    assert_eq!(v, Verdict::Tx(0));
    let r = seen(&out_frame);
    assert_eq!((r.src_mac, r.dst_mac), (PORT_MAC[0], CLIENT_MAC));
    assert_eq!((r.src, r.dst), ((VIP, 80), (CLIENT, CPORT)));
    assert_eq!((r.seq, r.ack), (a0.wrapping_add(1), ack_req));
    assert_eq!(r.window, 62, "1000 << 5 >> 9, rounded down");
    let ts_delta = ((T0_MS + 9) as u32).wrapping_sub(90_000);
    assert_eq!(r.opts.ts, Some((90_010u32.wrapping_add(ts_delta), 5002)));
    assert_eq!(r.payload, resp);

    // The client's ACK of it, spliced to the backend: ack − Δ, TSecr − offset.
    let f = seg(CLIENT_MAC, PORT_MAC[0], (CLIENT, CPORT), (VIP, 80), ack_req, a0.wrapping_add(1 + resp.len() as u32), flags::ACK, 300, &ts_opt(5003, 90_010u32.wrapping_add(ts_delta)), b"");
    let (v, out_frame, _) = n.send(0, &f);
    assert_eq!(v, Verdict::Tx(1));
    let c = seen(&out_frame);
    assert_eq!((c.src_mac, c.dst_mac), (PORT_MAC[1], BACKEND_MAC[b]));
    assert_eq!((c.src, c.dst), (nat, backend));
    assert_eq!((c.seq, c.ack, c.window), (ack_req, s0 + 1 + resp.len() as u32, 300));
    assert_eq!(c.opts.ts, Some((5003, 90_010)));

    // FIN both ways: closed, then expired after the linger; the NAT port comes back.
    let f = seg(BACKEND_MAC[b], PORT_MAC[1], backend, nat, s0 + 1 + resp.len() as u32, ack_req, flags::ACK | flags::FIN, 1000, &ts_opt(90_020, 5003), b"");
    assert_eq!(n.send(1, &f).0, Verdict::Tx(0));
    let f = seg(CLIENT_MAC, PORT_MAC[0], (CLIENT, CPORT), (VIP, 80), ack_req, a0.wrapping_add(2 + resp.len() as u32), flags::ACK | flags::FIN, 300, &ts_opt(5004, 1), b"");
    assert_eq!(n.send(0, &f).0, Verdict::Tx(1));
    assert_eq!(n.stat(SpliceStat::Finished), 1);
    assert_eq!(n.role.table().iter().next().unwrap().0.state, State::Closed);
    n.now += 1000;
    n.tick();
    assert_eq!(n.role.table().len(), 1, "lingers");
    n.now += u64::from(CLOSED_LINGER_S) * 1000;
    n.tick();
    n.tick();
    assert!(n.role.table().is_empty());
    assert_eq!(n.stat(SpliceStat::Expired), 1);
    assert_eq!(n.role.nat.available(), 100);
    assert_eq!(n.stat(SpliceStat::ToServerPackets), 2);
    assert_eq!(n.stat(SpliceStat::ToClientPackets), 2);
    // Per backend (ctl members): the two segments spliced toward it.
    let per = n.role.member_counters().snapshot();
    assert_eq!(per[0][b].0, 2, "{per:?}");
    assert_eq!(per[0][1 - b].0, 0, "{per:?}");
}

#[test]
fn a_backend_segment_for_another_lcores_nat_port_is_handed_to_that_lcore() {
    // Two lcores share the NAT ports: lcore 0 has 20_000..=20_049, lcore 1 the rest.
    let on = |w| Net::lcore(w, 2, Vec::new());
    let (mut n0, mut n1) = (on(0), on(1));
    let (_, syn) = connect(&mut n1, CPORT, b"");
    assert!((20_050..=20_099).contains(&syn.src.1), "lcore 1 takes its own slice: {}", syn.src.1);
    let b = BACKENDS.iter().position(|&a| a == syn.dst.0).unwrap();
    let from_backend = |seq: u32, fl: u8, payload: &[u8], nat: (Ipv4Addr, u16)| seg(BACKEND_MAC[b], PORT_MAC[1], syn.dst, nat, seq, C0.wrapping_add(1), fl, 65_535, &[], payload);

    // The backend's SYN-ACK and its data, delivered to lcore 0 (a queue of the port that
    // lcore 0 polls): handed over untouched, nothing counted as a drop.
    for (seq, fl, payload) in [(9, flags::SYN | flags::ACK, &b""[..]), (10, flags::ACK, &b"hello"[..])] {
        let f = from_backend(seq, fl, payload, syn.src);
        let (v, out_frame, out) = n0.send(1, &f);
        assert_eq!(v, Verdict::Handoff(1));
        assert_eq!((out_frame, out.len()), (f, 0), "handed over as it came");
    }
    assert_eq!(n0.counters.drops.total(), 0);
    // Lcore 1 takes them as its own: established, then spliced to the client.
    assert_eq!(n1.send(1, &from_backend(9, flags::SYN | flags::ACK, b"", syn.src)).0, Verdict::Consumed);
    assert_eq!(n1.send(1, &from_backend(10, flags::ACK, b"hello", syn.src)).0, Verdict::Tx(0));

    // A segment for a gone splice in lcore 0's slice: lcore 1 hands it over, lcore 0 drops it.
    let stale = from_backend(10, flags::ACK, b"late", (syn.src.0, 20_007));
    assert_eq!(n1.send(1, &stale).0, Verdict::Handoff(0));
    assert_eq!(n0.send(1, &stale).0, Verdict::Drop(DropReason::NoSplice));
    // What no backend of ours sends (a SYN: a scan of the NAT range) is not carried across.
    let scan = seg(CLIENT_MAC, PORT_MAC[1], (CLIENT, 5555), (syn.src.0, 20_080), 1, 0, flags::SYN, 1024, &[], b"");
    assert_eq!(n0.send(1, &scan).0, Verdict::Drop(DropReason::NoSplice));
    // Beyond the NAT range: neither lcore's, nothing to hand over.
    let outside = from_backend(10, flags::ACK, b"x", (syn.src.0, 20_100));
    assert!(!matches!(n0.send(1, &outside).0, Verdict::Handoff(_)));
}

#[test]
fn with_the_ports_rss_known_a_backend_leg_gets_a_nat_port_whose_replies_come_back_here() {
    // Backend port 1: 4 RX queues, a 128-entry RETA round-robin; lcore 1 of 2 polls 1 and 3.
    let key: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x6d).collect();
    let reta: Vec<u16> = (0..128).map(|i| i % 4).collect();
    let steer = RssSteer::new(&key, reta.clone(), &[1, 3]).unwrap();
    let mut n = Net::lcore(1, 2, vec![None, Some(steer.clone())]);
    for i in 0..20 {
        let (_, syn) = connect(&mut n, CPORT + i, b"");
        let (backend, nat) = (syn.dst, syn.src);
        assert!((20_050..=20_099).contains(&nat.1), "its own slice: {}", nat.1);
        assert!(steer.reply_is_mine(backend.0, backend.1, nat.0, nat.1), "connection {i}: NAT port {} replies to queue {}", nat.1, steer.queue_of(backend.0, nat.0, backend.1, nat.1));
    }
    assert_eq!(n.stat(SpliceStat::NatUnsteered), 0);
    // Every port is back after the connections are gone (a swapped port is not lost).
    assert_eq!(n.role.nat.available() + n.role.table().len(), 50);

    // A RETA that never names this lcore's queues: the first free port, counted.
    let nowhere = RssSteer::new(&key, vec![0; 128], &[1]).unwrap();
    let mut n = Net::lcore(1, 2, vec![None, Some(nowhere)]);
    let (_, syn) = connect(&mut n, CPORT, b"");
    assert_eq!(syn.src.1, 20_050);
    assert_eq!(n.stat(SpliceStat::NatUnsteered), 1);
}

#[test]
fn a_request_larger_than_one_segment_is_replayed_in_order_and_beyond_the_buffer_is_left_to_the_client() {
    let mut n = Net::new(64, 3);
    let (a0, syn) = connect(&mut n, CPORT, b"");
    let body: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
    // Three segments of 2000 bytes, the second one twice and the third one first.
    for off in [4000usize, 0, 2000, 2000] {
        let (v, _, out) = from_client(&mut n, CPORT, C0.wrapping_add(1 + off as u32), a0.wrapping_add(1), flags::ACK, &ts_opt(5002, 0), &body[off..off + 2000]);
        assert_eq!((v, out.len()), (Verdict::Consumed, 0));
    }
    // Kept: the first 4000 bytes in order (the third segment came before its gap was
    // filled and is the client's to send again; the buffer holds 4096).
    let f = seg(BACKEND_MAC[0], PORT_MAC[1], syn.dst, syn.src, 9, C0.wrapping_add(1), flags::SYN | flags::ACK, 65_535, &[2, 4, 0x05, 0xb4], b"");
    let (v, _, out) = n.send(1, &f);
    assert_eq!(v, Verdict::Consumed);
    let sent: Vec<Seen> = out.iter().map(|(p, f)| {
        assert_eq!(*p, 1);
        seen(f)
    }).collect();
    assert!(sent.iter().all(|s| s.payload.len() <= 1400), "no segment above the backend's MSS (ours caps it at 1400)");
    let mut stream: Vec<u8> = Vec::new();
    let mut seq = C0.wrapping_add(1);
    for s in &sent {
        assert_eq!(s.seq, seq);
        assert_eq!(s.ack, 10);
        assert_eq!(s.opts.ts, None, "the backend did not take timestamps");
        seq = seq.wrapping_add(s.payload.len() as u32);
        stream.extend(&s.payload);
    }
    assert_eq!(stream, &body[..4000]);
    assert_eq!(sent.last().unwrap().flags & flags::PSH, flags::PSH);
    // The client now sends the rest again: spliced.
    let (v, f, _) = from_client(&mut n, CPORT, C0.wrapping_add(4001), a0.wrapping_add(1), flags::ACK, &[], &body[4000..]);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(seen(&f).seq, C0.wrapping_add(4001));
}

#[test]
fn forged_and_stale_handshakes_are_dropped_and_syn_floods_store_nothing() {
    let mut n = Net::new(64, 3);
    for i in 0..1000u16 {
        let (v, _, out) = from_client(&mut n, 1000 + i, u32::from(i) * 7919, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
        assert_eq!((v, out.len()), (Verdict::Consumed, 1));
    }
    assert!(n.role.table().is_empty());
    assert_eq!(n.stat(SpliceStat::SynCookies), 1000);
    let (_, _, out) = from_client(&mut n, CPORT, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    let a0 = seen(&out[0].1).seq;
    // Wrong ISN, wrong client ISN, a blind ACK, and the right one after two slots.
    for (seq, ack) in [(C0.wrapping_add(1), a0.wrapping_add(2)), (C0.wrapping_add(2), a0.wrapping_add(1)), (12345, 67890)] {
        let (v, _, out) = from_client(&mut n, CPORT, seq, ack, flags::ACK, &[], b"");
        assert_eq!((v, out.len()), (Verdict::Drop(DropReason::BadCookie), 0));
    }
    n.now += 3 * cookie::SLOT_SECONDS * 1000;
    let (v, _, _) = from_client(&mut n, CPORT, C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK, &[], b"");
    assert_eq!(v, Verdict::Drop(DropReason::BadCookie), "expired");
    assert!(n.role.table().is_empty());
    // Other segments without a splice are dropped too, and nothing answers them.
    for fl in [flags::RST, flags::FIN | flags::ACK | flags::SYN, 0] {
        let (v, _, out) = from_client(&mut n, CPORT, 1, 1, fl, &[], b"");
        assert_eq!((v, out.len()), (Verdict::Drop(DropReason::NoSplice), 0));
    }
}

#[test]
fn a_refusing_backend_moves_the_connection_to_the_next_and_the_last_refusal_resets_the_client() {
    let mut n = Net::new(64, 3);
    let (a0, syn) = connect(&mut n, CPORT, b"");
    let rst = |syn: &Seen| seg(BACKEND_MAC[0], PORT_MAC[1], syn.dst, syn.src, 0, C0.wrapping_add(1), flags::RST | flags::ACK, 0, &[], b"");
    let (v, _, out) = n.send(1, &rst(&syn));
    assert_eq!(v, Verdict::Consumed);
    let syn2 = seen(&out[0].1);
    assert_ne!(syn2.dst, syn.dst, "the other backend");
    assert_eq!((syn2.seq, syn2.flags, syn2.src), (C0, flags::SYN, syn.src));
    // A RST from the first backend's tuple is no longer ours.
    assert_eq!(n.send(1, &rst(&syn)).0, Verdict::Drop(DropReason::NoSplice));
    let (v, _, out) = n.send(1, &rst(&syn2));
    assert_eq!(v, Verdict::Consumed);
    let r = seen(&out[0].1);
    assert_eq!(out[0].0, 0);
    assert_eq!((r.src, r.dst), ((VIP, 80), (CLIENT, CPORT)));
    assert_eq!((r.seq, r.ack, r.flags), (a0.wrapping_add(1), C0.wrapping_add(1), flags::RST | flags::ACK));
    assert!(n.role.table().is_empty());
    assert_eq!((n.stat(SpliceStat::BackendRefused), n.stat(SpliceStat::BackendsExhausted)), (2, 1));
    assert_eq!(n.role.nat.available(), 100);
}

#[test]
fn a_silent_backend_gets_its_attempts_then_the_next_backend_is_tried() {
    let mut n = Net::new(64, 2);
    let (_, syn) = connect(&mut n, CPORT, b"hello");
    n.now += 500;
    assert!(n.tick().is_empty());
    n.now += 600;
    let out = n.tick();
    assert_eq!(out.len(), 1);
    assert_eq!(seen(&out[0].1).dst, syn.dst, "second attempt, same backend");
    // Each retransmission waits twice as long as the one before: 2 s for the second.
    n.now += 1900;
    assert!(n.tick().is_empty(), "the second SYN waits 2 s");
    assert_eq!(n.stat(SpliceStat::BackendTimeouts), 0);
    n.now += 200;
    let out = n.tick();
    let next = seen(&out[0].1);
    assert_ne!(next.dst, syn.dst);
    assert_eq!(n.stat(SpliceStat::BackendTimeouts), 1);
    assert_eq!(n.stat(SpliceStat::BackendSyns), 3);
    // The next backend starts over at 1 s.
    n.now += 1100;
    let out = n.tick();
    assert_eq!(seen(&out[0].1).dst, next.dst, "second attempt at the next backend after 1 s");
    // The next backend answers: the buffered request follows.
    let f = seg(BACKEND_MAC[1], PORT_MAC[1], next.dst, next.src, 5, C0.wrapping_add(1), flags::SYN | flags::ACK, 65_535, &[], b"");
    let (_, _, out) = n.send(1, &f);
    assert_eq!(seen(&out[0].1).payload, b"hello");
}

#[test]
fn a_full_table_refuses_new_connections_with_a_reset_and_the_old_one_goes_on() {
    let mut n = Net::new(1, 3);
    let (a0, syn) = connect(&mut n, CPORT, b"");
    let (_, _, out) = from_client(&mut n, CPORT + 1, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    let b0 = seen(&out[0].1).seq;
    let (v, _, out) = from_client(&mut n, CPORT + 1, C0.wrapping_add(1), b0.wrapping_add(1), flags::ACK, &[], b"");
    assert_eq!(v, Verdict::Drop(DropReason::SpliceFull));
    let r = seen(&out[0].1);
    assert_eq!((r.dst.1, r.seq, r.flags), (CPORT + 1, b0.wrapping_add(1), flags::RST));
    assert_eq!(n.stat(SpliceStat::RefusedFull), 1);
    let f = seg(BACKEND_MAC[0], PORT_MAC[1], syn.dst, syn.src, 9, C0.wrapping_add(1), flags::SYN | flags::ACK, 65_535, &[], b"");
    assert_eq!(n.send(1, &f).0, Verdict::Consumed);
    let (v, _, _) = from_client(&mut n, CPORT, C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK, &[], b"x");
    assert_eq!(v, Verdict::Tx(1));
}

#[test]
fn a_backend_gone_between_syn_and_ack_resets_the_client() {
    let mut n = Net::with(64, 3, tables(&[1, 0]));
    let (_, _, out) = from_client(&mut n, CPORT, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    let a0 = seen(&out[0].1).seq;
    n.role.update(SpliceUpdate::Tables(tables(&[0, 0])));
    let (v, _, out) = from_client(&mut n, CPORT, C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK, &[], b"");
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(n.counters.drops.get(DropReason::NoMember), 1);
    assert_eq!(seen(&out[0].1).flags, flags::RST | flags::ACK);
    assert_eq!(n.stat(SpliceStat::RefusedNoBackend), 1);
    assert_eq!(n.role.member_counters().no_member(), vec![1, 0]);
    // A table arrives: the next connection is spliced.
    n.role.update(SpliceUpdate::Tables(tables(&[1, 0])));
    let (_, syn) = connect(&mut n, CPORT + 1, b"");
    assert_eq!(syn.dst.0, BACKENDS[0]);
}

#[test]
fn a_syn_while_no_backend_is_live_goes_unanswered_until_one_is() {
    let mut n = Net::with(64, 3, tables(&[0, 0]));
    let (v, _, out) = from_client(&mut n, CPORT, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    assert_eq!(v, Verdict::Drop(DropReason::NoMember));
    assert!(out.is_empty(), "no SYN-ACK for a connection that could not be spliced");
    assert_eq!((n.stat(SpliceStat::SynsNoBackend), n.stat(SpliceStat::SynCookies)), (1, 0));
    assert_eq!(n.role.table().len(), 0);
    // The backend resolves; the client's retransmitted SYN is answered and spliced.
    n.role.update(SpliceUpdate::Tables(tables(&[0, 1])));
    let (_, syn) = connect(&mut n, CPORT, b"");
    assert_eq!(syn.dst.0, BACKENDS[1]);
    assert_eq!(n.stat(SpliceStat::SynsNoBackend), 1);
}

#[test]
fn a_service_that_resets_without_backend_answers_the_syn_with_a_rst_once_it_had_one() {
    let mut n = Net::with(64, 3, tables(&[0, 0]));
    n.role.services[0].reset_without_backend = true;
    // At start-up (no backend live yet) the SYN is dropped all the same: the backends are
    // being resolved, and the client's retransmission will be taken.
    let (v, _, out) = from_client(&mut n, CPORT, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    assert_eq!((v, out.len()), (Verdict::Drop(DropReason::NoMember), 0));
    n.role.update(SpliceUpdate::Tables(tables(&[1, 0])));
    n.role.update(SpliceUpdate::Tables(tables(&[0, 0])));
    let (v, _, out) = from_client(&mut n, CPORT, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    assert_eq!(v, Verdict::Drop(DropReason::NoMember));
    assert_eq!(out.len(), 1);
    let r = seen(&out[0].1);
    assert_eq!((r.src, r.dst, r.seq, r.ack, r.flags), ((VIP, 80), (CLIENT, CPORT), 0, C0.wrapping_add(1), flags::RST | flags::ACK));
    assert_eq!(n.stat(SpliceStat::SynsNoBackend), 2);
    assert_eq!(n.role.member_counters().no_member(), vec![2, 0], "counted against the pool");
}

#[test]
fn a_pool_the_port_cannot_reach_does_not_answer_the_syn() {
    use crate::splice::request::Rule;
    // Port 8080 goes to pool 1 (live); the SYN is to port 80, whose pool (the default,
    // 0) has no live backend.
    let t = Arc::new(BalanceTables { vips: vec![pool_table(&[0, 0], &BACKEND_MAC), pool_table(&[1], &[STATIC_MAC])] });
    let rules = Rules { rules: vec![Rule { dst_ports: vec![(8080, 8080)], pool: 1, ..Rule::default() }], default_pool: 0 };
    let mut n = Net::routed(64, 3, t, rules);
    n.role.services[0].reset_without_backend = true;
    let (v, _, out) = from_client(&mut n, CPORT, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    assert_eq!((v, out.len()), (Verdict::Drop(DropReason::NoMember), 0), "pool 0 is still being resolved: dropped, not refused, though pool 1 is live");
    assert_eq!(n.stat(SpliceStat::SynsNoBackend), 1);
    // Once the start-up grace is over, a pool that never came up is refused.
    n.now = STARTUP_GRACE_MS + 1;
    let (_, _, out) = from_client(&mut n, CPORT, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    assert_eq!(out.len(), 1);
    assert_eq!(seen(&out[0].1).flags, flags::RST | flags::ACK);
}

#[test]
fn a_syn_is_answered_when_a_pool_its_rules_can_choose_has_a_backend() {
    use crate::splice::request::{HostMatch, Rule};
    // Pool 0 (the default) has none; a host rule can send the connection to pool 1.
    let t = Arc::new(BalanceTables { vips: vec![pool_table(&[0, 0], &BACKEND_MAC), pool_table(&[1], &[STATIC_MAC])] });
    let rules = Rules { rules: vec![Rule { host: Some(HostMatch::parse("static.example")), pool: 1, ..Rule::default() }], default_pool: 0 };
    let mut n = Net::routed(64, 3, t, rules);
    let (v, _, out) = from_client(&mut n, CPORT, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(seen(&out[0].1).flags, flags::SYN | flags::ACK);
    assert_eq!(n.stat(SpliceStat::SynsNoBackend), 0);
}

#[test]
fn each_backend_shows_its_open_connections() {
    let mut n = Net::new(64, 3);
    let conns = |n: &Net| n.role.member_counters().connections()[0].clone();
    assert_eq!(conns(&n), vec![0, 0]);
    let (a0, syn) = connect(&mut n, CPORT, b"");
    let b = BACKENDS.iter().position(|&a| a == syn.dst.0).unwrap();
    let (_, other) = connect(&mut n, CPORT + 1, b"");
    let mut want = vec![0, 0];
    want[b] += 1;
    want[BACKENDS.iter().position(|&a| a == other.dst.0).unwrap()] += 1;
    assert_eq!(conns(&n), want);
    // The first client gives up while its backend leg is being set up.
    from_client(&mut n, CPORT, C0.wrapping_add(1), a0.wrapping_add(1), flags::RST, &[], b"");
    want[b] -= 1;
    assert_eq!(conns(&n), want);
}

#[test]
fn idle_connections_expire() {
    let mut n = Net::new(64, 3);
    let (_, syn) = connect(&mut n, CPORT, b"");
    let f = seg(BACKEND_MAC[0], PORT_MAC[1], syn.dst, syn.src, 9, C0.wrapping_add(1), flags::SYN | flags::ACK, 65_535, &[], b"");
    n.send(1, &f);
    n.now += 59_000;
    n.tick();
    assert_eq!(n.role.table().len(), 1);
    n.now += 2_000;
    n.tick();
    assert!(n.role.table().is_empty());
}

#[test]
fn arp_and_ping_for_the_vip_are_answered_on_client_ports_only() {
    let mut n = Net::new(64, 3);
    let mut req = vec![0u8; 42];
    crate::packet::build::arp_request(&mut req, CLIENT_MAC, CLIENT, VIP).unwrap();
    let (v, f, _) = n.send(0, &req);
    assert_eq!(v, Verdict::Reply);
    let a = Arp::parse(&f[14..]).unwrap();
    assert_eq!((a.operation(), a.sender_ip(), a.sender_mac()), (arp::OP_REPLY, VIP, PORT_MAC[0]));
    assert_eq!(n.send(1, &req).0, Verdict::Drop(DropReason::NotVip));
    // Another port of the VIP, or UDP to it: not ours to pass.
    let f = seg(CLIENT_MAC, PORT_MAC[0], (CLIENT, 1), (VIP, 81), 1, 0, flags::SYN, 1, &[], b"");
    assert_eq!(n.send(0, &f).0, Verdict::Drop(DropReason::NotVip));
    // The appliance's own address still answers.
    let mut req = vec![0u8; 42];
    crate::packet::build::arp_request(&mut req, CLIENT_MAC, CLIENT, OWN[0]).unwrap();
    assert_eq!(n.send(0, &req).0, Verdict::Reply);
}

proptest! {
    /// Arbitrary frames, and mutations of a live connection's segments, never panic and
    /// never leave the table inconsistent with its NAT ports.
    #[test]
    fn hostile_frames_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                   flip in 0usize..80, val: u8, fl: u8, from_backend: bool) {
        let mut n = Net::new(8, 3);
        let (a0, syn) = connect(&mut n, CPORT, b"");
        n.send(0, &bytes);
        n.send(1, &bytes);
        let mut f = if from_backend {
            seg(BACKEND_MAC[0], PORT_MAC[1], syn.dst, syn.src, 9, C0.wrapping_add(1), fl, 65_535, &[], b"xyz")
        } else {
            seg(CLIENT_MAC, PORT_MAC[0], (CLIENT, CPORT), (VIP, 80), C0.wrapping_add(1), a0.wrapping_add(1), fl, 9, &[], b"xyz")
        };
        if let Some(b) = f.get_mut(flip) {
            *b = val;
        }
        n.send(if from_backend { 1 } else { 0 }, &f);
        n.now += 100_000;
        for _ in 0..4 {
            n.tick();
        }
        prop_assert_eq!(n.role.nat.available() + n.role.table().len(), 100);
    }
}

#[test]
fn a_retransmitted_backend_syn_ack_is_acknowledged_again() {
    let mut n = Net::new(64, 3);
    let (_, syn) = connect(&mut n, CPORT, b"req");
    let b = BACKENDS.iter().position(|&a| a == syn.dst.0).unwrap();
    let f = seg(BACKEND_MAC[b], PORT_MAC[1], syn.dst, syn.src, 500, C0.wrapping_add(1), flags::SYN | flags::ACK, 65_535, &ts_opt(1, 5001), b"");
    assert_eq!(n.send(1, &f).0, Verdict::Consumed);
    // Our replay was lost: the backend sends its SYN-ACK again.
    let (v, _, out) = n.send(1, &f);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(out.len(), 1);
    let a = seen(&out[0].1);
    assert_eq!((a.src, a.dst, a.seq, a.ack, a.flags), (syn.src, syn.dst, C0.wrapping_add(1), 501, flags::ACK));
    assert_eq!((a.payload.len(), a.opts.ts), (0, None));
}

fn routing_net() -> Net {
    use crate::splice::request::{HostMatch, Rule};
    let rules = Rules { rules: vec![Rule { host: Some(HostMatch::parse("static.example.com")), pool: 1, ..Rule::default() }], default_pool: 0 };
    let tables = Arc::new(BalanceTables { vips: vec![pool_table(&[1, 1], &BACKEND_MAC), pool_table(&[1], &[STATIC_MAC])] });
    Net::routed(64, 3, tables, rules)
}

/// SYN and handshake ACK (no data) for a routed service: nothing goes to a backend yet.
fn handshake(n: &mut Net, cport: u16) -> u32 {
    let (_, _, out) = from_client(n, cport, C0, 0, flags::SYN, &LINUX_SYN_OPTS, b"");
    let a0 = seen(&out[0].1).seq;
    let (v, _, out) = from_client(n, cport, C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK, &[], b"");
    assert_eq!((v, out.len()), (Verdict::Consumed, 0), "no backend before the request");
    a0
}

#[test]
fn the_first_request_chooses_the_pool_and_is_replayed_whole() {
    let mut n = routing_net();
    let a0 = handshake(&mut n, CPORT);
    assert_eq!(n.role.table().iter().next().unwrap().0.state, State::Routing);
    // The request in two pieces: routed when the header block is complete.
    let req = b"GET /logo.png HTTP/1.1\r\nHost: static.example.com\r\nAccept: */*\r\n\r\n";
    let (v, _, out) = from_client(&mut n, CPORT, C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK, &[], &req[..20]);
    assert_eq!((v, out.len()), (Verdict::Consumed, 0));
    let (_, _, out) = from_client(&mut n, CPORT, C0.wrapping_add(21), a0.wrapping_add(1), flags::ACK | flags::PSH, &[], &req[20..]);
    assert_eq!(out.len(), 1);
    let syn = seen(&out[0].1);
    assert_eq!((syn.dst, syn.dst_mac, syn.seq), ((STATIC, 80), STATIC_MAC, C0));
    let f = seg(STATIC_MAC, PORT_MAC[1], syn.dst, syn.src, 7, C0.wrapping_add(1), flags::SYN | flags::ACK, 65_535, &[], b"");
    let (_, _, out) = n.send(1, &f);
    assert_eq!(seen(&out[0].1).payload, req);
    assert_eq!(n.stat(SpliceStat::Routed), 1);
    // Another host goes to the default pool.
    let a1 = handshake(&mut n, CPORT + 1);
    let (_, _, out) = from_client(&mut n, CPORT + 1, C0.wrapping_add(1), a1.wrapping_add(1), flags::ACK, &[], b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n");
    assert!(BACKENDS.contains(&seen(&out[0].1).dst.0));
}

#[test]
fn bad_oversized_and_missing_first_requests_are_reset() {
    let mut n = routing_net();
    // Not HTTP.
    let a0 = handshake(&mut n, CPORT);
    let (_, _, out) = from_client(&mut n, CPORT, C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK, &[], b"\x16\x03\x01\x00\x10hello");
    let r = seen(&out[0].1);
    assert_eq!((r.dst, r.flags, r.seq), ((CLIENT, CPORT), flags::RST | flags::ACK, a0.wrapping_add(1)));
    assert_eq!(n.stat(SpliceStat::BadRequests), 1);
    // A header block larger than the buffer (4096 here).
    let a1 = handshake(&mut n, CPORT + 1);
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat(b'a').take(1400));
    let mut seq = C0.wrapping_add(1);
    let mut last = Vec::new();
    for _ in 0..3 {
        let (_, _, out) = from_client(&mut n, CPORT + 1, seq, a1.wrapping_add(1), flags::ACK, &[], &big);
        seq = seq.wrapping_add(big.len() as u32);
        last = out;
    }
    assert_eq!(seen(&last[0].1).flags, flags::RST | flags::ACK);
    assert_eq!(n.stat(SpliceStat::HeadersTooLarge), 1);
    // Nothing at all within first_request_ms.
    handshake(&mut n, CPORT + 2);
    n.now += 2000;
    assert!(n.tick().is_empty());
    n.now += 1001;
    let out = n.tick();
    assert_eq!(seen(&out[0].1).dst, (CLIENT, CPORT + 2));
    assert_eq!(n.stat(SpliceStat::FirstRequestTimeouts), 1);
    assert!(n.role.table().is_empty());
    assert_eq!(n.role.nat.available(), 100);
}

#[test]
fn a_backend_that_failed_is_passed_over_for_a_while() {
    let mut n = Net::new(64, 1);
    let (_, syn) = connect(&mut n, CPORT, b"");
    let bad = syn.dst;
    let rst = seg(BACKEND_MAC[0], PORT_MAC[1], syn.dst, syn.src, 0, C0.wrapping_add(1), flags::RST | flags::ACK, 0, &[], b"");
    n.send(1, &rst);
    // New clients that hash to the refusing backend go to the other one now.
    let mut others = 0;
    for p in 1..40 {
        let (_, s) = connect(&mut n, CPORT + p, b"");
        assert_ne!(s.dst, bad, "client port {}", CPORT + p);
        others += 1;
    }
    assert_eq!(others, 39);
    // After SUSPECT_MS it takes connections again.
    n.now += SUSPECT_MS + 1;
    let back = (40..200).any(|p| connect(&mut n, CPORT + p, b"").1.dst == bad);
    assert!(back);
}

#[test]
fn the_operator_dump_lists_matching_connections_up_to_the_limit() {
    let mut n = Net::new(64, 3);
    for p in 0..5 {
        connect(&mut n, CPORT + p, b"");
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let filter = DumpFilter { client: Some(CLIENT), state: Some(State::Connecting), ..DumpFilter::default() };
    n.role.update(SpliceUpdate::Dump(DumpRequest { filter, limit: 3, reply: tx.clone() }));
    let d = rx.try_recv().unwrap();
    assert_eq!((d.rows.len(), d.matched, d.now_s), (3, 5, (T0_MS / 1000) as u32));
    assert!(d.rows.iter().all(|(e, _)| e.client.addr == CLIENT && e.vip.port == 80));
    let filter = DumpFilter { client_port: Some(CPORT + 2), ..DumpFilter::default() };
    n.role.update(SpliceUpdate::Dump(DumpRequest { filter, limit: 10, reply: tx.clone() }));
    let d = rx.try_recv().unwrap();
    assert_eq!((d.rows.len(), d.rows[0].0.client.port), (1, CPORT + 2));
    let filter = DumpFilter { state: Some(State::Established), ..DumpFilter::default() };
    n.role.update(SpliceUpdate::Dump(DumpRequest { filter, limit: 10, reply: tx }));
    assert_eq!(rx.try_recv().unwrap().matched, 0);
}

#[test]
fn least_connections_sends_new_clients_to_the_backend_with_fewer() {
    let mut n = Net::build(64, 3, tables(&[1, 1]), Rules::default(), true, false);
    // Alternate: every new connection goes where fewer are open.
    let mut per = [0u32; 2];
    for p in 0..10 {
        let (_, syn) = connect(&mut n, CPORT + p, b"");
        per[BACKENDS.iter().position(|&a| a == syn.dst.0).unwrap()] += 1;
        assert!(per[0].abs_diff(per[1]) <= 1, "{per:?}");
    }
    // Reset three of backend 0's connections: the next three go to backend 0.
    let mine: Vec<(u16, Endpoint, Endpoint)> = n.role.table().iter().filter(|(e, _)| e.backend.addr == BACKENDS[0]).map(|(e, _)| (e.client.port, e.backend, e.nat)).take(3).collect();
    for (_, backend, nat) in &mine {
        let rst = seg(BACKEND_MAC[0], PORT_MAC[1], (backend.addr, backend.port), (nat.addr, nat.port), 0, C0.wrapping_add(1), flags::RST | flags::ACK, 0, &[], b"");
        n.send(1, &rst);
    }
    // (Each refused connection moved to backend 1, and backend 0 is now suspect: wait it out.)
    n.now += SUSPECT_MS + 1;
    let before: Vec<u32> = (0..2).map(|b| n.role.table().iter().filter(|(e, _)| e.backend.addr == BACKENDS[b]).count() as u32).collect();
    assert_eq!(before, vec![2, 8], "{before:?}");
    for p in 20..26 {
        let (_, syn) = connect(&mut n, CPORT + p, b"");
        assert_eq!(syn.dst.0, BACKENDS[0], "client port {}", CPORT + p);
    }
}

#[test]
fn synthetic_connections_are_spliced_both_ways() {
    use crate::splice::synthetic::{frames, Layout};
    let mut n = Net::new(64, 3);
    let l = Layout {
        vip: Endpoint { addr: VIP, port: 80 },
        backend: Endpoint { addr: BACKENDS[0], port: 8080 },
        nat: OWN[1],
        nat_first: 20_000,
        client_if: 0,
        backend_if: 1,
        client_mac: CLIENT_MAC,
        backend_mac: BACKEND_MAC[0],
    };
    assert_eq!(n.role.preload_synthetic(&l, 10), 10);
    assert_eq!(n.role.table().len(), 10);
    for (k, f) in frames(&l, 10, (PORT_MAC[0], PORT_MAC[1])).iter().enumerate() {
        let (v, out, _) = n.send(if k % 2 == 0 { 0 } else { 1 }, f);
        let s = seen(&out);
        if k % 2 == 0 {
            assert_eq!((v, s.dst, s.dst_mac), (Verdict::Tx(1), (BACKENDS[0], 8080), BACKEND_MAC[0]), "frame {k}");
        } else {
            assert_eq!((v, s.src, s.dst_mac), (Verdict::Tx(0), (VIP, 80), CLIENT_MAC), "frame {k}");
        }
    }
    // The NAT range is the full 100 ports; the preload took the first ten.
    assert_eq!(n.role.nat.available(), 90);
}

#[test]
fn a_transparent_service_keeps_the_client_address_on_the_backend_leg() {
    let mut n = Net::build(64, 3, tables(&[1, 1]), Rules::default(), false, true);
    let free = n.role.nat.available();
    let (a0, syn) = connect(&mut n, CPORT, b"hi");
    // The backend sees the client itself; no NAT port is taken.
    assert_eq!(syn.src, (CLIENT, CPORT));
    assert_eq!(syn.src_mac, PORT_MAC[1]);
    assert_eq!(n.role.nat.available(), free);
    let b = BACKENDS.iter().position(|&a| a == syn.dst.0).unwrap();
    // Its SYN-ACK, routed back through the appliance to the client's address, is ours.
    let s0 = 77;
    let f = seg(BACKEND_MAC[b], PORT_MAC[1], syn.dst, syn.src, s0, C0.wrapping_add(1), flags::SYN | flags::ACK, 65_535, &[2, 4, 5, 0xb4], b"");
    let (v, _, out) = n.send(1, &f);
    assert_eq!(v, Verdict::Consumed);
    let replay = seen(&out[0].1);
    assert_eq!((replay.src, replay.dst, replay.payload.as_slice()), ((CLIENT, CPORT), syn.dst, &b"hi"[..]));
    // Both ways spliced: the client's segment keeps its source, the backend's reply goes
    // out from the VIP.
    let (v, f, _) = from_client(&mut n, CPORT, C0.wrapping_add(3), a0.wrapping_add(1), flags::ACK, &[], b"more");
    assert_eq!(v, Verdict::Tx(1));
    let up = seen(&f);
    assert_eq!((up.src, up.dst, up.ack), ((CLIENT, CPORT), syn.dst, s0 + 1));
    let f = seg(BACKEND_MAC[b], PORT_MAC[1], syn.dst, syn.src, s0 + 1, C0.wrapping_add(7), flags::ACK, 1000, &[], b"ok");
    let (v, f, _) = n.send(1, &f);
    assert_eq!(v, Verdict::Tx(0));
    let down = seen(&f);
    assert_eq!((down.src, down.dst, down.seq), ((VIP, 80), (CLIENT, CPORT), a0.wrapping_add(1)));
    // Closed by a RST: the entry goes, and still no NAT port was used or given back.
    let f = seg(BACKEND_MAC[b], PORT_MAC[1], syn.dst, syn.src, s0 + 3, 0, flags::RST, 0, &[], b"");
    assert_eq!(n.send(1, &f).0, Verdict::Tx(0));
    n.now += u64::from(crate::role::splice::CLOSED_LINGER_S) * 1000 + 2000;
    for _ in 0..200 {
        n.now += 10;
        n.tick();
    }
    assert!(n.role.table().is_empty());
    assert_eq!(n.role.nat.available(), free);
}

#[test]
fn the_syn_backoff_stops_doubling_at_its_cap() {
    let mut n = Net::new(64, 7);
    let (_, syn) = connect(&mut n, CPORT, b"x");
    // Waits 1, 2, 4, 8, 16 s, then 16 s again (not 32): SYN k + 1 goes out `wait` after SYN k.
    for wait in [1000u64, 2000, 4000, 8000, 16_000, 16_000] {
        n.now += wait - 1;
        assert!(n.tick().is_empty(), "nothing before {wait} ms");
        n.now += 1;
        let out = n.tick();
        assert_eq!(out.len(), 1, "a SYN after {wait} ms");
        assert_eq!(seen(&out[0].1).dst, syn.dst);
    }
    assert_eq!(n.stat(SpliceStat::BackendSyns), 7);
    assert_eq!(n.stat(SpliceStat::BackendTimeouts), 0);
}

#[test]
fn a_transparent_backend_tuple_already_in_use_is_refused_with_its_own_reason() {
    // One client port to two VIPs of the same pool: the backend is chosen by the client's
    // address and port, so both legs would be (client:port → backend:8080).
    let mut n = Net::build(64, 3, tables(&[1, 1]), Rules::default(), false, true);
    let (_, syn) = connect(&mut n, CPORT, b"a");
    assert_eq!(syn.src, (CLIENT, CPORT));
    let f = seg(CLIENT_MAC, PORT_MAC[0], (CLIENT, CPORT), (VIP2, 80), C0, 0, flags::SYN, 502, &LINUX_SYN_OPTS, b"");
    let (_, _, out) = n.send(0, &f);
    let a0 = seen(&out[0].1).seq;
    let f = seg(CLIENT_MAC, PORT_MAC[0], (CLIENT, CPORT), (VIP2, 80), C0.wrapping_add(1), a0.wrapping_add(1), flags::ACK, 502, &[], b"b");
    let (v, _, out) = n.send(0, &f);
    assert_eq!(v, Verdict::Consumed);
    let r = seen(&out[0].1);
    assert_eq!((r.src, r.dst, r.flags & flags::RST), ((VIP2, 80), (CLIENT, CPORT), flags::RST));
    assert_eq!((n.stat(SpliceStat::RefusedTupleTaken), n.stat(SpliceStat::RefusedNoBackend)), (1, 0));
    assert_eq!(n.role.table().len(), 1, "the first connection stays");
    // Each service counts its own: the refusal is VIP2's, the connection VIP's.
    let c = n.role.counters();
    let per = |s: SpliceStat| (c.get_service(0, s), c.get_service(1, s));
    assert_eq!(c.services(), 2);
    assert_eq!(per(SpliceStat::SynCookies), (1, 1));
    assert_eq!(per(SpliceStat::CookiesValid), (1, 1));
    assert_eq!(per(SpliceStat::RefusedTupleTaken), (0, 1));
    assert_eq!(per(SpliceStat::BackendSyns), (1, 0));
    n.tick();
    assert_eq!(per(SpliceStat::Active), (1, 0));
    assert_eq!(n.stat(SpliceStat::Active), 1, "the total is the services' sum");
}
