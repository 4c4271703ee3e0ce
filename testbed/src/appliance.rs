//! Starting, placing and stopping appliances: tapsplice itself, or dpdk-testpmd io-forward
//! on the same ports (the benchmark anchor).

use crate::guard;
use crate::netns::{self, IfConfig};
use crate::rackconfig::{self, RackPort};
use crate::runid::RunId;
use crate::topology::{Appliance, ApplianceKind, AppliancePort, Topology};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const READY_LINE: &str = "tapsplice: running";
const TESTPMD_READY: &str = "packet forwarding - ports=";

/// Where the appliance binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub tapsplice: Option<PathBuf>,
    pub testpmd: String,
}

/// `--tapsplice PATH`, else $TAPSPLICE_BIN, else `tapsplice` next to this executable.
pub fn locate_tapsplice(cli: Option<&Path>) -> Result<PathBuf> {
    let (p, how) = if let Some(p) = cli {
        (p.to_path_buf(), "--tapsplice")
    } else if let Some(p) = std::env::var_os("TAPSPLICE_BIN").filter(|v| !v.is_empty()) {
        (PathBuf::from(p), "TAPSPLICE_BIN")
    } else {
        let exe = std::env::current_exe().context("cannot find the testbed executable")?;
        (
            exe.parent().unwrap_or(Path::new(".")).join("tapsplice"),
            "next to the testbed binary",
        )
    };
    if !p.is_file() {
        bail!(
            "tapsplice binary not found at {} ({}): build it with `cargo build -p tapsplice` in the same profile and target dir, or pass --tapsplice PATH / set TAPSPLICE_BIN",
            p.display(),
            how
        );
    }
    Ok(p)
}

/// `prog` itself when it names a path, else the first match on `$PATH`.
pub(crate) fn find_in_path(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog)).filter(|p| p.is_file());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

/// The placement of one port for this run.
#[derive(Debug, Clone)]
struct Placement {
    port: RackPort,
    /// The interface that is placed: the TAP, or a socket port's veth peer.
    tap: String,
    /// A socket port (net_af_packet, net_af_xdp): the veth's root end, which the PMD reads.
    veth_root: Option<String>,
    place: AppliancePort,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplianceResult {
    pub name: String,
    pub kind: ApplianceKind,
    pub ready_s: f64,
    pub exit: String,
    pub killed_by_fault: bool,
    pub error: Option<String>,
    /// tapsplice: its --report-json; testpmd: port counters parsed from its output.
    pub report: Option<Value>,
    /// tapsplice: its event log (`tapsplice ctl events`) just before it was stopped:
    /// peers up and down, balance members joining and leaving the table, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Value>,
    pub log: String,
}

pub struct RunningAppliance {
    pub name: String,
    pub kind: ApplianceKind,
    child: Child,
    pid: i32,
    stop_timeout: Duration,
    report_path: PathBuf,
    log_path: PathBuf,
    tail: Arc<Mutex<VecDeque<String>>>,
    ready_s: f64,
    file_prefix: String,
    placements: Vec<Placement>,
    killed_by_fault: bool,
    /// The UDP port of the run's `node.mgmt` (heartbeats), when the config has one.
    pub heartbeat_port: Option<u16>,
    /// The `tapsplice ctl` socket of this run.
    pub ctl_socket: PathBuf,
    /// The tapsplice binary (for `ctl events` before stopping it).
    bin: Option<PathBuf>,
}

/// A child's output: the last lines, and its lines as they come.
pub(crate) struct Output {
    pub(crate) tail: Arc<Mutex<VecDeque<String>>>,
    pub(crate) lines: Receiver<String>,
}

/// Pumps the child's stdout and stderr into `log_path` (stderr lines tagged) and a tail;
/// stdout lines (and stderr lines too with `stderr_lines`) also go to `Output::lines`.
pub(crate) fn capture(child: &mut Child, log_path: &Path, stderr_lines: bool) -> Result<Output> {
    let log = Arc::new(Mutex::new(
        std::fs::File::create(log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?,
    ));
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = mpsc::channel();
    let spawn =
        |r: Box<dyn std::io::Read + Send>, tag: &'static str, tx: Option<mpsc::Sender<String>>| {
            let log = log.clone();
            let tail = tail.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(r);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match r.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = strip_ansi(&String::from_utf8_lossy(&raw))
                        .trim_end()
                        .to_string();
                    if let Ok(mut f) = log.lock() {
                        let _ = writeln!(f, "{}{}", tag, line);
                    }
                    if let Ok(mut t) = tail.lock() {
                        t.push_back(line.clone());
                        if t.len() > 400 {
                            t.pop_front();
                        }
                    }
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            });
        };
    if let Some(o) = child.stdout.take() {
        spawn(Box::new(o), "", Some(tx.clone()));
    }
    if let Some(e) = child.stderr.take() {
        spawn(Box::new(e), "[stderr] ", stderr_lines.then_some(tx));
    }
    Ok(Output { tail, lines: rx })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn last_lines(tail: &Mutex<VecDeque<String>>, n: usize) -> String {
    let t = tail.lock().map(|t| t.clone()).unwrap_or_default();
    let v: Vec<String> = t
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .cloned()
        .collect();
    v.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Counts TAP ports over all appliances of a run so every TAP gets a unique name.
pub struct TapCounter(pub usize);

/// Start one appliance, wait until it runs, and move its TAPs into place.
pub fn start(
    topo: &Topology,
    app: &Appliance,
    kind: ApplianceKind,
    run: &RunId,
    bins: &Binaries,
    cli_sets: &BTreeMap<String, toml::Value>,
    taps: &mut TapCounter,
) -> Result<RunningAppliance> {
    let what = format!("appliance `{}`", app.name);
    let base_path = topo
        .resolve(&app.config)
        .map_err(|e| anyhow!("{}: {}", what, e))?;
    let base = rackconfig::load(&base_path).map_err(|e| anyhow!("{}: {}", what, e))?;
    let run_dir = run.run_dir();
    let file_prefix = run.file_prefix(&app.name);
    let ctl = run_dir.join(format!("{}.sock", app.name));
    let mut sets = app.set.clone();
    if kind == ApplianceKind::Tapsplice {
        sets.extend(cli_sets.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let first = taps.0;
    let tap_name = |k: usize| run.tap_ifname(first + k);
    let run_id = run.to_string();
    let run_dir_s = run_dir.to_string_lossy().into_owned();
    let (cfg, ports) = rackconfig::for_run(
        &base,
        &rackconfig::RunSettings {
            run_id: &run_id,
            run_dir: &run_dir_s,
            file_prefix: &file_prefix,
            ctl_socket: &ctl.to_string_lossy(),
            mgmt_port: rackconfig::free_udp_port().map_err(|e| anyhow!("{}: {}", what, e))?,
            tap_name: &tap_name,
            sets: &sets,
        },
    )
    .map_err(|e| anyhow!("{}: rack config {}: {}", what, base_path.display(), e))?;
    taps.0 += ports.iter().filter(|p| p.tap_ifname.is_some()).count();

    // Every TAP port must be placed, every placement must name a TAP port.
    let mut placements = Vec::new();
    for p in &app.ports {
        let rp = ports.iter().find(|rp| rp.name == p.port).ok_or_else(|| {
            anyhow!(
                "{}: rack config {} has no [[port]] named `{}`",
                what,
                base_path.display(),
                p.port
            )
        })?;
        let root = rp.tap_ifname.clone().ok_or_else(|| {
            anyhow!(
                "{}: port `{}` is `{}`, only net_tap, net_af_packet and net_af_xdp ports can be placed",
                what,
                p.port,
                rp.device
            )
        })?;
        // A socket port reads the root end of a veth pair (made below, before the
        // start); its other end is what gets placed. A TAP itself is placed.
        let (tap, veth_root) = if rackconfig::is_veth_port(&rp.device) { (format!("{root}-p"), Some(root)) } else { (root, None) };
        placements.push(Placement {
            port: rp.clone(),
            tap,
            veth_root,
            place: p.clone(),
        });
    }
    for rp in &ports {
        if rp.tap_ifname.is_some() && !app.ports.iter().any(|p| p.port == rp.name) {
            bail!("{}: port `{}` of the rack config is not placed by the topology (add an [[appliance.port]])", what, rp.name);
        }
    }
    for p in &placements {
        if let Some(root) = &p.veth_root {
            guard::add_root_iface(root);
            veth_for_socket_port(root, &p.tap, &run_dir).map_err(|e| anyhow!("{}: port `{}`: {:#}", what, p.port.name, e))?;
        }
    }

    // vhost-user sockets: inside the run directory they go with it; elsewhere they are
    // recorded (guard, and /run/testbed/<id>.sockets for `testbed cleanup`).
    for rp in &ports {
        if let Some(sock) = &rp.socket {
            if !Path::new(sock).starts_with(&run_dir) {
                guard::add_socket(run, Path::new(sock))
                    .map_err(|e| anyhow!("{}: port `{}`: {:#}", what, rp.name, e))?;
            }
        }
    }

    let cfg_path = run_dir.join(format!("{}.toml", app.name));
    let text =
        toml::to_string(&cfg).map_err(|e| anyhow!("{}: cannot write config: {}", what, e))?;
    std::fs::write(&cfg_path, text)
        .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    let report_path = run_dir.join(format!("{}.report.json", app.name));
    let log_path = run_dir.join(format!("{}.{}.log", app.name, kind.as_str()));

    let mut cmd = match kind {
        ApplianceKind::Tapsplice => {
            let bin = bins
                .tapsplice
                .clone()
                .ok_or_else(|| anyhow!("{}: no tapsplice binary", what))?;
            let mut c = Command::new(bin);
            c.arg("run")
                .arg("--config")
                .arg(&cfg_path)
                .arg("--report-json")
                .arg(&report_path);
            c
        }
        ApplianceKind::Testpmd => {
            let bin = find_in_path(&bins.testpmd).ok_or_else(|| {
                anyhow!("{}: `{}` not found: install dpdk (apt-get install dpdk) or pass --testpmd PATH", what, bins.testpmd)
            })?;
            let mut c = Command::new(bin);
            c.args(
                testpmd_args(&cfg, &ports, &file_prefix).map_err(|e| anyhow!("{}: {}", what, e))?,
            );
            c
        }
    };
    // Own process group: a terminal Ctrl-C reaches the testbed only, which then stops the
    // appliance in order (and collects its report).
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // If the testbed dies without cleaning up (SIGKILL), the appliance gets SIGTERM.
    // (PDEATHSIG follows the spawning thread: appliances are started from the main thread.)
    let nice = app.nice;
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            // Threads created later (the lcores) inherit it.
            if nice != 0 && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    for p in &placements {
        guard::add_root_iface(&p.tap);
    }
    guard::add_dpdk_prefix(&file_prefix);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{}: cannot start {}", what, kind.as_str()))?;
    let pid = child.id() as i32;
    guard::add_child(pid, &app.name);
    let out = capture(&mut child, &log_path, false)?;
    let mut ra = RunningAppliance {
        name: app.name.clone(),
        kind,
        child,
        pid,
        stop_timeout: Duration::from_secs_f64(app.stop_timeout_s),
        report_path,
        log_path,
        tail: out.tail.clone(),
        ready_s: 0.0,
        file_prefix,
        placements,
        killed_by_fault: false,
        heartbeat_port: rackconfig::get_str(&cfg, "node.mgmt")
            .and_then(|m| m.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.port()),
        ctl_socket: ctl.clone(),
        bin: match kind {
            ApplianceKind::Tapsplice => bins.tapsplice.clone(),
            ApplianceKind::Testpmd => None,
        },
    };

    // Wait for the ready line, then for the TAP interfaces.
    let ready_timeout = Duration::from_secs_f64(app.ready_timeout_s);
    let deadline = t0 + ready_timeout;
    let marker = match kind {
        ApplianceKind::Tapsplice => READY_LINE,
        ApplianceKind::Testpmd => TESTPMD_READY,
    };
    loop {
        if crate::guard::interrupted() {
            bail!("interrupted");
        }
        if let Some(st) = ra.child.try_wait()? {
            std::thread::sleep(Duration::from_millis(50));
            bail!(
                "{}: {} exited before it was running ({}): {}",
                what,
                kind.as_str(),
                st,
                last_lines(&ra.tail, 4)
            );
        }
        match out.lines.recv_timeout(Duration::from_millis(50)) {
            Ok(l) if l.contains(marker) => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(50))
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{}: no `{}` line within {:.0} s (log {}): {}",
                what,
                marker,
                ready_timeout.as_secs_f64(),
                ra.log_path.display(),
                last_lines(&ra.tail, 4)
            );
        }
    }
    // Keep draining stdout (the reader thread owns the pipe; the channel just fills).
    std::thread::spawn(move || for _ in out.lines {});
    for p in &ra.placements {
        while !netns::root_link_exists(&p.tap) {
            if Instant::now() > deadline {
                bail!(
                    "{}: TAP interface {} of port `{}` did not appear",
                    what,
                    p.tap,
                    p.port.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    ra.ready_s = t0.elapsed().as_secs_f64();
    for p in &ra.placements {
        place(run, p).map_err(|e| anyhow!("{}: placing port `{}`: {:#}", what, p.port.name, e))?;
    }
    if kind == ApplianceKind::Tapsplice {
        // What `ctl ports` says in the first moments can predate the placement: a TAP is
        // up in the root namespace (DPDK brings it up), goes down as it moves and comes
        // up again in its namespace, and the appliance reads links every 50 ms (`ctl`
        // shows what its workers last read).
        std::thread::sleep(LINK_READ_LAG);
        wait_links_up(&ra, Instant::now() + LINKS_UP_WAIT);
    }
    Ok(ra)
}

/// How long a started tapsplice may take to see its placed ports' links up.
const LINKS_UP_WAIT: Duration = Duration::from_secs(5);

/// How old the link states `ctl ports` shows can be: the appliance's link poll (50 ms),
/// with a margin.
const LINK_READ_LAG: Duration = Duration::from_millis(120);

/// Waits until the appliance reads every placed port's link as up (`ctl ports`). It reads
/// links every 50 ms and drops what it has for a port whose link it last read as down
/// (`link_down`): a workload started at once could lose its first SYNs there, and each
/// costs the client a 1 s retransmission (a bench of a few seconds then measures the
/// wait). Past the bound it says which ports and goes on: a topology may place a port
/// whose link is down on purpose.
fn wait_links_up(ra: &RunningAppliance, until: Instant) {
    let Ok(bin) = locate_tapsplice(ra.bin.as_deref()) else { return };
    let placed: Vec<&str> = ra.placements.iter().map(|p| p.port.name.as_str()).collect();
    loop {
        // A port not listed yet (the first answers can come before the ports are) is not
        // up either.
        let down: Vec<String> = match crate::ctl::json(&bin, &ra.ctl_socket, "ports") {
            Ok(v) => {
                let up = |name: &str| v["ports"].as_array().is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["link"]["up"] == true));
                placed.iter().filter(|n| !up(n)).map(|n| n.to_string()).collect()
            }
            Err(e) => vec![format!("(ctl ports: {e:#})")],
        };
        if down.is_empty() {
            return;
        }
        if Instant::now() > until {
            eprintln!("testbed: {}: links not seen up by the appliance within {} s: {}; going on", ra.name, LINKS_UP_WAIT.as_secs(), down.join(", "));
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The veth pair of a socket port (net_af_packet, net_af_xdp): `root` stays in the root
/// namespace for the PMD, `peer` is placed like a TAP. The root kernel must not act on the
/// frames the PMD reads there: they are dropped at its ingress
/// ([`crate::network::drop_ingress`]), and besides IPv6 is off, ARP is never answered and
/// forwarding is off on it. The peer has no offloads: a socket port passes a frame's bytes
/// on as they are, so the kernel must finish checksums and segments before they cross.
fn veth_for_socket_port(root: &str, peer: &str, run_dir: &Path) -> Result<()> {
    crate::cmd::ip(&["link", "add", root, "type", "veth", "peer", "name", peer])?;
    crate::network::no_offloads(None, peer)?;
    for (key, value) in [
        (format!("net/ipv4/conf/{root}/forwarding"), "0"),
        (format!("net/ipv4/conf/{root}/arp_ignore"), "8"),
        (format!("net/ipv6/conf/{root}/disable_ipv6"), "1"),
    ] {
        std::fs::write(format!("/proc/sys/{key}"), value).with_context(|| format!("/proc/sys/{key}"))?;
    }
    crate::network::drop_ingress(root, run_dir)?;
    crate::cmd::ip(&["link", "set", root, "up"])?;
    Ok(())
}

/// Removes what [`veth_for_socket_port`] made (the pair goes with its root end).
fn remove_veth_for_socket_port(root: &str) {
    if let Err(e) = crate::cmd::ip(&["link", "del", root]) {
        eprintln!("testbed: removing veth {}: {:#}", root, e);
    }
    let _ = crate::network::undo_drop_ingress(root);
}

fn place(run: &RunId, p: &Placement) -> Result<()> {
    let pl = &p.place;
    let (ns, ifname, master) = match (&pl.ns, &pl.bridge) {
        (Some(ns), _) => (
            run.netns(ns),
            pl.ifname.clone().unwrap_or_else(|| pl.port.clone()),
            None,
        ),
        (None, Some(br)) => (
            run.fabric_ns(),
            pl.ifname.clone().unwrap_or_else(|| p.tap.clone()),
            Some(br.as_str()),
        ),
        (None, None) => bail!("no ns or bridge"),
    };
    netns::move_from_root(&p.tap, &ns, &ifname)?;
    // net_tap gives the kernel side of a TAP the port's own MAC. On a bridge that MAC
    // becomes a local (permanent) address of the bridge, which then delivers frames for
    // the appliance to itself instead of into the TAP: give the kernel side another one.
    let bridge_mac = match (&pl.mac, master) {
        (None, Some(_)) => Some(random_laa_mac()),
        _ => None,
    };
    netns::configure(
        &ns,
        &ifname,
        &IfConfig {
            mtu: pl.mtu,
            mac: pl.mac.as_deref().or(bridge_mac.as_deref()),
            address: pl.address.as_deref(),
            master,
        },
    )
}

/// A random locally administered unicast MAC (`x2:..`, `x6:..`, `xa:..`, `xe:..`).
fn random_laa_mac() -> String {
    use std::io::Read;
    let mut b = [0u8; 6];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        b[..6].copy_from_slice(&crate::runid::splitmix(t).to_le_bytes()[..6]);
    }
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter()
        .map(|x| format!("{:02x}", x))
        .collect::<Vec<_>>()
        .join(":")
}

fn testpmd_args(cfg: &toml::Table, ports: &[RackPort], file_prefix: &str) -> Result<Vec<String>> {
    use rackconfig::{get_bool, get_int, get_str};
    let mut a = vec![
        "-l".to_string(),
        get_str(cfg, "eal.lcores").unwrap_or("0,1").to_string(),
        "-m".into(),
        get_int(cfg, "eal.memory_mb").unwrap_or(256).to_string(),
    ];
    if !get_bool(cfg, "eal.hugepages").unwrap_or(false) {
        a.push("--no-huge".into());
    }
    a.push("--no-pci".into());
    a.push("--file-prefix".into());
    a.push(file_prefix.into());
    for p in ports {
        if !p.device.starts_with("net_") {
            bail!(
                "testpmd mode supports vdev ports only, port `{}` is `{}`",
                p.name,
                p.device
            );
        }
        a.push("--vdev".into());
        a.push(if p.args.is_empty() {
            p.device.clone()
        } else {
            format!("{},{}", p.device, p.args)
        });
    }
    a.push("--".into());
    a.push("--forward-mode=io".into());
    a.push("--stats-period".into());
    a.push("1".into());
    a.push(format!(
        "--total-num-mbufs={}",
        get_int(cfg, "mempool.mbufs").unwrap_or(8191)
    ));
    if let Some(b) = get_int(cfg, "workers.burst") {
        a.push(format!("--burst={}", b));
    }
    // Rings as large as the appliance's where the rack sizes them (testpmd has one
    // --rxd / --txd for every port: the largest), so that both forward through the same
    // rings; otherwise each keeps its own default.
    for (key, flag) in [("rx_desc", "--rxd"), ("tx_desc", "--txd")] {
        let ring = cfg.get("port").and_then(|v| v.as_array()).and_then(|ps| ps.iter().filter_map(|p| p.get(key).and_then(|v| v.as_integer())).max());
        if let Some(d) = ring {
            a.push(format!("{flag}={d}"));
        }
    }
    Ok(a)
}

/// Parse testpmd's final "Forward statistics for port N" blocks.
fn testpmd_report(lines: &[String], ports: &[String]) -> Option<Value> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        if let Some(rest) = l.split("Forward statistics for port").nth(1) {
            let idx: usize = rest.split_whitespace().next()?.parse().ok()?;
            let field = |line: &str, key: &str| -> Option<u64> {
                line.split(key)
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            };
            let rx = lines.get(i + 1)?;
            let tx = lines.get(i + 2)?;
            out.push(json!({
                "name": ports.get(idx).cloned().unwrap_or_else(|| format!("port{}", idx)),
                "rx_packets": field(rx, "RX-packets:")?,
                "rx_dropped": field(rx, "RX-dropped:")?,
                "tx_packets": field(tx, "TX-packets:")?,
                "tx_dropped": field(tx, "TX-dropped:")?,
            }));
            i += 3;
        } else {
            i += 1;
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(json!({ "ports": out }))
    }
}

impl RunningAppliance {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn mark_killed_by_fault(&mut self) {
        self.killed_by_fault = true;
    }

    /// The appliance's event log (`tapsplice ctl --json events`), while it runs.
    fn events(&mut self) -> Option<Value> {
        let bin = self.bin.as_ref()?;
        if !matches!(self.child.try_wait(), Ok(None)) {
            return None;
        }
        let out = crate::cmd::run(
            &bin.to_string_lossy(),
            &[
                "ctl",
                "--socket",
                &self.ctl_socket.to_string_lossy(),
                "--json",
                "events",
            ],
            Duration::from_secs(5),
        )
        .ok()?;
        let v: Value = serde_json::from_str(out.trim()).ok()?;
        Some(v.get("events").cloned().unwrap_or(v))
    }

    /// SIGINT, wait for the exit (bounded), collect the report.
    pub fn stop(mut self) -> ApplianceResult {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let events = self.events();
        let mut error = None;
        let status = match self.child.try_wait() {
            Ok(Some(st)) => Some(st),
            _ => {
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGINT);
                let deadline = Instant::now() + self.stop_timeout;
                loop {
                    match self.child.try_wait() {
                        Ok(Some(st)) => break Some(st),
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Ok(None) => {
                            error = Some(format!(
                                "did not exit within {:.0} s of SIGINT; killed",
                                self.stop_timeout.as_secs_f64()
                            ));
                            let _ = self.child.kill();
                            break self.child.wait().ok();
                        }
                        Err(e) => {
                            error = Some(format!("wait: {}", e));
                            break None;
                        }
                    }
                }
            }
        };
        guard::forget_child(self.pid);
        // A TAP goes with its appliance; a socket port's veth pair is ours to remove
        // (its placed end would stay on its bridge).
        for root in self.placements.iter().filter_map(|p| p.veth_root.as_deref()) {
            remove_veth_for_socket_port(root);
        }
        // Let the output threads drain.
        std::thread::sleep(Duration::from_millis(100));
        guard::remove_dpdk_files(&self.file_prefix);
        let exit = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into());
        let ok_exit = status.map(|s| s.success()).unwrap_or(false);
        if error.is_none() && !ok_exit && !self.killed_by_fault {
            error = Some(format!(
                "exited with {}: {}",
                exit,
                last_lines(&self.tail, 3)
            ));
        }
        let report = match self.kind {
            ApplianceKind::Tapsplice => match std::fs::read_to_string(&self.report_path) {
                Ok(t) => match serde_json::from_str::<Value>(&t) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        error.get_or_insert(format!(
                            "report {} is not JSON: {}",
                            self.report_path.display(),
                            e
                        ));
                        None
                    }
                },
                Err(_) if self.killed_by_fault => None,
                Err(e) => {
                    error.get_or_insert(format!(
                        "no report at {}: {}",
                        self.report_path.display(),
                        e
                    ));
                    None
                }
            },
            ApplianceKind::Testpmd => {
                let lines: Vec<String> = self
                    .tail
                    .lock()
                    .map(|t| t.iter().cloned().collect())
                    .unwrap_or_default();
                let names: Vec<String> = self
                    .placements
                    .iter()
                    .map(|p| p.port.name.clone())
                    .collect();
                testpmd_report(&lines, &names)
            }
        };
        ApplianceResult {
            name: self.name.clone(),
            kind: self.kind,
            ready_s: (self.ready_s * 1000.0).round() / 1000.0,
            exit,
            killed_by_fault: self.killed_by_fault,
            error,
            report,
            events,
            log: self.log_path.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_testpmd_stats() {
        let text = "  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 6              RX-dropped: 0             RX-total: 6
  TX-packets: 7              TX-dropped: 0             TX-total: 7
  ----------------------------------------------------------------------------
  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 7              RX-dropped: 1             RX-total: 7
  TX-packets: 6              TX-dropped: 0             TX-total: 6";
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let r = testpmd_report(&lines, &["west".into(), "east".into()]).unwrap();
        assert_eq!(r["ports"][0]["name"], "west");
        assert_eq!(r["ports"][0]["tx_packets"], 7);
        assert_eq!(r["ports"][1]["rx_dropped"], 1);
    }

    #[test]
    fn testpmd_takes_the_racks_rings_where_it_sizes_them() {
        let ports = vec![RackPort { name: "a".into(), device: "net_af_xdp0".into(), args: "iface=x0".into(), tap_ifname: Some("x0".into()), socket: None }];
        let sized: toml::Table = toml::from_str("[[port]]\nrx_desc = 2048\ntx_desc = 512\n[[port]]\nrx_desc = 1024\n").unwrap();
        let a = testpmd_args(&sized, &ports, "p").unwrap();
        assert!(a.contains(&"--rxd=2048".to_string()) && a.contains(&"--txd=512".to_string()), "{a:?}");
        assert!(a.contains(&"net_af_xdp0,iface=x0".to_string()), "{a:?}");
        let unsized_: toml::Table = toml::from_str("[[port]]\nname = \"a\"\n").unwrap();
        let a = testpmd_args(&unsized_, &ports, "p").unwrap();
        assert!(!a.iter().any(|x| x.starts_with("--rxd") || x.starts_with("--txd")), "testpmd keeps its defaults: {a:?}");
    }

    #[test]
    fn strips_ansi() {
        assert_eq!(
            strip_ansi("\u{1b}[2J\u{1b}[1;1HPort statistics"),
            "Port statistics"
        );
    }
}
