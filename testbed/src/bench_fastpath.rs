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

use crate::bench_balance::{show_stats, Proc};
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

/// What the DUT runs: the splice role over preloaded splices, or the forward role on the
/// same ports (the appliance's own loop without the splice: where its ceiling is).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dut {
    Splice,
    Forward,
}

fn rack(dir: &Path, prefix: &str, pcap: &Path, dut: Dut) -> String {
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
    format!(
        r#"{head}
[[port]]
name = "c"
device = "net_pcap0"
args = "rx_pcap={pcap},infinite_rx=1"
addresses = ["{addr_c}"]

[[port]]
name = "m"
device = "net_null0"
args = "no-rx=1"
addresses = ["{addr_m}"]

{role}
[ctl]
socket = "{dir}/fastpath.sock"

[metrics]
enabled = false
"#,
        pcap = pcap.display(),
        dir = dir.display(),
    )
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
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    /// The splice role over the preloaded splices.
    pub splice: f64,
    /// The forward role on the same ports (the appliance without the splice).
    pub forward: f64,
    /// dpdk-testpmd io-forward on the same ports (the PMDs alone).
    pub io: f64,
}

/// Packets per second of the appliance running `dut` on the pcap/null ports.
fn appliance_pps(run: &RunId, tapsplice: &Path, dut: Dut, window: Duration, round: u32) -> Result<f64> {
    let dir = run.run_dir();
    let name = match dut {
        Dut::Splice => "fastpath",
        Dut::Forward => "fastpath-forward",
    };
    let prefix = run.file_prefix(&format!("{}{round}", if dut == Dut::Splice { "fp" } else { "fpfw" }));
    guard::add_dpdk_prefix(&prefix);
    let cfg = dir.join(format!("{name}-{round}.toml"));
    std::fs::write(&cfg, rack(&dir, &prefix, &dir.join("fastpath.pcap"), dut))?;
    let mut c = Command::new(tapsplice);
    c.arg("run").arg("--config").arg(&cfg);
    if dut == Dut::Splice {
        c.arg("--bench-splices").arg(CONNECTIONS.to_string());
    }
    let mut app = Proc::spawn(c, &format!("DUT ({dut:?})"), &dir.join(format!("{name}-{round}.log")), false)?;
    let sock = dir.join("fastpath.sock");
    let pps = (|| -> Result<f64> {
        app.wait_for(crate::appliance::READY_LINE, Duration::from_secs(30))?;
        std::thread::sleep(Duration::from_secs(1));
        let (a, t0) = (tx_packets(tapsplice, &sock)?, Instant::now());
        std::thread::sleep(window);
        let (b, t1) = (tx_packets(tapsplice, &sock)?, Instant::now());
        let (sent, to_server, to_client) = (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1), b.2.saturating_sub(a.2));
        if dut == Dut::Splice && (to_server + to_client < sent / 100 * 99 || to_server.min(to_client) < sent / 100 * 40) {
            // Within the window, what the DUT sent must be spliced segments, about half
            // each way: the rate is the splice's, not that of frames it passed on.
            bail!("the DUT did not splice what it sent: {sent} frames sent, {to_server} segments spliced toward the backend, {to_client} toward the client");
        }
        Ok(sent as f64 / t1.duration_since(t0).as_secs_f64())
    })();
    let lines = app.stop(Duration::from_secs(10));
    pps.map_err(|e| anyhow!("{e}; DUT: {}", lines.iter().rev().take(3).cloned().collect::<Vec<_>>().join(" | ")))
}

/// One trial of each DUT: the splice fast path, the forward role, io-forward.
pub fn trial(run: &RunId, tapsplice: &Path, testpmd: &Path, seconds: f64, round: u32) -> Result<Rates> {
    let dir = run.run_dir();
    let pcap = dir.join("fastpath.pcap");
    if !pcap.exists() {
        write_pcap(&pcap, &frames(&layout(), CONNECTIONS, ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb])))?;
    }
    let window = Duration::from_secs_f64(seconds);
    let splice = appliance_pps(run, tapsplice, Dut::Splice, window, round)?;
    let forward = appliance_pps(run, tapsplice, Dut::Forward, window, round)?;

    // testpmd io-forward on the same vdevs.
    let prefix = run.file_prefix(&format!("fpio{round}"));
    guard::add_dpdk_prefix(&prefix);
    let mut g = Command::new("stdbuf");
    g.arg("-o0")
        .arg(testpmd)
        .args(["-l", "0,1", "-m", "256", "--no-huge", "--no-pci", "--file-prefix", &prefix])
        .arg("--vdev")
        .arg(format!("net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()))
        .args(["--vdev", "net_null0,no-rx=1", "--", "-i", "--forward-mode=io", "--total-num-mbufs=8191", "--burst=32"]);
    let mut io = Proc::spawn(g, "testpmd io-forward", &dir.join(format!("fastpath-io-{round}.log")), true)?;
    let io_pps = (|| -> Result<f64> {
        io.wait_for("Checking link statuses", Duration::from_secs(30))?;
        io.send("start")?;
        io.wait_for("packet forwarding - ports=", Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_secs(1));
        show_stats(&mut io)?;
        std::thread::sleep(window);
        Ok(show_stats(&mut io)? as f64)
    })();
    let _ = io.stop(Duration::from_secs(10));
    let io_pps = io_pps?;
    if splice <= 0.0 || forward <= 0.0 || io_pps <= 0.0 {
        bail!("fast path: no packets measured (splice {splice} pps, forward {forward} pps, io-forward {io_pps} pps)");
    }
    eprintln!("testbed: bench splice fast path: splice {:.2} Mpps, forward role {:.2} Mpps, io-forward {:.2} Mpps", splice / 1e6, forward / 1e6, io_pps / 1e6);
    Ok(Rates { splice, forward, io: io_pps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_duts_get_a_whole_rack_config() {
        let (d, pcap) = (Path::new("/tmp/testbed-t000000"), Path::new("/tmp/testbed-t000000/fastpath.pcap"));
        for dut in [Dut::Splice, Dut::Forward] {
            let t: toml::Table = rack(d, "p", pcap, dut).parse().unwrap_or_else(|e| panic!("{dut:?}: {e}"));
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
