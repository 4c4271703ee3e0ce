//! A running appliance with a `[[peer]]` and the real `tapsplice agent` on loopback: the
//! detector marks the peer up from its authenticated heartbeats, `tapsplice ctl peers` and
//! the metrics show it; `tapsplice ctl fence web1 --yes-really` powers web1 off through
//! the testbed power switch (which kills the agent), and the peer is declared down within
//! (K + 1) heartbeat intervals of its last heartbeat (events in `tapsplice ctl events`).

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

/// web1's state, once the appliance has published its first view of the peers.
fn peer_state(socket: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = ctl(socket, "peers");
        let peers = v["peers"].as_array().or_else(|| v.as_array()).cloned().unwrap_or_default();
        if let Some(p) = peers.iter().find(|p| p["node"] == "web1" || p["peer"] == "web1") {
            return p["state"].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "no web1 in {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_fenced_agent_is_detected_down_within_k_plus_one_intervals() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test starts DPDK: run it as root");
    let dir: PathBuf = std::env::temp_dir().join(format!("tapsplice-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("rack.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (app_port, agent_port) = (free_udp_port(), free_udp_port());
    let pid = std::process::id() % 100000;
    let socket = dir.join("ctl.sock");
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/forward.toml")).unwrap();
    let rack = base
        .replace("iface=tsw0", &format!("iface=tpw{pid}"))
        .replace("iface=tse0", &format!("iface=tpe{pid}"))
        .replace("\"tapsplice-fw1\"", &format!("\"tspeers-{pid}\""))
        .replace("/run/tapsplice/fw1.sock", &socket.display().to_string())
        .replace("127.0.0.1:9464", "127.0.0.1:0")
        .replacen("roles = [\"forward\"]", &format!("roles = [\"forward\"]\nmgmt = \"127.0.0.1:{app_port}\""), 1)
        + &format!(
            "\n[[peer]]\nid = \"web1\"\nclass = \"server\"\nmgmt = \"127.0.0.1:{agent_port}\"\n\n[timers]\nheartbeat_interval_ms = 10\nmissed_intervals = 3\n\n[keys]\nrack_key = \"{}\"\n",
            key.display()
        );
    // web1 is the primary of a server pair whose fence device is the testbed power switch.
    let switch = dir.join("switch");
    std::fs::create_dir_all(&switch).unwrap();
    std::fs::write(switch.join("web1.state"), "on\n").unwrap();
    let agent_script = concat!(env!("CARGO_MANIFEST_DIR"), "/../testbed/fence/fence_testbed");
    let rack = rack
        + &format!(
            "\n[[peer]]\nid = \"web2\"\nclass = \"server\"\nmgmt = \"127.0.0.1:{}\"\n\n[[server]]\nname = \"web\"\nvia = \"east\"\nprimary = \"web1\"\nbackup = \"web2\"\nfence = \"sim\"\nfence_plug = \"web1\"\n\n[[fence_device]]\nname = \"sim\"\nagent = \"{agent_script}\"\nparameters = {{ switch_dir = \"{}\" }}\ntimeout_ms = 5000\n",
            free_udp_port(),
            switch.display()
        );
    let rack_path = dir.join("rack.toml");
    std::fs::write(&rack_path, rack).unwrap();
    let agent_path = dir.join("agent.toml");
    std::fs::write(
        &agent_path,
        format!(
            "[agent]\nid = \"web1\"\nrack_key = \"{}\"\nbind = \"127.0.0.1:{agent_port}\"\nappliances = [\"127.0.0.1:{app_port}\"]\ninterval_ms = 10\n",
            key.display()
        ),
    )
    .unwrap();

    let _appliance = start(&["run", "--config"], &rack_path, "tapsplice: running");
    assert_eq!(peer_state(&socket), "unknown", "a peer never heard from is unknown, not down");
    let agent = start(&["agent", "--config"], &agent_path, "tapsplice agent: running");
    // The switch kills what runs on web1's plug when it powers it off: the agent.
    std::fs::write(switch.join("web1.pids"), format!("{}\n", agent.0.id())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_state(&socket) != "up" {
        assert!(Instant::now() < deadline, "peer never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A manual fence from the ctl: refused without confirmation, then done and verified.
    let out = Command::new(BIN).args(["ctl", "--socket"]).arg(&socket).args(["fence", "web1"]).output().unwrap();
    assert!(!out.status.success(), "fence without --yes-really must be refused");
    let f = ctl_args(&socket, &["fence", "web1", "--yes-really"]);
    assert_eq!(f["outcome"], "off_verified", "{f}");
    assert_eq!(std::fs::read_to_string(switch.join("web1.state")).unwrap().trim(), "off");
    let mut agent = agent;
    let status = agent.0.wait().unwrap();
    assert!(!status.success(), "the power switch should have killed the agent: {status:?}");
    std::mem::forget(agent); // already reaped: its Drop must not signal a reused pid
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_state(&socket) != "down" {
        assert!(Instant::now() < deadline, "peer never went down");
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = ctl(&socket, "events");
    let list = events["events"].as_array().or_else(|| events.as_array()).cloned().unwrap_or_default();
    assert!(list.iter().any(|e| e["kind"] == "fence_ok" && e["node"] == "web1"), "no fence_ok event: {events}");
    let down = list.iter().find(|e| e["kind"] == "peer_down").unwrap_or_else(|| panic!("no peer_down event: {events}"));
    let msg = down["message"].as_str().unwrap();
    // "... no heartbeat for 32.1 ms (3 intervals)": the silence when declared.
    let ms: f64 = msg.split("no heartbeat for ").nth(1).and_then(|r| r.split(" ms").next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("cannot read the silence from {msg:?}"));
    println!("peer declared down after {ms} ms of silence (interval 10 ms, K = 3)");
    assert!(ms >= 30.0, "declared down before K intervals: {msg}");
    // (K+1) intervals is the design bound; a shared 2-core machine gets generous slack.
    assert!(ms <= 40.0 + 60.0, "declared down too late: {msg}");
}
