//! `testbed bench balance`: the balance fast path on one worker lcore versus io-forward on
//! the same ports, in one run, as packets per second.
//!
//! The device under test (DUT) has two `net_vhost` ports, `c` and `m`, and one worker lcore
//! (`-l 0,1`: lcore 1 on CPU 1). A generator, dpdk-testpmd with two `net_virtio_user` ports
//! on those sockets, in io mode on CPU 0 (`--lcores 0@0,1@0`), closes a loop: whatever the
//! DUT sends out of one port the generator sends back into the other. `start tx_first N`
//! injects N bursts per port of 64-byte UDP datagrams to the VIP 10.1.0.100:9, each from
//! another source address (`--txonly-multi-flow`); they then circulate, at the pace of the
//! slowest stage. The rate is read from the generator's counters (`show port stats all`:
//! Rx-pps summed over both ports), once a second for `--seconds`.
//!
//! Modes (each a fresh DUT and generator on the same sockets, lcores and memory):
//! - `balance`: tapsplice, role balance: a UDP service on the VIP over four members of
//!   equal weight, two on `c`'s subnet and two on `m`'s: every datagram is parsed, hashed
//!   (l34) and looked up in the Maglev table, its destination MAC is rewritten, and it
//!   leaves by its member's port — half of the flows by each port, as in the other modes.
//! - `forward`: tapsplice, role forward, pair (c, m).
//! - `io`: dpdk-testpmd `--forward-mode=io` on the same two ports (the anchor).
//!
//! The members must be resolved by ARP before the balancer uses them, and the generator
//! answers nothing. So every member address is also the VIP of a dummy service whose ARP
//! the balancer answers itself on the *other* port: a request for a member on `c`'s subnet
//! leaves by `c`, comes round the loop into `m` and is answered there, and the reply comes
//! round into `c`. The generator runs the loop for 2.5 s before injecting (members are
//! asked for once a second). Every member thus resolves to one of the DUT's own MACs,
//! which costs the fast path what any MAC does.
//!
//! Rounds alternate the order of the modes. A trial's figure is its best one-second rate,
//! and a mode's its best trial: on this shared host every mode's rate sits in one of two
//! regimes 1.5–1.8× apart, each lasting seconds, whatever the DUT (see `best` and
//! docs/testbed.md). `ratio` (the issue's "versus io-forward") = best balance / best io,
//! `ratio_vs_forward` = best balance / best forward; the medians, their ratio and each
//! round's balance / io are reported beside them.

use crate::bench::{ratio, round3};
use crate::guard::{self, RunGuard};
use crate::runid::RunId;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub const TARGET_RATIO: f64 = 0.8;
/// The generator's burst.
const GEN_BURST: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BMode {
    Balance,
    Forward,
    Io,
}

impl BMode {
    pub fn parse(s: &str) -> Result<BMode> {
        match s.trim() {
            "balance" => Ok(BMode::Balance),
            "forward" => Ok(BMode::Forward),
            "io" | "testpmd" => Ok(BMode::Io),
            o => bail!("unknown bench balance mode `{}` (balance, forward, io)", o),
        }
    }
}

pub struct Options {
    pub tapsplice: PathBuf,
    pub testpmd: String,
    pub modes: Vec<BMode>,
    pub repeat: u32,
    /// Measurement window per trial.
    pub seconds: f64,
    /// Bursts per generator port injected at the start (`start tx_first N`).
    pub bursts: u32,
    /// Every process on 2 MiB hugepages (`--single-file-segments`, which vhost-user
    /// needs to share them) instead of `--no-huge`.
    pub hugepages: bool,
}

/// Free 2 MiB hugepages a run with [`Options::hugepages`] needs: the DUT's and the
/// generator's 256 MiB each (the DUT of one trial is stopped before the next starts).
pub const HUGEPAGES_NEEDED: u64 = 256;

/// The EAL's memory arguments for dpdk-testpmd.
fn testpmd_memory(hugepages: bool) -> &'static str {
    if hugepages {
        "--single-file-segments"
    } else {
        "--no-huge"
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub mode: BMode,
    pub round: u32,
    /// Packets per second through the DUT (the generator's Rx-pps, both ports): the best
    /// of `samples`.
    pub mpps: f64,
    /// The rate of each second of the measurement window, in order.
    pub samples: Vec<f64>,
    pub passed: bool,
    pub error: Option<String>,
    /// The DUT's port counters (tapsplice's report, or testpmd's final statistics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dut: Option<Value>,
}

/// The 1-minute load average (0 when unreadable).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Free 2 MiB hugepages (0 when unreadable; /proc/meminfo counts the default size,
/// which may be 1 GiB).
fn free_hugepages() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The last four lines, for an error message.
fn last_lines(seen: &[String]) -> String {
    seen[seen.len().saturating_sub(4)..].join(" | ")
}

/// A child process whose output lines arrive on a channel (and go to a log file).
pub(crate) struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    name: String,
}

impl Proc {
    pub(crate) fn spawn(mut cmd: Command, name: &str, log: &Path, stdin: bool) -> Result<Proc> {
        use std::os::unix::process::CommandExt;
        cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", name))?;
        guard::add_child(child.id() as i32, name);
        let rx = crate::appliance::capture(&mut child, log, true)?.lines;
        Ok(Proc {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            name: name.to_string(),
        })
    }

    /// Wait for a line containing `marker` (bounded); returns the lines seen on the way.
    pub(crate) fn wait_for(&mut self, marker: &str, limit: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            if guard::interrupted() {
                bail!("interrupted");
            }
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => {
                    let hit = l.contains(marker);
                    seen.push(l);
                    if hit {
                        return Ok(seen);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self.child.try_wait().ok().flatten();
                    bail!(
                        "{} exited ({}) before `{}`: {}",
                        self.name,
                        st.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                        marker,
                        last_lines(&seen)
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no `{}` within {:?}: {}",
                    self.name,
                    marker,
                    limit,
                    last_lines(&seen)
                );
            }
        }
    }

    pub(crate) fn send(&mut self, cmd: &str) -> Result<()> {
        let s = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: no stdin", self.name))?;
        writeln!(s, "{}", cmd).with_context(|| format!("{}: writing `{}`", self.name, cmd))?;
        s.flush()?;
        Ok(())
    }

    /// SIGINT (unless it already exited), wait up to `grace`, then SIGKILL.
    pub(crate) fn stop(mut self, grace: Duration) -> Vec<String> {
        let pid = self.child.id() as i32;
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let deadline = Instant::now() + grace;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        guard::forget_child(pid);
        std::thread::sleep(Duration::from_millis(100));
        self.lines.try_iter().collect()
    }
}

/// The tapsplice rack config of the DUT in `mode`.
fn rack(mode: BMode, dir: &Path, prefix: &str, hugepages: bool) -> String {
    let role = if mode == BMode::Balance { "balance" } else { "forward" };
    let mut head = crate::bench::dut_rack_head(&format!("testbed bench balance: DUT ({mode:?})"), "bench", role, prefix);
    if hugepages {
        head = head.replace("hugepages = false", "hugepages = true\nextra_args = [\"--single-file-segments\"]");
    }
    let mut s = format!(
        r#"{head}
[[port]]
name = "c"
device = "net_vhost0"
args = "iface={dir}/bb0.sock,queues=1"
addresses = ["10.1.1.2/24"]

[[port]]
name = "m"
device = "net_vhost1"
args = "iface={dir}/bb1.sock,queues=1"
addresses = ["10.1.2.3/24"]

[ctl]
socket = "{dir}/dut.sock"

[metrics]
listen = "127.0.0.1:0"
"#,
        dir = dir.display()
    );
    match mode {
        BMode::Balance => {
            // Members 10.1.1.x are reached through `c`, 10.1.2.x through `m` (the port on
            // their subnet): half the flows leave by each port, as in the other modes.
            s.push_str(
                r#"
[[pool]]
name = "p"
members = [
  { address = "10.1.1.21", weight = 100 },
  { address = "10.1.1.22", weight = 100 },
  { address = "10.1.2.21", weight = 100 },
  { address = "10.1.2.22", weight = 100 },
]

[[service]]
name = "s"
vip = "10.1.0.100"
ports = [9]
protocol = "udp"
mode = "balance"
hash = "l34"
pool = "p"
"#,
            );
            // The generator answers no ARP: each member address is also a VIP whose ARP
            // the balancer answers itself on the *other* port, where its requests arrive
            // after a trip round the loop. Never matched by the traffic (another address).
            for (i, (addr, via)) in [
                ("10.1.1.21", "m"),
                ("10.1.1.22", "m"),
                ("10.1.2.21", "c"),
                ("10.1.2.22", "c"),
            ]
            .iter()
            .enumerate()
            {
                s.push_str(&format!(
                    "\n[[service]]\nname = \"arp{i}\"\nvip = \"{addr}\"\nports = [7]\nprotocol = \"udp\"\nmode = \"balance\"\npool = \"p\"\nvia = \"{via}\"\n"
                ));
            }
        }
        _ => s.push_str("\n[forward]\npairs = [[\"c\", \"m\"]]\n"),
    }
    s
}

/// Parse `show port stats all`: (port, Rx-pps) pairs, in order.
pub(crate) fn parse_rx_pps(lines: &[String]) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut port = None;
    for l in lines {
        if let Some(rest) = l.split("NIC statistics for port").nth(1) {
            port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
        } else if let (Some(p), Some(rest)) = (port, l.split("Rx-pps:").nth(1)) {
            if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
                out.push((p, v));
                port = None;
            }
        }
    }
    out
}

pub(crate) fn show_stats(gen: &mut Proc) -> Result<u64> {
    gen.send("show port stats all")?;
    let mut lines = Vec::new();
    // Two ports, each block ends with its Tx-pps line.
    for _ in 0..2 {
        lines.extend(gen.wait_for("Tx-pps:", Duration::from_secs(5))?);
    }
    let v = parse_rx_pps(&lines);
    if v.len() != 2 {
        bail!(
            "generator: cannot read Rx-pps of both ports from: {}",
            lines.join(" | ")
        );
    }
    Ok(v.iter().map(|x| x.1).sum())
}

fn trial(
    o: &Options,
    run: &RunId,
    mode: BMode,
    round: u32,
    testpmd: &Path,
) -> Result<(Vec<f64>, Option<Value>)> {
    let dir = run.run_dir();
    let tag = format!("{:?}{}", mode, round).to_lowercase();
    let dut_prefix = run.file_prefix(&format!("dut{}", tag));
    let gen_prefix = run.file_prefix(&format!("gen{}", tag));
    guard::add_dpdk_prefix(&dut_prefix);
    guard::add_dpdk_prefix(&gen_prefix);
    for s in ["bb0.sock", "bb1.sock"] {
        let _ = guard::remove_socket(&dir.join(s));
    }
    let report = dir.join(format!("dut-{}.report.json", tag));
    let (cmd, ready) = match mode {
        BMode::Balance | BMode::Forward => {
            let cfg = dir.join(format!("dut-{}.toml", tag));
            std::fs::write(&cfg, rack(mode, &dir, &dut_prefix, o.hugepages))?;
            let mut c = Command::new(&o.tapsplice);
            c.arg("run")
                .arg("--config")
                .arg(&cfg)
                .arg("--report-json")
                .arg(&report);
            (c, crate::appliance::READY_LINE)
        }
        BMode::Io => {
            let mut c = Command::new(testpmd);
            c.args([
                "-l",
                "0,1",
                "-m",
                "256",
                testpmd_memory(o.hugepages),
                "--no-pci",
                "--file-prefix",
                &dut_prefix,
            ])
            .arg("--vdev")
            .arg(format!(
                "net_vhost0,iface={}/bb0.sock,queues=1",
                dir.display()
            ))
            .arg("--vdev")
            .arg(format!(
                "net_vhost1,iface={}/bb1.sock,queues=1",
                dir.display()
            ))
            .args([
                "--",
                "--forward-mode=io",
                "--stats-period",
                "1",
                "--total-num-mbufs=8191",
                "--burst=32",
            ]);
            (c, "packet forwarding - ports=")
        }
    };
    let mut dut = Proc::spawn(
        cmd,
        &format!("DUT ({:?})", mode),
        &dir.join(format!("dut-{}.log", tag)),
        false,
    )?;
    let r = (|| -> Result<Vec<f64>> {
        dut.wait_for(ready, Duration::from_secs(30))?;
        let mut g = Command::new("stdbuf");
        g.arg("-o0")
            .arg(testpmd)
            .args([
                "--lcores",
                "0@0,1@0",
                "-m",
                "256",
                testpmd_memory(o.hugepages),
                "--no-pci",
                "--file-prefix",
                &gen_prefix,
            ])
            .arg("--vdev")
            .arg(format!(
                "net_virtio_user0,path={}/bb0.sock,queues=1,queue_size=1024",
                dir.display()
            ))
            .arg("--vdev")
            .arg(format!(
                "net_virtio_user1,path={}/bb1.sock,queues=1,queue_size=1024",
                dir.display()
            ))
            .args([
                "--",
                "-i",
                "--forward-mode=io",
                "--total-num-mbufs=32767",
                &format!("--burst={}", GEN_BURST),
                "--tx-ip=10.1.0.1,10.1.0.100",
                "--tx-udp=1024,9",
                "--txonly-multi-flow",
            ]);
        let mut gen = Proc::spawn(
            g,
            "generator (testpmd)",
            &dir.join(format!("gen-{}.log", tag)),
            true,
        )?;
        let r = (|| -> Result<Vec<f64>> {
            gen.wait_for("Checking link statuses", Duration::from_secs(30))?;
            std::thread::sleep(Duration::from_millis(300));
            // The loop first carries the balancer's ARP requests for its members round into
            // its own port `c` and the replies back into `m` (asked once a second until
            // resolved; harmless for the other modes).
            gen.send("start")?;
            gen.wait_for("packet forwarding - ports=", Duration::from_secs(10))?;
            std::thread::sleep(Duration::from_millis(2500));
            gen.send("stop")?;
            gen.wait_for("Done.", Duration::from_secs(10))?;
            gen.send(&format!("start tx_first {}", o.bursts))?;
            gen.wait_for("packet forwarding - ports=", Duration::from_secs(10))?;
            std::thread::sleep(Duration::from_secs(1));
            let samples = samples_each_second(&mut gen, o.seconds, show_stats)?;
            let _ = gen.send("stop");
            let _ = gen.wait_for("Done.", Duration::from_secs(10));
            let _ = gen.send("quit");
            Ok(samples)
        })();
        gen.stop(Duration::from_secs(5));
        r
    })();
    let tail = dut.stop(Duration::from_secs(15));
    guard::remove_dpdk_files(&dut_prefix);
    guard::remove_dpdk_files(&gen_prefix);
    let samples = r?;
    let rep = match mode {
        BMode::Io => {
            let rx: Vec<&String> = tail
                .iter()
                .filter(|l| l.contains("RX-packets:") || l.contains("TX-packets:"))
                .collect();
            Some(
                json!({ "final_stats": rx.iter().rev().take(6).rev().map(|s| s.trim().to_string()).collect::<Vec<_>>() }),
            )
        }
        _ => std::fs::read_to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok()),
    };
    Ok((samples, rep))
}

/// One-second samples per trial: `seconds` rounded up, at least one.
fn sample_count(seconds: f64) -> u32 {
    (seconds.ceil() as u32).max(1)
}

/// One rate a second for `seconds` (rounded up), in Mpps: `read` gives the generator's
/// packets per second since its previous call, over the interval testpmd timed itself
/// (a first call starts the count).
pub(crate) fn samples_each_second(gen: &mut Proc, seconds: f64, mut read: impl FnMut(&mut Proc) -> Result<u64>) -> Result<Vec<f64>> {
    read(gen)?;
    let mut samples = Vec::new();
    for _ in 0..sample_count(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(round3(read(gen)? as f64 / 1e6));
    }
    Ok(samples)
}

/// A trial's figure: its best one-second rate. On a shared host the rate of every mode
/// moves between regimes 1.5–1.8× apart from one second to the next (docs/testbed.md,
/// "bench balance"); the host's interference only ever slows a trial down, so its best
/// second is the closest to what the DUT can do, as the least time is for a timed run.
pub(crate) fn best(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(0.0, f64::max)
}

pub fn run(o: &Options) -> Result<Value> {
    let testpmd = crate::appliance::find_in_path(&o.testpmd).ok_or_else(|| {
        anyhow!(
            "`{}` not found: install dpdk (apt-get install dpdk) or pass --testpmd PATH",
            o.testpmd
        )
    })?;
    if crate::appliance::find_in_path("stdbuf").is_none() {
        bail!("`stdbuf` (coreutils) not found: the generator's interactive output needs it");
    }
    if o.hugepages {
        let free = free_hugepages();
        if free < HUGEPAGES_NEEDED {
            bail!(
                "--hugepages needs {} free 2 MiB hugepages, {} are free (echo {} > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages, and hugetlbfs mounted on /dev/hugepages)",
                HUGEPAGES_NEEDED,
                free,
                HUGEPAGES_NEEDED
            );
        }
    }
    let load_before = loadavg();
    if load_before > 0.5 {
        eprintln!(
            "testbed: bench balance: warning: the 1-minute load average is {:.2} before the run; other processes on this machine make the figures noisy",
            load_before
        );
    }
    let run = RunId::fresh();
    let _guard = RunGuard::new(run.clone())?;
    eprintln!(
        "testbed: bench balance: run {}, files in {}",
        run,
        run.run_dir().display()
    );
    let mut trials = Vec::new();
    for r in 0..o.repeat {
        let mut order = o.modes.clone();
        if r % 2 == 1 {
            order.reverse();
        }
        for mode in order {
            if guard::interrupted() {
                bail!("interrupted");
            }
            let t = match trial(o, &run, mode, r, &testpmd) {
                Ok((samples, dut)) => Trial {
                    mode,
                    round: r,
                    mpps: best(&samples),
                    // Every second moved traffic: a loop that died is a failure,
                    // whatever its best second was.
                    passed: !samples.is_empty() && samples.iter().all(|&x| x > 0.0),
                    samples,
                    error: None,
                    dut,
                },
                Err(e) => Trial {
                    mode,
                    round: r,
                    mpps: 0.0,
                    samples: Vec::new(),
                    passed: false,
                    error: Some(format!("{:#}", e)),
                    dut: None,
                },
            };
            eprintln!(
                "testbed: bench balance round {}/{}: {:?} {:.3} Mpps (each second: {:?}){}",
                r + 1,
                o.repeat,
                mode,
                t.mpps,
                t.samples,
                t.error
                    .as_ref()
                    .map(|e| format!(" FAILED: {}", e))
                    .unwrap_or_default()
            );
            trials.push(t);
        }
    }
    let rates = |m: BMode| trials.iter().filter(|t| t.mode == m && t.passed).map(|t| t.mpps).collect::<Vec<f64>>();
    let med = |m: BMode| crate::bench::median(rates(m));
    // Each mode's figure is its best trial (see `best`: regimes last for seconds, so a
    // trial of a few seconds often sits in one; the best of several rounds is each mode's
    // least disturbed).
    let top = |m: BMode| rates(m).into_iter().reduce(f64::max);
    let (bal, fwd, io) = (top(BMode::Balance), top(BMode::Forward), top(BMode::Io));
    let r_io = ratio(bal, io);
    let passed = trials.iter().all(|t| t.passed) && !guard::interrupted();
    if !passed {
        guard::keep_run_dirs();
    }
    // The best balance trial: its per-burst cycles and counters.
    let rep = bal.and_then(|m| trials.iter().find(|t| t.mode == BMode::Balance && t.passed && t.mpps == m).and_then(|t| t.dut.clone()));
    Ok(json!({
        "bench": "balance",
        "run_id": run.to_string(),
        "passed": passed,
        "balance_mpps": bal,
        "forward_mpps": fwd,
        "io_mpps": io,
        "ratio": r_io,
        "ratio_vs_forward": ratio(bal, fwd),
        "balance_median_mpps": med(BMode::Balance),
        "forward_median_mpps": med(BMode::Forward),
        "io_median_mpps": med(BMode::Io),
        "ratio_of_medians": ratio(med(BMode::Balance), med(BMode::Io)),
        "round_ratios": round_ratios(&trials, BMode::Balance, BMode::Io),
        "target": TARGET_RATIO,
        "target_met": r_io.map(|r| r >= TARGET_RATIO),
        "seconds": o.seconds,
        "bursts": o.bursts,
        "hugepages": o.hugepages,
        "loadavg_before": load_before,
        "repeat": o.repeat,
        "burst_cycles": rep.as_ref().and_then(|r| r.get("burst_cycles")).cloned(),
        "tsc_hz": rep.as_ref().and_then(|r| r.get("tsc_hz")).cloned(),
        "trials": trials,
    }))
}

/// For each round in which both `a` and `b` moved traffic, `a`'s rate over `b`'s (in round
/// order, three decimals).
fn round_ratios(trials: &[Trial], a: BMode, b: BMode) -> Vec<f64> {
    let rate = |round: u32, m: BMode| trials.iter().find(|t| t.round == round && t.mode == m && t.passed).map(|t| t.mpps);
    let mut rounds: Vec<u32> = trials.iter().map(|t| t.round).collect();
    rounds.dedup();
    rounds.into_iter().filter_map(|r| ratio(rate(r, a), rate(r, b))).collect()
}

pub fn print_human(v: &Value) {
    println!(
        "bench balance (run {})",
        v["run_id"].as_str().unwrap_or("?")
    );
    if let Some(ts) = v["trials"].as_array() {
        for t in ts {
            println!(
                "  round {} {:8} {:>8.3} Mpps  {}",
                t["round"].as_u64().unwrap_or(0) + 1,
                t["mode"].as_str().unwrap_or("?"),
                t["mpps"].as_f64().unwrap_or(0.0),
                if t["passed"].as_bool().unwrap_or(false) {
                    "ok".to_string()
                } else {
                    format!("FAILED: {}", t["error"].as_str().unwrap_or("no packets"))
                }
            );
        }
    }
    let f = |k: &str| {
        v[k].as_f64()
            .map(|x| format!("{:.3} Mpps", x))
            .unwrap_or_else(|| "-".into())
    };
    for (name, k) in [("balance", "balance"), ("forward", "forward"), ("io (testpmd)", "io")] {
        println!("  {:13} best {}, median {}", name, f(&format!("{k}_mpps")), f(&format!("{k}_median_mpps")));
    }
    let r = |k: &str| {
        v[k].as_f64()
            .map(|x| format!("{:.3}", x))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "  ratio balance/io-forward: {} (target ≥ {}: {})",
        r("ratio"),
        TARGET_RATIO,
        match v["target_met"].as_bool() {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "-",
        }
    );
    println!("  ratio balance/forward: {}", r("ratio_vs_forward"));
    let list = |k: &str| v[k].as_array().map(|a| a.iter().filter_map(Value::as_f64).map(|x| format!("{:.3}", x)).collect::<Vec<_>>().join(" ")).unwrap_or_default();
    println!("  (ratios of the best trials; ratio of the medians {}; each round's balance/io {})", r("ratio_of_medians"), list("round_ratios"));
    if let Some(bc) = v.get("burst_cycles").filter(|b| !b.is_null()) {
        println!("  balance per-burst processing time:");
        print!(
            "{}",
            crate::report::burst_table(bc, v.get("tsc_hz").and_then(Value::as_f64))
        );
    }
    let ok = v["passed"].as_bool().unwrap_or(false) && v["target_met"].as_bool().unwrap_or(true);
    println!("result: {}", if ok { "PASS" } else { "FAIL" });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(mode: BMode, round: u32, mpps: f64, passed: bool) -> Trial {
        Trial { mode, round, mpps, samples: vec![mpps], passed, error: None, dut: None }
    }

    #[test]
    fn ratios_pair_the_trials_of_one_round() {
        let trials = vec![
            t(BMode::Balance, 0, 8.0, true),
            t(BMode::Io, 0, 10.0, true),
            t(BMode::Io, 1, 16.0, true),
            t(BMode::Balance, 1, 12.0, true),
            // A round whose io trial failed has no pair.
            t(BMode::Balance, 2, 9.0, true),
            t(BMode::Io, 2, 0.0, false),
            t(BMode::Balance, 3, 3.0, true),
            t(BMode::Io, 3, 4.0, true),
        ];
        assert_eq!(round_ratios(&trials, BMode::Balance, BMode::Io), vec![0.8, 0.75, 0.75]);
        assert!(round_ratios(&trials, BMode::Balance, BMode::Forward).is_empty());
    }

    #[test]
    fn a_trial_is_its_best_second() {
        assert_eq!(best(&[8.0, 9.5, 9.0]), 9.5);
        assert_eq!(best(&[]), 0.0);
        assert_eq!((sample_count(3.0), sample_count(2.5), sample_count(0.2)), (3, 3, 1));
    }

    #[test]
    fn parses_generator_rx_pps() {
        let text = "  ######################## NIC statistics for port 0  ########################
  RX-packets: 14265504   RX-missed: 0          RX-bytes:  912992256
  RX-errors: 0
  Throughput (since last show)
  Rx-pps:      4616582          Rx-bps:   2363690040
  Tx-pps:      4616000          Tx-bps:   2363690040
  ######################## NIC statistics for port 1  ########################
  RX-packets: 1   RX-missed: 0          RX-bytes:  64
  Throughput (since last show)
  Rx-pps:           12          Rx-bps:   6144
  Tx-pps:            0          Tx-bps:   0";
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(parse_rx_pps(&lines), vec![(0, 4616582), (1, 12)]);
    }

    #[test]
    fn rack_configs_differ_only_in_role() {
        let d = Path::new("/tmp/testbed-t000000");
        let b = rack(BMode::Balance, d, "p", false);
        let f = rack(BMode::Forward, d, "p", false);
        assert!(
            b.contains("roles = [\"balance\"]")
                && b.contains("[[service]]")
                && !b.contains("[forward]")
        );
        assert!(
            f.contains("roles = [\"forward\"]")
                && f.contains("[forward]")
                && !f.contains("[[service]]")
        );
        for t in [&b, &f] {
            assert!(t.contains("iface=/tmp/testbed-t000000/bb0.sock"));
            assert!(t.contains("idle_backoff = false"));
            t.parse::<toml::Table>().unwrap();
        }
        // On hugepages, in one file segment (vhost-user shares it with the generator).
        let h: toml::Table = rack(BMode::Balance, d, "p", true).parse().unwrap();
        assert_eq!(h["eal"]["hugepages"].as_bool(), Some(true));
        assert_eq!(h["eal"]["extra_args"].as_array().unwrap()[0].as_str(), Some("--single-file-segments"));
        assert!(b.contains("hugepages = false"));
        assert_eq!((testpmd_memory(true), testpmd_memory(false)), ("--single-file-segments", "--no-huge"));
    }
}
