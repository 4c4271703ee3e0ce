//! What a role costs per frame, without DPDK: the balance role's VIP fast path against the
//! forward role (the baseline, measured in the same run), over the same 64-byte UDP
//! datagrams from 256 flows, in bursts of 32 as an lcore sees them.
//!
//! `cargo bench -p dataplane --no-default-features --bench role_cost`
//! prints ns per frame for each role, the balance/forward ratio, and the added cost of the
//! balance role in ns; then the splice rewrite, the splice role at 1024 and 32 768
//! connections against forward, and the splice table's lookups at 2^20 connections on
//! huge against small pages (about 400 MiB for the two tables). The lcore loop and the PMD
//! are not included: see `testbed bench balance` for the whole appliance against
//! dpdk-testpmd.

use dataplane::balance::{member_key, FlowHasher, HashPolicy, MemberEntry, MemberSpec, SelectionTable};
use dataplane::packet::build::{udp4, Udp4Addrs, UDP4_HEADERS};
use dataplane::packet::ip_proto;
use dataplane::role::balance::{Balance, BalanceTables, VipSpec};
use dataplane::role::forward::Forward;
use dataplane::role::local::LocalAddrs;
use dataplane::role::{Ctx, Role, Verdict};
use dataplane::stats::LcoreCounters;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

const FLOWS: usize = 256;
const BURST: usize = 32;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
const PORT_MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];

fn frames() -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|i| {
            let a = Udp4Addrs {
                src_mac: [2, 0, 0, 0, 1, 1],
                dst_mac: PORT_MAC[0],
                src: Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8),
                dst: VIP,
                sport: 1024 + i as u16,
                dport: 9,
            };
            let mut f = vec![0u8; UDP4_HEADERS + 18];
            let n = udp4(&mut f, &a, i as u16, &[0u8; 18]).expect("frame fits");
            f.truncate(n);
            f
        })
        .collect()
}

fn local() -> Vec<LocalAddrs> {
    (0..2)
        .map(|i| LocalAddrs { mac: PORT_MAC[i], ipv4: vec![Ipv4Addr::new(10, i as u8, 0, 1)], punt_udp: None, punt_arp: false })
        .collect()
}

/// The balance role of `testbed bench balance`: one UDP VIP over four members, two per port.
fn balance() -> Balance {
    let members: Vec<MemberSpec> = (0..4u8)
        .map(|i| MemberSpec {
            key: member_key(&[i]),
            weight: 1,
            entry: MemberEntry { mac: [2, 0xee, 0, 0, 0, i], port: u16::from(i % 2) },
        })
        .collect();
    let table = SelectionTable::build(FlowHasher::new(HashPolicy::L34, 0x5eed), &members, None).expect("table");
    let vips = vec![VipSpec { addr: VIP, protocol: Some(ip_proto::UDP), ports: vec![(9, 9)], members: 4 }];
    Balance::new(vips, Arc::new(BalanceTables { vips: vec![Some(table)] }), local(), &[0], None).expect("role")
}

/// ns per frame over `rounds` passes of every frame, in bursts; checks every verdict is a
/// transmission (a role that dropped would look fast).
fn run<R: Role>(role: &mut R, frames: &mut [Vec<u8>], rounds: usize) -> f64 {
    let mut counters = LcoreCounters::default();
    let start = Instant::now();
    for _ in 0..rounds {
        for burst in frames.chunks_mut(BURST) {
            let mut ctx = Ctx { now_tsc: 0, counters: &mut counters, emit: &mut dataplane::role::NoEmit, clock: None };
            for f in burst.iter_mut() {
                match black_box(role.handle(0, f.as_mut_slice(), &mut ctx)) {
                    Verdict::Tx(_) => {}
                    v => panic!("{} role did not transmit: {v:?}", role.name()),
                }
            }
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * frames.len()) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut frames = frames();
    let mut forward = Forward::new(&[(0, 1)], local());
    let mut balance = balance();
    let rounds = 20_000;
    let (mut fw, mut bal) = (Vec::new(), Vec::new());
    // Alternate the roles so a noisy neighbour hits both alike; medians of 7.
    run(&mut forward, &mut frames, rounds / 10);
    run(&mut balance, &mut frames, rounds / 10);
    for _ in 0..7 {
        fw.push(run(&mut forward, &mut frames, rounds));
        bal.push(run(&mut balance, &mut frames, rounds));
    }
    let (fw, bal) = (median(fw), median(bal));
    println!("role_cost: forward {fw:.2} ns/frame, balance {bal:.2} ns/frame");
    println!("role_cost: balance/forward {:.2}, balance adds {:.2} ns/frame", bal / fw, bal - fw);

    // The splice rewrite alone (issue 5, no table lookup yet): both directions alternately.
    let mut sp = Vec::new();
    for _ in 0..7 {
        sp.push(splice_rewrite(&mut frames, rounds / 4));
    }
    let sp = median(sp);
    println!("role_cost: splice rewrite {sp:.2} ns/frame ({:.2} x forward)", sp / fw);

    // The whole splice role on established connections (lookup, rewrite, counters), both
    // directions, against the forward role over the same frames; each frame is copied in
    // fresh first (as net_pcap's infinite_rx does), for both roles alike.
    for conns in [1024, 32_768] {
        let (fw, sp) = splice_role(conns, rounds / 20);
        println!("role_cost: splice role, {conns} connections: forward {fw:.2} ns/frame, splice {sp:.2} ns/frame ({:.2} x forward)", sp / fw);
    }

    // The splice table alone at a production size, its slots and index on transparent
    // huge pages against the same table on small pages (the baseline, same run).
    table_lookups(1 << 20, 1 << 21);
}

/// Lookups (find, then the entry read) of `conns` connections' keys in random order, in a
/// table on huge pages and in one on small pages, alternately; medians of 5. The tables
/// (128 MiB of slots, 64 MiB of index each) are far past the TLB's reach on 4 KiB pages.
fn table_lookups(conns: usize, lookups: usize) {
    use dataplane::hugemem::Pages;
    use dataplane::splice::synthetic::{entry, Layout};
    use dataplane::splice::table::{LegKey, SpliceTable};
    use dataplane::splice::translate::Endpoint;
    let layout = Layout::example(Ipv4Addr::new(10, 1, 0, 1));
    let build = |pages| {
        let mut t = SpliceTable::with_seed_on(conns, 0x7ab1e, pages);
        for i in 0..conns {
            let mut e = entry(&layout, 0, 0);
            // Distinct keys for both legs at any size (the synthetic clients repeat
            // beyond 65 536).
            e.client = Endpoint { addr: Ipv4Addr::from(0x0a00_0000 + i as u32), port: 1024 + (i % 50_000) as u16 };
            e.nat = Endpoint { addr: Ipv4Addr::from(0x0c00_0000 + i as u32), port: 20_000 + (i % 40_000) as u16 };
            e.delta = i as u32;
            t.insert(e).expect("room for every connection");
        }
        t
    };
    let huge = build(Pages::Huge);
    let small = build(Pages::Small);
    let anon_huge_mib = std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("AnonHugePages:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())))
        .map_or(0, |kb| kb / 1024);
    // Random order (xorshift), client and backend legs mixed.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let keys: Vec<LegKey> = (0..lookups)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x >> 1) as usize % conns;
            let e = huge.get(i as u32).expect("slot i holds connection i");
            if x & 1 == 0 { e.client_key() } else { e.backend_key() }
        })
        .collect();
    let pass = |t: &SpliceTable| {
        let start = Instant::now();
        let mut sum = 0u64;
        for k in &keys {
            let (slot, _) = t.find(black_box(k)).expect("every key is in the table");
            sum = sum.wrapping_add(u64::from(t.get(slot).expect("entry").delta));
        }
        black_box(sum);
        start.elapsed().as_nanos() as f64 / keys.len() as f64
    };
    let (mut h, mut s) = (Vec::new(), Vec::new());
    pass(&huge);
    pass(&small);
    for _ in 0..5 {
        h.push(pass(&huge));
        s.push(pass(&small));
    }
    let (h, s) = (median(h), median(s));
    println!(
        "role_cost: splice table lookup, {conns} connections, random order: huge pages {h:.2} ns, small pages {s:.2} ns (small/huge {:.3}; AnonHugePages {anon_huge_mib} MiB)",
        s / h
    );
}

/// Medians of 7 (forward, splice) ns per frame over the synthetic traffic of `conns`
/// established splices in a table of the appliance's default capacity.
fn splice_role(conns: usize, rounds: usize) -> (f64, f64) {
    use dataplane::balance::SelectionTable;
    use dataplane::role::splice::{Clock, Splice, SplicePool, SpliceService, SpliceSettings};
    use dataplane::splice::cookie::{CookieKeys, Key};
    use dataplane::splice::request::Rules;
    use dataplane::splice::table::NatSlices;
    use dataplane::splice::synthetic::{self, Layout, BACKEND_MAC};
    // NAT from the role's own address on port 1 (`local()`).
    let layout = Layout::example(Ipv4Addr::new(10, 1, 0, 1));
    let service = SpliceService {
        vip: layout.vip.addr,
        ports: vec![(80, 80)],
        rules: Rules::default(),
        max_connections: 65_536,
        transparent: false,
        first_request_ms: 5000,
        connect_ms: 1000,
        connect_attempts: 3,
        idle_ms: 600_000,
        half_closed_ms: 10_000,
        reset_without_backend: false,
    };
    let settings = SpliceSettings {
        mss: 1460,
        wscale: 7,
        capacity: 65_536,
        handshakes: 1024,
        request_buffer_bytes: 16_384,
        nat: NatSlices::new(20_000, 59_999, 1).unwrap(),
        worker: 0,
        rss: Vec::new(),
        seed: 1,
        clock: Clock { tsc_hz: 1_000_000_000, tsc0: 0, unix_ms0: 1_700_000_000_000 },
    };
    let members = [MemberSpec { key: member_key(b"b1"), weight: 1, entry: MemberEntry { mac: BACKEND_MAC, port: 1 } }];
    let table: Option<SelectionTable> = SelectionTable::build(FlowHasher::new(HashPolicy::L34, 1), &members, None).ok();
    let pools = vec![SplicePool { backends: vec![(layout.backend.addr, None)], least_connections: false }];
    let keys = CookieKeys { current: Key([7; 16]), previous: None };
    let mut splice = Splice::new(vec![service], pools, settings, keys, Arc::new(BalanceTables { vips: vec![table] }), local(), &[0], None).expect("role");
    assert_eq!(splice.preload_synthetic(&layout, conns), conns);
    let pristine = synthetic::frames(&layout, conns, (PORT_MAC[0], PORT_MAC[1]));
    let mut work = pristine.clone();
    // The forward role owns no address the frames are for (the NAT address is the
    // splice's own), so it forwards both directions.
    let mut forward = Forward::new(&[(0, 1), (1, 0)], local().into_iter().map(|l| LocalAddrs { ipv4: vec![], ..l }).collect());
    // One pass: every frame copied in fresh, then handed to `burst` a burst at a time.
    let mut pass = |burst: &mut dyn FnMut(&mut [Vec<u8>])| -> f64 {
        let start = Instant::now();
        for _ in 0..rounds {
            for (frames, fresh) in work.chunks_mut(BURST).zip(pristine.chunks(BURST)) {
                for (f, p) in frames.iter_mut().zip(fresh) {
                    f.copy_from_slice(p);
                }
                burst(frames);
            }
        }
        start.elapsed().as_nanos() as f64 / (rounds * pristine.len()) as f64
    };
    // Even frames come from the clients (port 0), odd ones from the backend (port 1).
    fn lcore<R: Role>(role: &mut R, frames: &mut [Vec<u8>], counters: &mut LcoreCounters) {
        for f in frames.iter().filter(|_| R::PREFETCH) {
            role.prefetch(f);
        }
        let mut ctx = Ctx { now_tsc: 0, counters, emit: &mut dataplane::role::NoEmit, clock: None };
        for (i, f) in frames.iter_mut().enumerate() {
            match black_box(role.handle((i % 2) as u16, f.as_mut_slice(), &mut ctx)) {
                Verdict::Tx(_) => {}
                v => panic!("{} role did not send a frame on: {v:?}", role.name()),
            }
        }
    }
    let mut counters = LcoreCounters::default();
    let (mut fw, mut sp) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        fw.push(pass(&mut |frames| lcore(&mut forward, frames, &mut counters)));
        sp.push(pass(&mut |frames| lcore(&mut splice, frames, &mut counters)));
    }
    (median(fw), median(sp))
}

/// ns per frame of `splice::translate::rewrite` on the IPv4 packets of `frames` (UDP
/// datagrams relabelled TCP are fine: only the TCP header bytes are touched and the
/// lengths hold).
fn splice_rewrite(frames: &mut [Vec<u8>], rounds: usize) -> f64 {
    use dataplane::splice::translate::{rewrite, Direction, Endpoint, Offsets};
    let o = Offsets { delta: 0x1234_5678, ts_delta: Some(99), ws_server: 7, ws_promised: 9 };
    let a = Endpoint { addr: Ipv4Addr::new(10, 2, 0, 1), port: 61000 };
    let b = Endpoint { addr: Ipv4Addr::new(10, 2, 0, 21), port: 8080 };
    let mut tcp: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            // Ethernet off; a 20-byte TCP header (no options) after the IPv4 header.
            let mut p = f[14..].to_vec();
            p.resize(40, 0);
            p[2..4].copy_from_slice(&40u16.to_be_bytes());
            p[9] = 6;
            p[32] = 5 << 4;
            p
        })
        .collect();
    let start = Instant::now();
    for r in 0..rounds {
        let dir = if r % 2 == 0 { Direction::ToClient } else { Direction::ToServer };
        for p in tcp.iter_mut() {
            black_box(rewrite(p, dir, a, b, &o)).expect("well-formed");
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * tcp.len()) as f64
}
