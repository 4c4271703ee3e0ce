//! `testbed bench splice`: TCP goodput and connections per second through the splice role
//! versus HAProxy (tcp mode with kernel splicing) and versus dpdk-testpmd io-forward, on
//! one network (`topologies/splice-bench.toml`), in one run, rounds alternating the order;
//! medians and ratios reported.
//!
//! Per mode and round two workloads run one after the other, each for `--seconds`:
//! - `goodput`: 8 connections from two client namespaces, each requesting 4 MB replies
//!   back to back (every byte verified); Mbit/s of verified bytes.
//! - `connrate`: 32 client threads, each opening a connection, sending one 150-byte request,
//!   reading a 1 KiB reply and closing, over and over; connections per second.
//!
//! Modes (see the topology for the addresses):
//! - `tapsplice`: the appliance's splice role (one busy-polling worker lcore) between the
//!   clients and two backends, clients connecting to the VIP.
//! - `haproxy`: HAProxy 2.6 from Debian in its own namespace, `mode tcp`, `option
//!   splice-auto`, `nbthread 1` (one core, as the appliance's one worker), two backends.
//! - `io`: dpdk-testpmd io-forward on the appliance's TAP ports (no proxy at all: the
//!   clients talk to one backend directly through the bump in the wire) — the ceiling of
//!   these ports.
//!
//! `--wire mtu` runs these three on the same network made a wire of MTU-sized frames
//! ([`mtu_sized_wire`]), so that no proxy gets the veths' 64 KB super-segments; the
//! appliance and testpmd read it through AF_XDP sockets (`--wire mtu-af-packet`: AF_PACKET).
//!
//! - `fastpath`: the splice fast path alone against io-forward on the same (nearly free)
//!   ports, with synthetic spliced traffic both ways (`crate::bench_fastpath`).
//! - `fastpath-vhost`: the same on vhost-user ports fed by a generator, whose per-frame
//!   cost (the vhost copies) is closer to a NIC's than the pcap/null ports'. Reported
//!   beside the issue's `fastpath_vs_ioforward` (which stays the pcap/null figure) as
//!   `fastpath_vhost_vs_ioforward`: best trial against best trial, each trial its best
//!   second at the generator (`fastpath_vhost_vs_ioforward_of_medians` beside it).

use crate::bench::{ratio, round3};
use crate::run::{Options as RunOptions, Testbed};
use crate::topology::{ApplianceKind, Topology, WorkloadKind};
use crate::workload::{Spec, WorkloadResult};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SMode {
    Tapsplice,
    Haproxy,
    Io,
    /// The splice fast path alone against io-forward (`crate::bench_fastpath`).
    Fastpath,
    /// The same on vhost-user ports.
    #[serde(rename = "fastpath-vhost")]
    FastpathVhost,
}

impl SMode {
    pub fn parse(s: &str) -> Result<SMode> {
        match s.trim() {
            "tapsplice" => Ok(SMode::Tapsplice),
            "haproxy" => Ok(SMode::Haproxy),
            "io" => Ok(SMode::Io),
            "fastpath" => Ok(SMode::Fastpath),
            "fastpath-vhost" => Ok(SMode::FastpathVhost),
            o => bail!("unknown bench splice mode `{}` (tapsplice, haproxy, io, fastpath, fastpath-vhost)", o),
        }
    }

    /// Where the clients connect in this mode.
    fn connect(self) -> SocketAddr {
        match self {
            SMode::Tapsplice => "10.0.0.100:80",
            SMode::Haproxy => "10.0.0.3:80",
            SMode::Io | SMode::Fastpath | SMode::FastpathVhost => "10.0.0.21:80",
        }
        .parse()
        .expect("a socket address")
    }
}

/// The wire between the namespaces of `bench splice` (`--wire`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Wire {
    /// The appliance and testpmd on TAP ports; veths with the kernel's offloads.
    Tap,
    /// MTU-sized frames for all three modes, the appliance and testpmd on `net_af_xdp`
    /// ports ([`mtu_sized_wire`]).
    Mtu,
    /// The same wire with `net_af_packet` ports (the slower socket: kept to compare).
    MtuAfPacket,
}

/// Descriptors per ring of an AF_XDP port on the MTU-sized wire (the appliance's and
/// testpmd's alike). A veth hands the XDP socket a sender's whole window at once, where a
/// cable would pace it: with the appliance's default 1024 its socket's ring overflowed for
/// 14 % of the backends' frames, with 2048 for about 4 % (more did not help: the PMD
/// fills its fill ring with 2048 buffers whatever the ring size; docs/testbed.md).
pub const AF_XDP_RING: i64 = 2048;

/// `--wire mtu` and `--wire mtu-af-packet`: the network of `splice-bench.toml` as a wire
/// that carries MTU-sized frames, as a cable does: every link's offloads off (the
/// clients', backends' and HAProxy's kernels send 1500-byte frames instead of 64 KB
/// super-segments), and the appliance's two ports (testpmd's too, in io mode) AF_XDP (or
/// AF_PACKET) devices on veths the testbed makes, instead of TAPs. Why: docs/testbed.md,
/// "The wire experiment".
pub fn mtu_sized_wire(topo: &mut Topology, wire: Wire) {
    let (device, args, ring) = match wire {
        Wire::Mtu => ("net_af_xdp", "queue_count=1", Some(AF_XDP_RING)),
        Wire::MtuAfPacket => ("net_af_packet", "qpairs=1,qdisc_bypass=1", None),
        // The topology as it is.
        Wire::Tap => return,
    };
    for l in &mut topo.links {
        l.offloads = false;
    }
    // The appliance's rack (configs/splice-taps.toml) has exactly its placed ports, both
    // TAPs: each becomes a socket port on a veth (the testbed adds its `iface=`).
    for a in &mut topo.appliances {
        for i in 0..a.ports.len() {
            a.set.insert(format!("port.{i}.device"), toml::Value::String(format!("{device}{i}")));
            a.set.insert(format!("port.{i}.args"), toml::Value::String(args.into()));
            if let Some(ring) = ring {
                for key in ["rx_desc", "tx_desc"] {
                    a.set.insert(format!("port.{i}.{key}"), toml::Value::Integer(ring));
                }
            }
        }
    }
    topo.name = topo.name.take().map(|n| format!("{n}-mtu-wire"));
}

pub struct Options {
    pub modes: Vec<SMode>,
    pub repeat: u32,
    pub seconds: f64,
    /// Reported as `wire`.
    pub wire: Wire,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub mode: SMode,
    pub round: u32,
    pub goodput_mbps: f64,
    pub conn_per_s: f64,
    pub connections: u64,
    pub errors: u64,
    pub passed: bool,
    /// Fast path mode: millions of packets per second through the splice, and through
    /// io-forward on the same ports.
    pub fastpath_mpps: Option<f64>,
    /// The forward role on the fast-path ports: the appliance's loop without the splice.
    pub fastpath_forward_mpps: Option<f64>,
    pub fastpath_io_mpps: Option<f64>,
    /// Fast path on vhost ports: every DUT's one-second rates at the generator, Mpps (the
    /// three figures above are their best).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fastpath_samples_mpps: Option<crate::bench_fastpath::Samples>,
    #[serde(skip)]
    pub report: Option<Value>,
}

const HAPROXY_CFG: &str = "global
    maxconn 4000
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option splice-auto
frontend bench
    bind 10.0.0.3:80
    default_backend backends
backend backends
    balance source
    server b1 10.1.0.21:80
    server b2 10.1.0.22:80
";

/// HAProxy running in the proxy namespace; killed on drop.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_haproxy(tb: &Testbed, cfg: &PathBuf) -> Result<Haproxy> {
    let ns = tb.run.netns("px");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, "haproxy", "-db", "-f"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting haproxy (apt-get install haproxy)")?;
    let mut h = Haproxy(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = h.0.try_wait() {
            bail!("haproxy exited at start ({st}); check {}", cfg.display());
        }
        let out = Command::new("ip").args(["netns", "exec", &ns, "ss", "-Hltn", "sport = :80"]).output()?;
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return Ok(h);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("haproxy did not listen on 10.0.0.3:80 within 10 s")
}

fn specs(tb: &Testbed, mode: SMode, seconds: f64, round: u32) -> Vec<Spec> {
    let ns = |n: &str| tb.run.netns(n);
    let clients = vec![ns("c1"), ns("c2")];
    let listen: SocketAddr = "0.0.0.0:80".parse().expect("an address");
    let d = Some(Duration::from_secs_f64(seconds));
    let timeout = Duration::from_secs_f64(seconds + 60.0);
    let servers = if mode == SMode::Io { vec!["b1"] } else { vec!["b1", "b2"] };
    let with_servers = |mut s: Spec| {
        s.server_ns = servers.iter().map(|n| ns(n)).collect();
        s.server_names = servers.iter().map(|n| n.to_string()).collect();
        s
    };
    let goodput = with_servers(Spec::simple("goodput".into(), WorkloadKind::Bulk, clients.clone(), ns("b1"), mode.connect(), listen, 8, 0, 4_000_000, d, timeout, 11 + u64::from(round)));
    let mut connrate = with_servers(Spec::simple("connrate".into(), WorkloadKind::Interactive, clients, ns("b1"), mode.connect(), listen, 32, 0, 1024, d, timeout, 17 + u64::from(round)));
    connrate.requests_per_connection = 1;
    vec![goodput, connrate]
}

/// Waits until the splice appliance has resolved both backends (`ctl members`).
fn backends_up(tb: &Testbed, sock: &std::path::Path) -> Result<()> {
    let bin = crate::appliance::locate_tapsplice(tb.opts.bins.tapsplice.as_deref())?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(v) = crate::ctl::json(&bin, sock, "members") {
            if v["members"].as_array().is_some_and(|m| !m.is_empty() && m.iter().all(|m| m["state"] == "up")) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the splice appliance did not resolve its backends within 15 s")
}

fn trial(tb: &Testbed, mode: SMode, seconds: f64, round: u32, haproxy_cfg: &PathBuf) -> Result<Trial> {
    if matches!(mode, SMode::Fastpath | SMode::FastpathVhost) {
        let bin = crate::appliance::locate_tapsplice(tb.opts.bins.tapsplice.as_deref())?;
        let ports = if mode == SMode::Fastpath { crate::bench_fastpath::Ports::PcapNull } else { crate::bench_fastpath::Ports::Vhost };
        let r = crate::bench_fastpath::trial(&tb.run, &bin, std::path::Path::new(&tb.opts.bins.testpmd), ports, seconds, round)?;
        let mpps = |pps: f64| Some((pps / 1e4).round() / 100.0);
        return Ok(Trial {
            mode,
            round,
            goodput_mbps: 0.0,
            conn_per_s: 0.0,
            connections: 0,
            errors: 0,
            passed: true,
            fastpath_mpps: mpps(r.splice),
            fastpath_forward_mpps: mpps(r.forward),
            fastpath_io_mpps: mpps(r.io),
            fastpath_samples_mpps: (ports == crate::bench_fastpath::Ports::Vhost).then_some(r.samples),
            report: None,
        });
    }
    let specs: Vec<(Spec, bool)> = specs(tb, mode, seconds, round).into_iter().map(|s| (s, false)).collect();
    let (results, report): (Vec<WorkloadResult>, Option<Value>) = match mode {
        SMode::Haproxy => {
            let _h = start_haproxy(tb, haproxy_cfg)?;
            let (w, _, e) = tb.run_workloads(&specs, &mut [], false, None);
            if let Some(e) = e.first() {
                bail!("haproxy: {}", e);
            }
            (w, None)
        }
        SMode::Fastpath | SMode::FastpathVhost => unreachable!("handled above"),
        SMode::Tapsplice | SMode::Io => {
            let kind = if mode == SMode::Tapsplice { ApplianceKind::Tapsplice } else { ApplianceKind::Testpmd };
            let mut apps = tb.start_appliances_as(Some(kind))?;
            if mode == SMode::Tapsplice {
                if let Err(e) = backends_up(tb, &apps[0].ctl_socket) {
                    let _ = tb.stop_appliances(apps);
                    return Err(e);
                }
            }
            let (w, _, e) = tb.run_workloads(&specs, &mut apps, false, None);
            let stopped = tb.stop_appliances(apps);
            if let Some(e) = e.first() {
                bail!("{:?}: {}", mode, e);
            }
            if let Some(err) = stopped.iter().find_map(|a| a.error.clone()) {
                bail!("{:?}: appliance: {}", mode, err);
            }
            (w, stopped.into_iter().next().and_then(|a| a.report))
        }
    };
    let by = |name: &str| results.iter().find(|r| r.name == name).ok_or_else(|| anyhow!("no {name} result"));
    let (g, c) = (by("goodput")?, by("connrate")?);
    let t = Trial {
        mode,
        round,
        goodput_mbps: g.goodput_mbps,
        conn_per_s: if c.elapsed_s > 0.0 { c.tcp_connections as f64 / c.elapsed_s } else { 0.0 },
        connections: c.tcp_connections,
        errors: g.errors + c.errors,
        passed: g.passed && c.passed,
        fastpath_mpps: None,
        fastpath_forward_mpps: None,
        fastpath_io_mpps: None,
        fastpath_samples_mpps: None,
        report,
    };
    eprintln!(
        "testbed: bench splice {:?}: goodput {:.1} Mbit/s, {:.0} connections/s ({} connections){}",
        mode,
        t.goodput_mbps,
        t.conn_per_s,
        t.connections,
        if t.passed { "" } else { " FAILED" }
    );
    Ok(t)
}

pub fn run(topo: Topology, opts: RunOptions, o: &Options) -> Result<Value> {
    if o.modes.contains(&SMode::Haproxy) && Command::new("haproxy").arg("-v").output().is_err() {
        bail!("haproxy is not installed (apt-get install haproxy; scripts/setup.sh installs it)");
    }
    let tb = Testbed::setup(topo, opts)?;
    let per_trial = 2.0 * o.seconds + 90.0;
    tb.watchdog(Duration::from_secs_f64(per_trial * o.modes.len() as f64 * f64::from(o.repeat) + 60.0));
    let cfg = tb.run.run_dir().join("haproxy.cfg");
    std::fs::write(&cfg, HAPROXY_CFG).with_context(|| format!("writing {}", cfg.display()))?;
    let mut trials = Vec::new();
    for r in 0..o.repeat {
        let mut order = o.modes.clone();
        if r % 2 == 1 {
            order.reverse();
        }
        for mode in order {
            if crate::guard::interrupted() {
                bail!("interrupted");
            }
            eprintln!("testbed: bench splice round {}/{}: {:?}", r + 1, o.repeat, mode);
            trials.push(trial(&tb, mode, o.seconds, r, &cfg)?);
        }
    }
    Ok(summary(o, &trials))
}

fn summary(o: &Options, trials: &[Trial]) -> Value {
    // Medians to a thousandth (the mean of two middle values would print float noise).
    let med = |mode: SMode, f: fn(&Trial) -> f64| crate::bench::median(trials.iter().filter(|t| t.mode == mode).map(f).collect()).map(round3);
    let g = |m| med(m, |t| t.goodput_mbps);
    let c = |m| med(m, |t| t.conn_per_s);
    // The appliance's histograms from the tapsplice trial whose goodput is closest to the
    // median.
    let tg = g(SMode::Tapsplice);
    let rep = tg.and_then(|m| {
        trials
            .iter()
            .filter(|t| t.mode == SMode::Tapsplice && t.report.is_some())
            .min_by(|a, b| (a.goodput_mbps - m).abs().partial_cmp(&(b.goodput_mbps - m).abs()).unwrap_or(std::cmp::Ordering::Equal))
            .and_then(|t| t.report.clone())
    });
    let gh = ratio(tg, g(SMode::Haproxy));
    let gi = ratio(tg, g(SMode::Io));
    let ch = ratio(c(SMode::Tapsplice), c(SMode::Haproxy));
    let fp = med(SMode::Fastpath, |t| t.fastpath_mpps.unwrap_or(0.0));
    let fio = med(SMode::Fastpath, |t| t.fastpath_io_mpps.unwrap_or(0.0));
    let ffw = med(SMode::Fastpath, |t| t.fastpath_forward_mpps.unwrap_or(0.0));
    // vhost: each trial's figure is its best second at the generator and each DUT's figure
    // its best trial (bench_fastpath's header says why); the medians of the trials beside.
    let best = |f: fn(&Trial) -> Option<f64>| trials.iter().filter(|t| t.mode == SMode::FastpathVhost).filter_map(f).reduce(f64::max);
    let vp = best(|t| t.fastpath_mpps);
    let vio = best(|t| t.fastpath_io_mpps);
    let vfw = best(|t| t.fastpath_forward_mpps);
    let vp_med = med(SMode::FastpathVhost, |t| t.fastpath_mpps.unwrap_or(0.0));
    let vio_med = med(SMode::FastpathVhost, |t| t.fastpath_io_mpps.unwrap_or(0.0));
    json!({
        "bench": "splice",
        "wire": o.wire,
        "seconds": o.seconds,
        "repeat": o.repeat,
        "tapsplice_goodput_mbps": tg,
        "haproxy_goodput_mbps": g(SMode::Haproxy),
        "ioforward_goodput_mbps": g(SMode::Io),
        "tapsplice_conn_per_s": c(SMode::Tapsplice),
        "haproxy_conn_per_s": c(SMode::Haproxy),
        "ioforward_conn_per_s": c(SMode::Io),
        "targets": { "goodput_vs_haproxy": 1.0, "goodput_vs_ioforward": 0.9, "conn_rate_vs_haproxy": 1.0, "fastpath_vs_ioforward": 0.7 },
        "burst_ns": rep.as_ref().and_then(|r| r.get("burst_ns")).cloned(),
        "splice_setup_us": rep.as_ref().and_then(|r| r.get("splice_setup_us")).cloned(),
        "splice": rep.as_ref().and_then(|r| r.get("splice")).cloned(),
        // The appliance's port drivers in that trial (which wire it really ran on).
        "tapsplice_ports": rep.as_ref().and_then(|r| r["ports"].as_array()).map(|ps| ps.iter().map(|p| p["device"].clone()).collect::<Vec<_>>()),
        "trials": trials,
        "passed": !trials.is_empty() && trials.iter().all(|t| t.passed),
        "fastpath_mpps": fp,
        "fastpath_io_mpps": fio,
        "fastpath_forward_mpps": ffw,
        "fastpath_forward_vs_ioforward": ratio(ffw, fio),
        "fastpath_vs_forward": ratio(fp, ffw),
        "fastpath_connections": crate::bench_fastpath::CONNECTIONS,
        "fastpath_vs_ioforward": ratio(fp, fio),
        "fastpath_vhost_mpps": vp,
        "fastpath_vhost_io_mpps": vio,
        "fastpath_vhost_forward_mpps": vfw,
        "fastpath_vhost_vs_ioforward": ratio(vp, vio),
        "fastpath_vhost_median_mpps": vp_med,
        "fastpath_vhost_io_median_mpps": vio_med,
        "fastpath_vhost_vs_ioforward_of_medians": ratio(vp_med, vio_med),
        "fastpath_vhost_forward_vs_ioforward": ratio(vfw, vio),
        "goodput_vs_haproxy": gh,
        "goodput_vs_ioforward": gi,
        "conn_rate_vs_haproxy": ch,
    })
}

pub fn print_human(v: &Value) {
    println!("bench splice: {} s per workload, {} round(s), medians, wire {}", v["seconds"], v["repeat"], v["wire"].as_str().unwrap_or("tap"));
    println!("  {:<10} {:>14} {:>16}", "mode", "goodput Mbit/s", "connections/s");
    for (m, g, c) in [("tapsplice", "tapsplice_goodput_mbps", "tapsplice_conn_per_s"), ("haproxy", "haproxy_goodput_mbps", "haproxy_conn_per_s"), ("io-forward", "ioforward_goodput_mbps", "ioforward_conn_per_s")] {
        let f = |k: &str| v[k].as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
        println!("  {:<10} {:>14} {:>16}", m, f(g), f(c));
    }
    println!(
        "  goodput vs HAProxy {} (target 1.0), vs io-forward {} (target 0.9); connections/s vs HAProxy {} (target 1.0); fast path {} Mpps vs io-forward {} Mpps: {} (target 0.7)",
        v["goodput_vs_haproxy"], v["goodput_vs_ioforward"], v["conn_rate_vs_haproxy"], v["fastpath_mpps"], v["fastpath_io_mpps"], v["fastpath_vs_ioforward"]
    );
    if v["fastpath_forward_mpps"].is_number() {
        println!(
            "  fast path, the appliance's forward role on the same ports: {} Mpps ({} x io-forward; the splice is {} x it)",
            v["fastpath_forward_mpps"], v["fastpath_forward_vs_ioforward"], v["fastpath_vs_forward"]
        );
    }
    if v["fastpath_vhost_mpps"].is_number() {
        println!(
            "  fast path on vhost-user ports (best trials, each its best second at the generator): splice {} Mpps, forward role {} Mpps, io-forward {} Mpps: {} (forward role {}); medians: splice {}, io-forward {}: {}",
            v["fastpath_vhost_mpps"],
            v["fastpath_vhost_forward_mpps"],
            v["fastpath_vhost_io_mpps"],
            v["fastpath_vhost_vs_ioforward"],
            v["fastpath_vhost_forward_vs_ioforward"],
            v["fastpath_vhost_median_mpps"],
            v["fastpath_vhost_io_median_mpps"],
            v["fastpath_vhost_vs_ioforward_of_medians"]
        );
    }
    if let Some(b) = v.get("burst_ns").filter(|b| !b.is_null()) {
        println!("  tapsplice per-burst processing time (ns): p50 {} p90 {} p99 {} p99.9 {} max {}", b["p50"], b["p90"], b["p99"], b["p99.9"], b["max"]);
    }
    if let Some(s) = v.get("splice_setup_us").filter(|b| !b.is_null()) {
        println!("  tapsplice splice setup time (µs, bucket bounds): p50 < {} p90 < {} p99 < {} max < {} ({} splices)", s["p50_us"], s["p90_us"], s["p99_us"], s["max_us"], s["count"]);
    }
    for t in v["trials"].as_array().into_iter().flatten() {
        println!("  round {} {:<9} goodput {:>8.1} Mbit/s  {:>8.0} conn/s  {}", t["round"], t["mode"].as_str().unwrap_or(""), t["goodput_mbps"].as_f64().unwrap_or(0.0), t["conn_per_s"].as_f64().unwrap_or(0.0), if t["passed"] == true { "ok" } else { "FAILED" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mtu_sized_wire_turns_offloads_off_and_the_ports_into_sockets_on_veths() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/splice-bench.toml");
        for (wire, device, args, ring) in [(Wire::Mtu, "net_af_xdp", "queue_count=1", Some(AF_XDP_RING)), (Wire::MtuAfPacket, "net_af_packet", "qpairs=1,qdisc_bypass=1", None)] {
            let mut topo = crate::topology::load(&path).unwrap();
            assert!(topo.links.iter().all(|l| l.offloads), "the TAP wire keeps the kernel's offloads");
            mtu_sized_wire(&mut topo, wire);
            assert!(!topo.links.is_empty() && topo.links.iter().all(|l| !l.offloads));
            let sp1 = &topo.appliances[0];
            assert_eq!(sp1.ports.len(), 2);
            for i in 0..2 {
                assert_eq!(sp1.set[&format!("port.{i}.device")].as_str(), Some(format!("{device}{i}").as_str()));
                assert_eq!(sp1.set[&format!("port.{i}.args")].as_str(), Some(args));
                assert_eq!(sp1.set.get(&format!("port.{i}.rx_desc")).and_then(|v| v.as_integer()), ring);
                assert_eq!(sp1.set.get(&format!("port.{i}.tx_desc")).and_then(|v| v.as_integer()), ring);
            }
            // The rest of the appliance's overrides stay.
            assert!(sp1.set.contains_key("keys.syn_cookie_secret"));
        }
    }

    #[test]
    fn the_tap_wire_leaves_the_topology_as_it_is() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/splice-bench.toml");
        let mut topo = crate::topology::load(&path).unwrap();
        let before = format!("{topo:?}");
        mtu_sized_wire(&mut topo, Wire::Tap);
        assert_eq!(format!("{topo:?}"), before);
    }

    #[test]
    fn wires_are_named_as_the_command_line_spells_them() {
        use clap::ValueEnum;
        for (w, name) in [(Wire::Tap, "tap"), (Wire::Mtu, "mtu"), (Wire::MtuAfPacket, "mtu-af-packet")] {
            assert_eq!(w.to_possible_value().unwrap().get_name(), name);
            assert_eq!(serde_json::to_value(w).unwrap(), serde_json::json!(name));
        }
    }
}
