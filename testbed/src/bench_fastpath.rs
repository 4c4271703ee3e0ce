//! The splice fast path on one worker lcore versus io-forward on the same ports
//! (`testbed bench splice`, mode `fastpath`): synthetic spliced traffic in both
//! directions, no TCP stacks.
//!
//! Ports (both modes): `net_pcap0,rx_pcap=F,infinite_rx=1` replays a pcap of segments of
//! N synthetic connections at full speed (its TX drops: no `tx_*` argument), and
//! `net_null0,no-rx=1` is a sink. The pcap interleaves, per connection, a segment from the
//! client to the VIP and one from the backend to the appliance's NAT address
//! (`dataplane::splice::synthetic`, the generator the appliance uses for its entries).
//! - tapsplice: `run --bench-splices N` preloads the matching established splices; every
//!   segment is looked up, rewritten (addresses, ports, Δ, window, checksums) and sent on
//!   (client segments to the sink, backend segments back out of the pcap port). Rate: the
//!   worker's TX packets over `--seconds` from two `ctl stats` samples.
//! - io: dpdk-testpmd io-forward on the same two vdevs. Rate: `show port stats` Rx-pps.
//!
//! The same on vhost-user ports ([`Ports::Vhost`], mode `fastpath-vhost`): the DUT's ports
//! are `net_vhost` (as in `bench balance`), and a generator, dpdk-testpmd on CPU 0 with
//! the pcap port and two `net_virtio_user` ports, sends the pcap's segments into the DUT's
//! port `c` and sinks what comes back (`--port-topology=paired`: pcap → virtio 0, virtio 1
//! → null, virtio 0 → pcap, which drops). The DUT now pays what a port costs per frame
//! (the vhost copies) as it would on a NIC, instead of nearly nothing; the io-forward
//! anchor is dpdk-testpmd on the same vhost ports, fed the same way. All three DUTs are
//! read at the generator: its Rx-pps on the two virtio ports (what the DUT sent), once a
//! second; a trial's figure is its best second and the summary takes each DUT's best
//! trial, as `bench balance` does and for the same reason: on this kind of host every
//! DUT's rate sits in one of two regimes 1.5-1.8x apart for seconds to whole trials
//! (docs/testbed.md, "`testbed bench balance`"), which interference only ever slows down.

use crate::bench_balance::{best, parse_rx_pps, samples_each_second, show_stats, Proc};
use crate::guard;
use crate::runid::RunId;
use anyhow::{anyhow, bail, Context, Result};
use dataplane::splice::synthetic::{frames, Layout};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Synthetic connections (2 segments each in the pcap).
pub const CONNECTIONS: usize = 1024;

/// The synthetic connections: NAT from the DUT's address on port `m`.
fn layout() -> Layout {
    Layout::example(Ipv4Addr::new(10, 1, 0, 2))
}

/// A classic pcap file (microsecond timestamps, Ethernet) of `frames`.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> Result<()> {
    let mut b = Vec::with_capacity(24 + frames.iter().map(|f| 16 + f.len()).sum::<usize>());
    for v in [0xa1b2_c3d4u32] {
        b.extend(v.to_le_bytes());
    }
    b.extend(2u16.to_le_bytes());
    b.extend(4u16.to_le_bytes());
    for v in [0u32, 0, 65_535, 1] {
        b.extend(v.to_le_bytes());
    }
    for (i, f) in frames.iter().enumerate() {
        for v in [0u32, i as u32, f.len() as u32, f.len() as u32] {
            b.extend(v.to_le_bytes());
        }
        b.extend(f);
    }
    std::fs::write(path, b).with_context(|| format!("writing {}", path.display()))
}

/// The DUT's two ports: nearly free (a pcap replay and a sink), or vhost-user fed by a
/// generator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ports {
    PcapNull,
    Vhost,
}

impl Ports {
    /// The DUT's ports `c` and `m`: DPDK device and its arguments.
    fn devices(self, dir: &Path, pcap: &Path) -> [(&'static str, String); 2] {
        match self {
            Ports::PcapNull => [("net_pcap0", format!("rx_pcap={},infinite_rx=1", pcap.display())), ("net_null0", "no-rx=1".to_string())],
            Ports::Vhost => [("net_vhost0", vhost_args(dir, 0)), ("net_vhost1", vhost_args(dir, 1))],
        }
    }

    /// Tells the files of this kind of port apart.
    fn tag(self) -> &'static str {
        match self {
            Ports::PcapNull => "",
            Ports::Vhost => "v",
        }
    }
}

/// Removes the vhost-user sockets an earlier DUT left (a new DUT creates them).
fn remove_vhost_sockets(dir: &Path) {
    for i in 0..2 {
        let _ = guard::remove_socket(&vhost_socket(dir, i));
    }
}

/// What the DUT runs: the splice role over preloaded splices, or the forward role on the
/// same ports (the appliance's own loop without the splice: where its ceiling is).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dut {
    Splice,
    Forward,
}

fn rack(dir: &Path, prefix: &str, pcap: &Path, dut: Dut, ports: Ports) -> String {
    // Forward: no address the frames are for (the backend segments go to the splice's
    // NAT address), so every frame is forwarded.
    let (roles, addr_c, addr_m) = match dut {
        Dut::Splice => ("splice", "10.0.0.2/24", "10.1.0.2/24"),
        Dut::Forward => ("forward", "10.9.0.2/24", "10.9.1.2/24"),
    };
    let role = match dut {
        Dut::Splice => format!(
            r#"[splice]
nat_ports = "20000-59999"

[[pool]]
name = "p"
via = "m"
members = [{{ address = "10.1.0.21" }}]

[[service]]
name = "s"
vip = "10.0.0.100"
ports = [80]
mode = "splice"
pool = "p"
via = "c"
fault_tolerance = "none"

[keys]
syn_cookie_secret = "{dir}/rack.key"
"#,
            dir = dir.display()
        ),
        Dut::Forward => "[forward]\npairs = [[\"c\", \"m\"]]\n".to_string(),
    };
    let head = crate::bench::dut_rack_head("testbed bench splice, fast path: the DUT", "fastpath", roles, prefix);
    let [(dev_c, args_c), (dev_m, args_m)] = ports.devices(dir, pcap);
    format!(
        r#"{head}
[[port]]
name = "c"
device = "{dev_c}"
args = "{args_c}"
addresses = ["{addr_c}"]

[[port]]
name = "m"
device = "{dev_m}"
args = "{args_m}"
addresses = ["{addr_m}"]

{role}
[ctl]
socket = "{dir}/fastpath.sock"

[metrics]
enabled = false
"#,
        dir = dir.display(),
    )
}

/// The vhost-user socket of the DUT's port `i` (0 = c, 1 = m).
fn vhost_socket(dir: &Path, i: u8) -> std::path::PathBuf {
    dir.join(format!("fpv{i}.sock"))
}

fn vhost_args(dir: &Path, i: u8) -> String {
    format!("iface={},queues=1", vhost_socket(dir, i).display())
}

/// The generator for [`Ports::Vhost`]. A replay alone cannot outrun the DUT (the pcap PMD
/// copies every frame: about 12 Mpps on one core), so the generator only seeds the loop:
/// it replays the pcap into the DUT's `c` for a moment, then swaps every frame the DUT
/// sends back (`5tswap`: MACs, addresses and ports) and returns it through the other
/// port. A spliced segment swapped is a segment of the same splice's other leg (client →
/// VIP out of `m` comes back as backend → NAT into `c`, and so on), so each frame goes
/// round and round through the splice, rewritten both ways in turn, at the pace of the
/// slowest stage; io-forward and the forward role carry the same frames unchanged.
fn generator(run: &RunId, testpmd: &Path, pcap: &Path, tag: &str) -> Result<Proc> {
    let dir = run.run_dir();
    let prefix = run.file_prefix(&format!("fpgen{tag}"));
    guard::add_dpdk_prefix(&prefix);
    let mut g = Command::new("stdbuf");
    g.arg("-o0")
        .arg(testpmd)
        .args(["--lcores", "0@0,1@0", "-m", "256", "--no-huge", "--no-pci", "--file-prefix", &prefix])
        .arg("--vdev")
        .arg(format!("net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()))
        .arg("--vdev")
        .arg(format!("net_virtio_user0,path={},queues=1,queue_size=1024", vhost_socket(&dir, 0).display()))
        .arg("--vdev")
        .arg(format!("net_virtio_user1,path={},queues=1,queue_size=1024", vhost_socket(&dir, 1).display()))
        .args(["--vdev", "net_null0,no-rx=1"])
        .args(["--", "-i", "--forward-mode=io", "--port-topology=paired", "--portlist=0,1", "--no-flush-rx", "--total-num-mbufs=32767", "--burst=64"]);
    let mut gen = Proc::spawn(g, "generator (testpmd)", &dir.join(format!("fastpath-gen-{tag}.log")), true)?;
    gen.wait_for("Checking link statuses", Duration::from_secs(30))?;
    // Seed: the pcap into the DUT's c.
    gen.send("start")?;
    gen.wait_for("packet forwarding - ports=", Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_millis(300));
    gen.send("stop")?;
    gen.wait_for("Done.", Duration::from_secs(10))?;
    // Loop: what comes back from either DUT port, swapped, into the other.
    gen.send("set portlist 1,2")?;
    gen.send("set fwd 5tswap")?;
    gen.send("start")?;
    gen.wait_for("packet forwarding - ports=", Duration::from_secs(10))?;
    Ok(gen)
}

/// The worker's TX packets so far, and the segments spliced toward the backend and toward
/// the client (`ctl stats`; 0 without the splice role).
fn tx_packets(bin: &Path, sock: &Path) -> Result<(u64, u64, u64)> {
    let v = crate::ctl::json(bin, sock, "stats")?;
    let tx = v["lcores"].as_array().and_then(|l| l.first()).and_then(|l| l["tx_packets"].as_u64()).ok_or_else(|| anyhow!("ctl stats: no lcore counters: {v}"))?;
    let n = |k: &str| v["splice"][k].as_u64().unwrap_or(0);
    Ok((tx, n("to_server_packets"), n("to_client_packets")))
}

/// Packets per second of one trial of each DUT.
#[derive(Clone, Debug)]
pub struct Rates {
    /// The splice role over the preloaded splices.
    pub splice: f64,
    /// The forward role on the same ports (the appliance without the splice).
    pub forward: f64,
    /// dpdk-testpmd io-forward on the same ports (the PMDs alone).
    pub io: f64,
    /// vhost ports: each DUT's one-second rates at the generator, Mpps (the figures above
    /// are their best); empty on pcap/null ports (window averages).
    pub samples: Samples,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Samples {
    pub splice: Vec<f64>,
    pub forward: Vec<f64>,
    pub io: Vec<f64>,
}

/// The generator's Rx-pps on the two virtio ports (1 and 2: port 0 is the pcap) since
/// the last call, summed: what the DUT sent in that time.
fn generator_rx_pps(gen: &mut Proc) -> Result<u64> {
    let mut sum = 0;
    for port in [1, 2] {
        gen.send(&format!("show port stats {port}"))?;
        let lines = gen.wait_for("Tx-pps:", Duration::from_secs(5))?;
        let v = parse_rx_pps(&lines);
        match v.as_slice() {
            [(p, pps)] if *p == port => sum += pps,
            _ => bail!("generator: cannot read Rx-pps of port {port} from: {}", lines.join(" | ")),
        }
    }
    Ok(sum)
}

/// One-second samples of the generator's receive rate over `window`, in Mpps.
fn generator_samples(gen: &mut Proc, window: Duration) -> Result<Vec<f64>> {
    samples_each_second(gen, window.as_secs_f64(), generator_rx_pps)
}

/// The best one-second sample, in packets per second.
fn best_pps(samples: &[f64]) -> f64 {
    best(samples) * 1e6
}

/// Packets per second of the appliance running `dut` on `ports` (vhost: the best second at
/// the generator, with every second's rate).
fn appliance_pps(run: &RunId, tapsplice: &Path, testpmd: &Path, dut: Dut, ports: Ports, window: Duration, round: u32) -> Result<(f64, Vec<f64>)> {
    let dir = run.run_dir();
    let v = ports.tag();
    let name = match dut {
        Dut::Splice => format!("fastpath{v}"),
        Dut::Forward => format!("fastpath{v}-forward"),
    };
    let prefix = run.file_prefix(&format!("{}{v}{round}", if dut == Dut::Splice { "fp" } else { "fpfw" }));
    guard::add_dpdk_prefix(&prefix);
    remove_vhost_sockets(&dir);
    let cfg = dir.join(format!("{name}-{round}.toml"));
    let pcap = dir.join("fastpath.pcap");
    std::fs::write(&cfg, rack(&dir, &prefix, &pcap, dut, ports))?;
    let mut c = Command::new(tapsplice);
    c.arg("run").arg("--config").arg(&cfg);
    if dut == Dut::Splice {
        c.arg("--bench-splices").arg(CONNECTIONS.to_string());
    }
    let mut app = Proc::spawn(c, &format!("DUT ({dut:?})"), &dir.join(format!("{name}-{round}.log")), false)?;
    let sock = dir.join("fastpath.sock");
    let mut gen = None;
    let pps = (|| -> Result<(f64, Vec<f64>)> {
        app.wait_for(crate::appliance::READY_LINE, Duration::from_secs(30))?;
        if ports == Ports::Vhost {
            gen = Some(generator(run, testpmd, &pcap, &format!("{name}-{round}"))?);
        }
        std::thread::sleep(Duration::from_secs(1));
        let (a, t0) = (tx_packets(tapsplice, &sock)?, Instant::now());
        // vhost: every second at the generator; pcap/null: the window through ctl stats.
        let samples = match gen.as_mut() {
            Some(g) => Some(generator_samples(g, window)?),
            None => {
                std::thread::sleep(window);
                None
            }
        };
        let (b, t1) = (tx_packets(tapsplice, &sock)?, Instant::now());
        let (sent, to_server, to_client) = (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1), b.2.saturating_sub(a.2));
        if dut == Dut::Splice && (to_server + to_client < sent / 100 * 99 || to_server.min(to_client) < sent / 100 * 40) {
            // Within the window, what the DUT sent must be spliced segments, about half
            // each way: the rate is the splice's, not that of frames it passed on.
            bail!("the DUT did not splice what it sent: {sent} frames sent, {to_server} segments spliced toward the backend, {to_client} toward the client");
        }
        Ok(match samples {
            Some(s) => (best_pps(&s), s),
            None => (sent as f64 / t1.duration_since(t0).as_secs_f64(), Vec::new()),
        })
    })();
    if let Some(g) = gen {
        let _ = g.stop(Duration::from_secs(10));
    }
    let lines = app.stop(Duration::from_secs(10));
    pps.map_err(|e| anyhow!("{e}; DUT: {}", lines.iter().rev().take(3).cloned().collect::<Vec<_>>().join(" | ")))
}

/// One trial of each DUT on `ports`: the splice fast path, the forward role, io-forward.
pub fn trial(run: &RunId, tapsplice: &Path, testpmd: &Path, ports: Ports, seconds: f64, round: u32) -> Result<Rates> {
    let dir = run.run_dir();
    let pcap = dir.join("fastpath.pcap");
    if !pcap.exists() {
        write_pcap(&pcap, &frames(&layout(), CONNECTIONS, ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb])))?;
    }
    let window = Duration::from_secs_f64(seconds);
    let (splice, splice_samples) = appliance_pps(run, tapsplice, testpmd, Dut::Splice, ports, window, round)?;
    let (forward, forward_samples) = appliance_pps(run, tapsplice, testpmd, Dut::Forward, ports, window, round)?;

    // testpmd io-forward on the same vdevs (and fed by the same generator).
    let v = ports.tag();
    let prefix = run.file_prefix(&format!("fpio{v}{round}"));
    guard::add_dpdk_prefix(&prefix);
    remove_vhost_sockets(&dir);
    let vdevs = ports.devices(&dir, &pcap).map(|(dev, args)| format!("{dev},{args}"));
    let mut g = Command::new("stdbuf");
    g.arg("-o0")
        .arg(testpmd)
        .args(["-l", "0,1", "-m", "256", "--no-huge", "--no-pci", "--file-prefix", &prefix])
        .args(["--vdev", &vdevs[0], "--vdev", &vdevs[1]])
        .args(["--", "-i", "--forward-mode=io", "--total-num-mbufs=8191", "--burst=32"]);
    let tag = format!("io{v}-{round}");
    let mut io = Proc::spawn(g, "testpmd io-forward", &dir.join(format!("fastpath-{tag}.log")), true)?;
    let mut gen = None;
    let io_pps = (|| -> Result<(f64, Vec<f64>)> {
        io.wait_for("Checking link statuses", Duration::from_secs(30))?;
        io.send("start")?;
        io.wait_for("packet forwarding - ports=", Duration::from_secs(10))?;
        if ports == Ports::Vhost {
            gen = Some(generator(run, testpmd, &pcap, &tag)?);
        }
        std::thread::sleep(Duration::from_secs(1));
        if let Some(g) = gen.as_mut() {
            let samples = generator_samples(g, window)?;
            return Ok((best_pps(&samples), samples));
        }
        show_stats(&mut io)?;
        std::thread::sleep(window);
        Ok((show_stats(&mut io)? as f64, Vec::new()))
    })();
    if let Some(g) = gen {
        let _ = g.stop(Duration::from_secs(10));
    }
    let _ = io.stop(Duration::from_secs(10));
    let (io_pps, io_samples) = io_pps?;
    if splice <= 0.0 || forward <= 0.0 || io_pps <= 0.0 {
        bail!("fast path: no packets measured (splice {splice} pps, forward {forward} pps, io-forward {io_pps} pps)");
    }
    let how = if ports == Ports::Vhost { "best second at the generator" } else { "window average" };
    eprintln!("testbed: bench splice fast path ({ports:?} ports, {how}): splice {:.2} Mpps, forward role {:.2} Mpps, io-forward {:.2} Mpps", splice / 1e6, forward / 1e6, io_pps / 1e6);
    Ok(Rates { splice, forward, io: io_pps, samples: Samples { splice: splice_samples, forward: forward_samples, io: io_samples } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_second_is_the_largest_sample_in_pps() {
        assert_eq!(best_pps(&[9.5, 15.25, 10.0]), 15.25e6);
        assert_eq!(best_pps(&[]), 0.0);
    }

    #[test]
    fn both_duts_get_a_whole_rack_config() {
        let (d, pcap) = (Path::new("/tmp/testbed-t000000"), Path::new("/tmp/testbed-t000000/fastpath.pcap"));
        for dut in [Dut::Splice, Dut::Forward] {
            let v: toml::Table = rack(d, "p", pcap, dut, Ports::Vhost).parse().unwrap_or_else(|e| panic!("{dut:?}: {e}"));
            assert_eq!(v["port"][1]["device"].as_str(), Some("net_vhost1"));
            assert_eq!(v["port"][0]["args"].as_str(), Some("iface=/tmp/testbed-t000000/fpv0.sock,queues=1"));
            let t: toml::Table = rack(d, "p", pcap, dut, Ports::PcapNull).parse().unwrap_or_else(|e| panic!("{dut:?}: {e}"));
            assert_eq!(t["eal"]["file_prefix"].as_str(), Some("p"));
            assert_eq!(t["port"][0]["args"].as_str(), Some("rx_pcap=/tmp/testbed-t000000/fastpath.pcap,infinite_rx=1"));
            let roles = t["node"]["roles"].as_array().unwrap();
            match dut {
                Dut::Splice => assert!(roles[0].as_str() == Some("splice") && t.contains_key("service") && !t.contains_key("forward")),
                Dut::Forward => assert!(roles[0].as_str() == Some("forward") && t.contains_key("forward") && !t.contains_key("service")),
            }
        }
    }
}
