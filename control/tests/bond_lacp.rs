//! A `[[bond]]` in 802.3ad (LACP) against an independent partner: the appliance's bond over
//! two `net_vhost` ports, and dpdk-testpmd with its own bonding device in mode 4 over the two
//! `net_virtio_user` ends. The appliance forwards the bond to a TAP port (role forward, pair
//! [uplink, lan]); testpmd sends UDP flows (flowgen) toward the appliance's bond MAC.
//!
//! Shown: LACP converges on both members (actor collecting + distributing, the partner's
//! system MAC is testpmd's bond MAC) with traffic on both; then testpmd takes one member
//! link away (it closes its end, as a pulled cable would be seen by vhost) and the bond
//! stops using that member while the traffic keeps flowing over the other one.
//!
//! testpmd quirks (see docs/balance.md, "Bonded uplinks"): its bonding device only speaks
//! LACP while its forwarding engine calls both rx and tx bursts, which only `flowgen` does;
//! `--portlist=2` keeps it from polling the member ports itself.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tapsplice");
/// testpmd's bond MAC (the partner's system id the appliance must learn).
const PARTNER_MAC: &str = "02:00:00:00:0b:00";

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut i) = self.stdin.take() {
            let _ = writeln!(i, "quit");
        }
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of a child's stdout and stderr, on one channel.
fn capture(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx2.send(l))));
    rx
}

fn wait_line(lines: &mpsc::Receiver<String>, what: impl Fn(&str) -> bool, limit: Duration, seen: &mut Vec<String>) -> Option<String> {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(l) => {
                seen.push(l.clone());
                if what(&l) {
                    return Some(l);
                }
            }
            Err(_) => break,
        }
    }
    None
}

fn ctl_ports(socket: &Path) -> Value {
    let out = Command::new(BIN).args(["ctl", "--socket"]).arg(socket).args(["--json", "ports"]).output().unwrap();
    assert!(out.status.success(), "ctl ports: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The bond's members from `ctl ports`.
fn members(socket: &Path) -> Vec<Value> {
    let v = ctl_ports(socket);
    let bond = v["ports"].as_array().unwrap().iter().find(|p| p["name"] == "uplink").expect("the bond is a port").clone();
    assert_eq!(bond["bond"]["mode"], "802.3ad", "{bond}");
    bond["bond"]["members"].as_array().unwrap().clone()
}

fn has(m: &Value, list: &str, flag: &str) -> bool {
    m[list].as_array().is_some_and(|a| a.iter().any(|f| f == flag))
}

fn rx_packets(iface: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/rx_packets")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Polls `cond` every 100 ms until it holds or `limit` passes.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tapsplice-bond-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn lacp_converges_with_an_independent_partner_and_survives_a_member_link_cut() {
    let dir = scratch();
    let id = std::process::id() % 100_000;
    let lan = format!("tsbl{id}");
    let socket = dir.join("ctl.sock");
    let (l0, l1) = (dir.join("l0.sock"), dir.join("l1.sock"));
    let cfg = dir.join("rack.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[node]
id = "bond1"
roles = ["forward"]

[eal]
lcores = "0,1"
memory_mb = 256
hugepages = false
file_prefix = "tsbond{id}"

[mempool]
mbufs = 8191

[[port]]
name = "m0"
device = "net_vhost0"
args = "iface={l0},queues=1"

[[port]]
name = "m1"
device = "net_vhost1"
args = "iface={l1},queues=1"

[[port]]
name = "lan"
device = "net_tap0"
args = "iface={lan}"

[[bond]]
name = "uplink"
mode = "802.3ad"
members = ["m0", "m1"]
xmit_hash = "l34"

[forward]
pairs = [["uplink", "lan"]]

[ctl]
socket = "{socket}"

[metrics]
enabled = false
"#,
            l0 = l0.display(),
            l1 = l1.display(),
            socket = socket.display()
        ),
    )
    .unwrap();

    let mut child = Command::new(BIN).args(["run", "--config"]).arg(&cfg).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let lines = capture(&mut child);
    let _appliance = Proc { child, stdin: None };
    let mut seen = Vec::new();
    let mac_line = wait_line(&lines, |l| l.contains("port uplink") && l.contains(" mac "), Duration::from_secs(30), &mut seen);
    let running = wait_line(&lines, |l| l.contains("tapsplice: running"), Duration::from_secs(30), &mut seen);
    assert!(running.is_some() && mac_line.is_some(), "the appliance did not come up: {seen:#?}");
    let mac_line = mac_line.unwrap();
    let our_mac = mac_line.split(" mac ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();

    // The partner: testpmd's own mode-4 bond over the virtio-user ends of both links.
    let mut tp = Command::new("dpdk-testpmd")
        .args(["--no-pci", "--no-huge", "-m", "256", "--file-prefix", &format!("tsbondp{id}"), "--lcores", "0@0,1@1"])
        .arg("--vdev")
        .arg(format!("net_virtio_user0,path={},queues=1,mac=02:00:00:00:0b:10", l0.display()))
        .arg("--vdev")
        .arg(format!("net_virtio_user1,path={},queues=1,mac=02:00:00:00:0b:11", l1.display()))
        .arg("--vdev")
        .arg(format!("net_bonding1,mode=4,slave=net_virtio_user0,slave=net_virtio_user1,xmit_policy=l34,mac={PARTNER_MAC}"))
        .args(["--", "-i", "--total-num-mbufs=16384", "--portlist=2", &format!("--eth-peer=2,{our_mac}"), "--forward-mode=flowgen"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dpdk-testpmd runs (scripts/setup.sh installs dpdk-dev)");
    let tp_lines = capture(&mut tp);
    let stdin = tp.stdin.take();
    let mut testpmd = Proc { child: tp, stdin };
    let mut tp_seen = Vec::new();
    // testpmd's stdout is block-buffered on a pipe: its last unbuffered start-up line is
    // the link check's; the commands below queue on stdin until its prompt reads them.
    assert!(wait_line(&tp_lines, |l| l.contains("Checking link statuses"), Duration::from_secs(30), &mut tp_seen).is_some(), "testpmd did not start: {tp_seen:#?}");
    let send = |p: &mut Proc, cmd: &str| {
        let i = p.stdin.as_mut().unwrap();
        writeln!(i, "{cmd}").unwrap();
        i.flush().unwrap();
    };
    send(&mut testpmd, "start");

    // Convergence: both members collecting and distributing, partner = testpmd's bond.
    let mut last = Vec::new();
    let converged = eventually(Duration::from_secs(15), || {
        last = members(&socket);
        last.len() == 2 && last.iter().all(|m| m["active"] == true && has(m, "actor", "distributing") && has(m, "actor", "collecting") && m["partner_system"] == PARTNER_MAC && has(m, "partner", "distributing"))
    });
    assert!(converged, "LACP did not converge: {last:#?}");
    // Traffic over both members, forwarded out of the TAP port.
    let before: Vec<u64> = members(&socket).iter().map(|m| m["rx_packets"].as_u64().unwrap()).collect();
    let lan_before = rx_packets(&lan);
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<u64> = members(&socket).iter().map(|m| m["rx_packets"].as_u64().unwrap()).collect();
    let lan_after = rx_packets(&lan);
    assert!(after[0] > before[0] + 100 && after[1] > before[1] + 100, "traffic on both members: {before:?} -> {after:?}");
    assert!(lan_after > lan_before + 200, "forwarded to the TAP port: {lan_before} -> {lan_after}");

    // Cut member link 0: testpmd takes its end out of its bond and closes it.
    for cmd in ["stop", "remove bonding slave 0 2", "port stop 0", "port close 0", "start"] {
        send(&mut testpmd, cmd);
    }
    let cut_at = Instant::now();
    let mut last = Vec::new();
    let dropped = eventually(Duration::from_secs(5), || {
        last = members(&socket);
        let m0 = last.iter().find(|m| m["name"] == "m0").cloned().unwrap_or_default();
        let m1 = last.iter().find(|m| m["name"] == "m1").cloned().unwrap_or_default();
        m0["active"] == false && m0["link_up"] == false && m1["active"] == true && has(&m1, "actor", "distributing")
    });
    assert!(dropped, "the bond still uses the cut member: {last:#?}");
    eprintln!("member m0 left the bond {} ms after the cut", cut_at.elapsed().as_millis());
    // Traffic keeps flowing, over m1 only.
    let m = |v: &[Value], name: &str, key: &str| v.iter().find(|m| m["name"] == name).and_then(|m| m[key].as_u64()).unwrap();
    let (v0, lan0) = (members(&socket), rx_packets(&lan));
    std::thread::sleep(Duration::from_secs(1));
    let (v1, lan1) = (members(&socket), rx_packets(&lan));
    assert!(m(&v1, "m1", "rx_packets") > m(&v0, "m1", "rx_packets") + 100, "m1 carries the traffic: {v0:#?} -> {v1:#?}");
    assert_eq!(m(&v1, "m0", "rx_packets"), m(&v0, "m0", "rx_packets"), "nothing arrives over the cut member");
    assert!(lan1 > lan0 + 200, "still forwarded after the cut: {lan0} -> {lan1}");

    drop(testpmd);
    drop(_appliance);
    let _ = std::fs::remove_dir_all(&dir);
}
