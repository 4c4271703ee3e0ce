//! `testbed bench detect`: how fast the appliance's failure detector declares a dead peer
//! down. A tapsplice appliance (forward role on net_ring ports: no traffic needed) has one
//! `[[peer]]`, a `tapsplice agent` on loopback; each trial starts the agent, waits until the
//! appliance reports the peer up, then at a varying phase of its heartbeat interval either
//! kills the agent with SIGKILL (`--fault kill`) or powers its node off through the
//! testbed's simulated power switch (`--fault power-off`: `testbed/fence/fence_testbed`
//! with `action=off`, which SIGKILLs what runs on the plug), and waits until the peer is
//! down. Two figures per trial, in heartbeat intervals: the silence the detector measured
//! at its decision (from its `peer_down` event; the design bound is (K + 1) intervals),
//! and the time from the fault to the decision (wall clock, ms resolution), which adds the
//! part of an interval between the last heartbeat and the death.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct DetectOptions {
    pub tapsplice: PathBuf,
    pub trials: u32,
    pub interval_ms: u32,
    pub k: u32,
    pub fault: DetectFault,
}

/// How a trial's node dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectFault {
    /// SIGKILL of the agent.
    Kill,
    /// The simulated power switch turns the node's plug off.
    PowerOff,
}

impl DetectFault {
    pub fn parse(s: &str) -> Result<DetectFault> {
        match s {
            "kill" => Ok(DetectFault::Kill),
            "power-off" => Ok(DetectFault::PowerOff),
            o => bail!("unknown --fault {o:?} for bench detect (kill, power-off)"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DetectFault::Kill => "kill",
            DetectFault::PowerOff => "power-off",
        }
    }
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Powers `plug` off through the testbed switch in `switch`, as a fence agent is run.
fn power_off(agent: &Path, switch: &Path, plug: &str) -> Result<()> {
    use std::io::Write;
    let mut c = Command::new(agent)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", agent.display()))?;
    c.stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(format!("action=off\nplug={plug}\nswitch_dir={}\n", switch.display()).as_bytes())?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!("power switch: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Kills (SIGINT, then waits) a child and removes the scratch directory on every path.
struct Scratch {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_ready(bin: &Path, args: &[&str], cfg: &Path, ready: &str) -> Result<Child> {
    let mut child = Command::new(bin)
        .args(args)
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(l)) = lines.next() {
        if l.contains(ready) {
            return Ok(child);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "{} {:?} exited before printing {:?}",
        bin.display(),
        args,
        ready
    )
}

fn wait_state(bin: &Path, socket: &Path, want: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if crate::ctl::peer_state(bin, socket, "web1")?.as_deref() == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("peer web1 did not become {want} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn run(repo_configs: &Path, o: &DetectOptions) -> Result<Value> {
    let id = crate::runid::RunId::fresh();
    // The run's directory and DPDK prefix follow the testbed's naming, so `testbed cleanup`
    // recognises leftovers of an interrupted run.
    let dir = id.run_dir();
    std::fs::create_dir_all(&dir)?;
    let mut scratch = Scratch {
        dir: dir.clone(),
        children: Vec::new(),
    };
    let key = dir.join("rack.key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let (app_port, agent_port) = (free_udp_port()?, free_udp_port()?);
    let socket = dir.join("ctl.sock");
    let base = std::fs::read_to_string(repo_configs.join("forward.toml"))
        .context("reading configs/forward.toml")?;
    let rack = base
        .replace("\"net_tap0\"", "\"net_ring0\"")
        .replace("\"net_tap1\"", "\"net_ring1\"")
        .replace("\"iface=tsw0\"", "\"\"")
        .replace("\"iface=tse0\"", "\"\"")
        .replace("\"tapsplice-fw1\"", &format!("\"{}\"", id.file_prefix("det")))
        .replace("/run/tapsplice/fw1.sock", &socket.display().to_string())
        .replace("127.0.0.1:9464", "127.0.0.1:0")
        .replacen("roles = [\"forward\"]", &format!("roles = [\"forward\"]\nmgmt = \"127.0.0.1:{app_port}\""), 1)
        + &format!(
            "\n[[peer]]\nid = \"web1\"\nclass = \"server\"\nmgmt = \"127.0.0.1:{agent_port}\"\n\n[timers]\nheartbeat_interval_ms = {}\nmissed_intervals = {}\nflap_damping = false\n\n[keys]\nrack_key = \"{}\"\n",
            o.interval_ms,
            o.k,
            key.display()
        );
    let rack_path = dir.join("rack.toml");
    std::fs::write(&rack_path, rack)?;
    let agent_path = dir.join("agent.toml");
    std::fs::write(
        &agent_path,
        format!(
            "[agent]\nid = \"web1\"\nrack_key = \"{}\"\nbind = \"127.0.0.1:{agent_port}\"\nappliances = [\"127.0.0.1:{app_port}\"]\ninterval_ms = {}\n",
            key.display(),
            o.interval_ms
        ),
    )?;
    let appliance = spawn_ready(
        &o.tapsplice,
        &["run", "--config"],
        &rack_path,
        "tapsplice: running",
    )?;
    scratch.children.push(appliance);

    let switch = dir.join("switch");
    std::fs::create_dir_all(&switch)?;
    let switch_agent = repo_configs.join("../testbed/fence/fence_testbed");
    let interval = Duration::from_millis(o.interval_ms as u64);
    let mut faults_at: Vec<f64> = Vec::new();
    // How long the fault took to act (the power switch runs a fence agent process): the
    // node may still send a heartbeat in that time, after the recorded fault.
    let mut fault_latency_ms: f64 = 0.0;
    for t in 0..o.trials {
        let mut agent = spawn_ready(
            &o.tapsplice,
            &["agent", "--config"],
            &agent_path,
            "tapsplice agent: running",
        )?;
        let up = wait_state(&o.tapsplice, &socket, "up", Duration::from_secs(10));
        std::fs::write(switch.join("web1.state"), "on\n")?;
        std::fs::write(switch.join("web1.pids"), format!("{}\n", agent.id()))?;
        // Fail at a different phase of the interval each trial.
        std::thread::sleep(interval * 3 + interval * (t % 10) / 10);
        faults_at.push(unix_ms());
        match o.fault {
            DetectFault::Kill => {
                let _ = agent.kill(); // SIGKILL: the machine "dies" between two heartbeats
            }
            DetectFault::PowerOff => {
                let r = power_off(&switch_agent, &switch, "web1");
                fault_latency_ms = fault_latency_ms.max(unix_ms() - faults_at.last().copied().unwrap_or(0.0));
                if r.is_err() {
                    let _ = agent.kill();
                }
                r?;
            }
        }
        let status = agent.wait()?;
        if status.success() {
            bail!("trial {t}: the agent survived the fault ({status})");
        }
        up?;
        wait_state(&o.tapsplice, &socket, "down", Duration::from_secs(10))?;
        if (t + 1) % 10 == 0 {
            eprintln!("testbed: detect: {}/{} trials", t + 1, o.trials);
        }
    }

    let events = crate::ctl::json(&o.tapsplice, &socket, "events")?;
    let list = events["events"]
        .as_array()
        .or_else(|| events.as_array())
        .cloned()
        .unwrap_or_default();
    // Decisions to down (a restart while down is logged as peer_down too, without silence).
    let downs: Vec<&Value> = list
        .iter()
        .filter(|e| e["kind"] == "peer_down" && e["message"].as_str().is_some_and(|m| m.contains("no heartbeat for")))
        .collect();
    // From the fault to the decision: the i-th peer_down belongs to the i-th trial.
    let mut from_fault: Vec<f64> = downs
        .iter()
        .zip(&faults_at)
        .filter_map(|(e, at)| Some((e["ts_unix_ms"].as_f64()? - at).max(0.0) / o.interval_ms as f64))
        .collect();
    from_fault.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mut silences: Vec<f64> = downs
        .iter()
        .filter_map(|e| {
            let m = e["message"].as_str()?;
            m.split("no heartbeat for ")
                .nth(1)?
                .split(" ms")
                .next()?
                .parse::<f64>()
                .ok()
        })
        .collect();
    if silences.len() != o.trials as usize {
        return Err(anyhow!(
            "expected {} peer_down events, found {}: {}",
            o.trials,
            silences.len(),
            events
        ));
    }
    silences.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let iv = o.interval_ms as f64;
    let in_intervals: Vec<f64> = silences.iter().map(|s| s / iv).collect();
    let r = |x: f64| (x * 100.0).round() / 100.0;
    let bound = (o.k + 1) as f64;
    let p99 = quantile(&in_intervals, 0.99);
    Ok(json!({
        "bench": "detect",
        "fault": o.fault.as_str(),
        "run_id": id.to_string(),
        "trials": o.trials,
        "interval_ms": o.interval_ms,
        "k": o.k,
        "p50_ms": r(quantile(&silences, 0.50)),
        "p99_ms": r(quantile(&silences, 0.99)),
        "max_ms": r(*silences.last().unwrap_or(&0.0)),
        "p50_intervals": r(quantile(&in_intervals, 0.50)),
        "p99_intervals": r(p99),
        "max_intervals": r(*in_intervals.last().unwrap_or(&0.0)),
        "min_intervals": r(*in_intervals.first().unwrap_or(&0.0)),
        "bound_intervals": bound,
        "from_fault_p50_intervals": r(quantile(&from_fault, 0.50)),
        "from_fault_p99_intervals": r(quantile(&from_fault, 0.99)),
        "from_fault_max_intervals": r(*from_fault.last().unwrap_or(&0.0)),
        "fault_latency_max_ms": r(fault_latency_ms),
        "passed": p99 <= bound,
    }))
}
