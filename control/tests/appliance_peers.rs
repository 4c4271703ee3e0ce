//! A running appliance with `[[peer]]`s and the real `tapsplice agent` on loopback: the
//! detector marks a peer up from its authenticated heartbeats, `tapsplice ctl peers` and
//! the metrics show it; `tapsplice ctl fence web1 --yes-really` powers web1 off through
//! the testbed power switch (which kills the agent), and the peer is declared down within
//! (K + 1) heartbeat intervals of its last heartbeat (events in `tapsplice ctl events`).
//! Automatic fencing: when the primary of a `[[server]]` pair dies, the appliance powers
//! it off by itself and permits the promotion only after a verified off; a fence that
//! hangs leaves the pair refused and the switch on.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tapsplice");

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(args: &[&str], cfg: &Path, ready: &str) -> Proc {
    let mut child = Command::new(BIN).args(args).arg(cfg).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) if l.contains(ready) => return Proc(child),
            Some(_) => continue,
            None => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{args:?} never printed {ready:?}");
}

fn ctl(socket: &Path, cmd: &str) -> Value {
    ctl_args(socket, &[cmd])
}

fn ctl_args(socket: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN).args(["ctl", "--socket"]).arg(socket).arg("--json").args(args).output().unwrap();
    assert!(out.status.success(), "ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ctl {args:?} json: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A rack in a temporary directory: the forward example plus heartbeats with agents on
/// loopback for web1 and web2, a `[[server]]` pair (primary web1, backup web2) fenced by
/// the testbed power switch, and metrics on a known port.
struct Rack {
    dir: PathBuf,
    socket: PathBuf,
    switch: PathBuf,
    rack: PathBuf,
    agents: [PathBuf; 2],
    metrics: u16,
    /// With `inband`: the east TAP interface and the address its kernel side gets.
    inband: Option<(String, String)>,
}

impl Rack {
    /// `fence_params` are extra parameters of the fence device (faults). With `inband`,
    /// web1 heartbeats only in-band: it has no `mgmt`, the rack names it on port east
    /// (whose kernel side, in this namespace, is web1's address) and its agent sends to the
    /// appliance's east address.
    fn new(tag: &str, fence_params: &str, timeout_ms: u32, attempts: u32, inband: bool) -> Rack {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test starts DPDK: run it as root");
        let dir: PathBuf = std::env::temp_dir().join(format!("tapsplice-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("rack.key");
        std::fs::write(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (app_port, web1, web2) = (free_udp_port(), free_udp_port(), free_udp_port());
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let n = std::process::id() % 10000;
        let t = &tag[..2];
        let socket = dir.join("ctl.sock");
        let switch = dir.join("switch");
        std::fs::create_dir_all(&switch).unwrap();
        std::fs::write(switch.join("web1.state"), "on\n").unwrap();
        let net = format!("10.77.{}", 20 + std::process::id() % 200);
        let (web1_peer, web1_agent, appliance_for_web1) = if inband {
            (
                format!("inband_port = \"east\"\ninband_address = \"{net}.1\""),
                format!("{net}.1:{web1}"),
                format!("{net}.2:{app_port}"),
            )
        } else {
            (format!("mgmt = \"127.0.0.1:{web1}\""), format!("127.0.0.1:{web1}"), format!("127.0.0.1:{app_port}"))
        };
        let agent_script = concat!(env!("CARGO_MANIFEST_DIR"), "/../testbed/fence/fence_testbed");
        let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/forward.toml")).unwrap();
        let rack = base
            .replace("iface=tsw0", &format!("iface={t}w{n}"))
            .replace("iface=tse0", &format!("iface={t}e{n}"))
            .replace("\"tapsplice-fw1\"", &format!("\"ts{tag}-{n}\""))
            .replace("/run/tapsplice/fw1.sock", &socket.display().to_string())
            .replace("127.0.0.1:9464", &format!("127.0.0.1:{metrics}"))
            .replace("addresses = [\"10.99.0.253/24\"]", &format!("addresses = [\"{net}.2/24\"]"))
            .replacen("roles = [\"forward\"]", &format!("roles = [\"forward\"]\nmgmt = \"127.0.0.1:{app_port}\""), 1)
            + &format!(
                "\n[[peer]]\nid = \"web1\"\nclass = \"server\"\n{web1_peer}\n\n\
                 [[peer]]\nid = \"web2\"\nclass = \"server\"\nmgmt = \"127.0.0.1:{web2}\"\n\n\
                 [timers]\nheartbeat_interval_ms = 10\nmissed_intervals = 3\n\n[keys]\nrack_key = \"{key}\"\n\n\
                 [[server]]\nname = \"web\"\nvia = \"east\"\nprimary = \"web1\"\nbackup = \"web2\"\nfence = \"sim\"\nfence_plug = \"web1\"\n\n\
                 [[fence_device]]\nname = \"sim\"\nagent = \"{agent_script}\"\n\
                 parameters = {{ switch_dir = \"{sw}\"{fence_params} }}\ntimeout_ms = {timeout_ms}\nattempts = {attempts}\n",
                key = key.display(),
                sw = switch.display(),
            );
        let rack_path = dir.join("rack.toml");
        std::fs::write(&rack_path, rack).unwrap();
        let web2_agent = (format!("127.0.0.1:{web2}"), format!("127.0.0.1:{app_port}"));
        let agents = [("web1", (web1_agent, appliance_for_web1)), ("web2", web2_agent)].map(|(id, (bind, to))| {
            let p = dir.join(format!("{id}.toml"));
            std::fs::write(
                &p,
                format!(
                    "[agent]\nid = \"{id}\"\nrack_key = \"{}\"\nbind = \"{bind}\"\nappliances = [\"{to}\"]\ninterval_ms = 10\n",
                    key.display()
                ),
            )
            .unwrap();
            p
        });
        let inband = inband.then(|| (format!("{t}e{n}"), format!("{net}.1/24")));
        Rack { dir, socket, switch, rack: rack_path, agents, metrics, inband }
    }

    /// Starts the appliance; with `inband`, then gives the east TAP's kernel side web1's
    /// address (the interface exists only once the appliance runs).
    fn appliance(&self) -> Proc {
        let p = start(&["run", "--config"], &self.rack, "tapsplice: running");
        if let Some((iface, addr)) = &self.inband {
            for args in [vec!["addr", "add", addr, "dev", iface], vec!["link", "set", iface, "up"]] {
                let out = Command::new("ip").args(&args).output().unwrap();
                assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        p
    }

    /// Starts web1's (0) or web2's (1) agent; web1's pid goes on the switch's plug.
    fn agent(&self, i: usize) -> Proc {
        let a = start(&["agent", "--config"], &self.agents[i], "tapsplice agent: running");
        if i == 0 {
            std::fs::write(self.switch.join("web1.pids"), format!("{}\n", a.0.id())).unwrap();
        }
        a
    }

    fn wait_state(&self, node: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while peer_state_of(&self.socket, node) != want {
            assert!(Instant::now() < deadline, "{node} never became {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the pair's phase to become `want`; returns the `servers` row.
    fn wait_phase(&self, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = ctl(&self.socket, "servers");
            let row = v["pairs"][0].clone();
            if row["phase"] == want {
                return row;
            }
            assert!(Instant::now() < deadline, "pair never became {want}: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn events(&self) -> Vec<Value> {
        ctl(&self.socket, "events")["events"].as_array().cloned().unwrap_or_default()
    }

    fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    fn switch_state(&self) -> String {
        std::fs::read_to_string(self.switch.join("web1.state")).unwrap().trim().to_string()
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn peer_state_of(socket: &Path, node: &str) -> String {
    let v = ctl(socket, "peers");
    v["peers"].as_array().and_then(|ps| ps.iter().find(|p| p["node"] == node)).map_or(String::new(), |p| p["state"].as_str().unwrap_or_default().to_string())
}

/// Kills an agent with SIGKILL (a node that dies without a word) and reaps it.
fn kill(mut p: Proc) {
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(p.0.id() as i32, libc::SIGKILL) };
    let _ = p.0.wait();
    std::mem::forget(p);
}

#[test]
fn a_dead_primary_is_powered_off_automatically_and_only_then_promotable() {
    let rack = Rack::new("autofence", "", 5000, 2, false);
    let _appliance = rack.appliance();
    let web1 = rack.agent(0);
    let _web2 = rack.agent(1);
    rack.wait_state("web1", "up");
    rack.wait_state("web2", "up");
    assert_eq!(rack.wait_phase("serving")["primary_state"], "up");
    kill(web1);
    let row = rack.wait_phase("promotable");
    assert_eq!(rack.switch_state(), "off", "the switch must have powered web1 off");
    assert!(row["reason"].as_str().unwrap().contains("verified off"), "{row}");
    // The events tell the story in order: down, fencing, fence ok, promotion permitted.
    let kinds: Vec<String> = rack
        .events()
        .iter()
        .filter(|e| e["node"] == "web1")
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    let pos = |k: &str| kinds.iter().position(|x| x == k).unwrap_or_else(|| panic!("no {k} in {kinds:?}"));
    assert!(pos("peer_down") < pos("pair_fencing") && pos("pair_fencing") < pos("fence_ok") && pos("fence_ok") < pos("promotion_permitted"), "{kinds:?}");
    let text = rack.scrape();
    for needle in [
        "tapsplice_fence_attempts_total{target=\"web1\",device=\"sim\"} 1\n",
        "tapsplice_fence_results_total{target=\"web1\",device=\"sim\",result=\"verified_off\"} 1\n",
        "tapsplice_server_pair_phase{pair=\"web\",phase=\"promotable\"} 1\n",
        "tapsplice_detector_events_total{kind=\"peer_down\"} 1\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn a_fence_that_hangs_is_a_failed_fence_and_the_backup_is_never_promoted() {
    let rack = Rack::new("hangfence", ", hang = 1, fault_action = \"off\"", 300, 1, false);
    let _appliance = rack.appliance();
    let web1 = rack.agent(0);
    let _web2 = rack.agent(1);
    rack.wait_state("web1", "up");
    rack.wait_state("web2", "up");
    kill(web1);
    let row = rack.wait_phase("refused");
    assert!(row["reason"].as_str().unwrap().contains("FAILED"), "{row}");
    assert_eq!(rack.switch_state(), "on", "a hanging agent must not have switched web1 off");
    let events = rack.events();
    assert!(events.iter().any(|e| e["kind"] == "promotion_refused"), "{events:?}");
    assert!(!events.iter().any(|e| e["kind"] == "promotion_permitted"), "{events:?}");
    // Still refused a while later: nothing retries its way into a promotion.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ctl(&rack.socket, "servers")["pairs"][0]["phase"], "refused");
    let text = rack.scrape();
    assert!(text.contains("tapsplice_fence_results_total{target=\"web1\",device=\"sim\",result=\"timeout\"} 1\n"), "{text}");
}

#[test]
fn a_fenced_agent_is_detected_down_within_k_plus_one_intervals() {
    let rack = Rack::new("peers", "", 5000, 2, false);
    let socket = &rack.socket;
    let _appliance = rack.appliance();
    // A peer never heard from is unknown, not down (and unknown is never re-entered).
    rack.wait_state("web1", "unknown");
    // The switch kills what runs on web1's plug when it powers it off: the agent.
    let mut agent = rack.agent(0);
    rack.wait_state("web1", "up");
    // A manual fence from the ctl: refused without confirmation, then done and verified.
    let out = Command::new(BIN).args(["ctl", "--socket"]).arg(socket).args(["fence", "web1"]).output().unwrap();
    assert!(!out.status.success(), "fence without --yes-really must be refused");
    let f = ctl_args(socket, &["fence", "web1", "--yes-really"]);
    assert_eq!(f["outcome"], "off_verified", "{f}");
    assert_eq!(rack.switch_state(), "off");
    let status = agent.0.wait().unwrap();
    assert!(!status.success(), "the power switch should have killed the agent: {status:?}");
    std::mem::forget(agent); // already reaped: its Drop must not signal a reused pid
    rack.wait_state("web1", "down");
    let list = rack.events();
    assert!(list.iter().any(|e| e["kind"] == "fence_ok" && e["node"] == "web1"), "no fence_ok event: {list:?}");
    let down = list.iter().find(|e| e["kind"] == "peer_down").unwrap_or_else(|| panic!("no peer_down event: {list:?}"));
    let msg = down["message"].as_str().unwrap();
    // "... no heartbeat for 32.1 ms (3 intervals)": the silence when declared.
    let ms: f64 = msg.split("no heartbeat for ").nth(1).and_then(|r| r.split(" ms").next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("cannot read the silence from {msg:?}"));
    println!("peer declared down after {ms} ms of silence (interval 10 ms, K = 3)");
    assert!(ms >= 30.0, "declared down before K intervals: {msg}");
    // (K+1) intervals is the design bound; a shared 2-core machine gets generous slack.
    assert!(ms <= 40.0 + 60.0, "declared down too late: {msg}");
    // A verified manual fence of the primary also permits its backup's promotion.
    rack.wait_phase("promotable");
}

#[test]
fn a_peer_heard_only_in_band_comes_up_and_the_appliance_heartbeats_back_in_band() {
    let rack = Rack::new("inband", "", 5000, 2, true);
    let _appliance = rack.appliance();
    let (iface, addr) = rack.inband.clone().unwrap();
    let web1_ip = addr.trim_end_matches("/24").to_string();
    // The appliance's in-band heartbeats to web1 go to its heartbeat port on web1's address.
    let app_port: u16 = std::fs::read_to_string(&rack.rack).unwrap().split("mgmt = \"127.0.0.1:").nth(1).unwrap()[..5]
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap();
    let listener = UdpSocket::bind((web1_ip.as_str(), app_port)).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let web1 = rack.agent(0);
    rack.wait_state("web1", "up");
    let text = rack.scrape();
    let received = metric(&text, "tapsplice_heartbeats_inband_received_total");
    assert!(received > 0.0, "web1 has no mgmt path: it can only be up through the dataplane\n{text}");
    // ARP resolved web1's MAC (the kernel answered), and heartbeats arrive on its address.
    let mut buf = [0u8; 2048];
    let (n, from) = listener.recv_from(&mut buf).unwrap_or_else(|e| panic!("no in-band heartbeat from the appliance on {iface}: {e}"));
    assert!(n > 32 && buf[..n].windows(3).any(|w| w == b"fw1"), "not a heartbeat from fw1: {n} bytes from {from}");
    assert!(metric(&rack.scrape(), "tapsplice_heartbeats_inband_sent_total") > 0.0);
    let text = rack.scrape();
    assert!(metric(&text, "tapsplice_lcore_punted_total") > 0.0);
    assert_eq!(metric(&text, "tapsplice_neighbours_wanted"), 1.0, "web1 is the one in-band peer\n{text}");
    assert_eq!(metric(&text, "tapsplice_neighbours_resolved"), 1.0, "{text}");
    assert!(metric(&text, "tapsplice_arp_requests_total") >= 1.0, "{text}");
    kill(web1);
    rack.wait_state("web1", "down");
}

/// The sum of a metric's samples in an exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
