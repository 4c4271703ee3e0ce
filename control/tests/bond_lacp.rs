//! A `[[bond]]` against an independent partner: the appliance's bond over two `net_vhost`
//! ports, and dpdk-testpmd with its own bonding device in the same mode (802.3ad with LACP,
//! balance-xor, active-backup) over the two `net_virtio_user` ends. The appliance forwards the bond to a TAP port (role forward, pair
//! [uplink, lan]); testpmd sends UDP flows (flowgen) toward the appliance's bond MAC.
//!
//! Shown: the bond comes up on both members (802.3ad: LACP converges, actor collecting +
//! distributing, the partner's system MAC is testpmd's bond MAC) with traffic; then
//! testpmd takes one member
//! link away (it closes its end, as a pulled cable would be seen by vhost) and the bond
//! stops using that member while the traffic keeps flowing over the other one.
//!
//! And the balance role on top of a bond (`balance_role_runs_on_top_of_a_bond`): a VIP
//! reached over a balance-xor bond of TAP members, balanced to members behind a TAP port.
//!
//! testpmd quirks (see docs/balance.md, "Bonded uplinks"): its bonding device only speaks
//! LACP while its forwarding engine calls both rx and tx bursts, which only `flowgen` does;
//! `--portlist=2` keeps it from polling the member ports itself.

mod common;
use common::{wait_for as eventually, BIN};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// The bond's members from `ctl ports` (none before the first statistics are published).
fn members(socket: &Path, mode: &str) -> Vec<Value> {
    let v = ctl_ports(socket);
    let Some(bond) = v["ports"].as_array().and_then(|a| a.iter().find(|p| p["name"] == "uplink")).cloned() else {
        return Vec::new();
    };
    assert_eq!(bond["bond"]["mode"], mode, "{bond}");
    bond["bond"]["members"].as_array().cloned().unwrap_or_default()
}

/// Starts the appliance on `cfg`; returns it and its bond's MAC once it runs.
fn start_appliance(cfg: &Path) -> (Proc, String) {
    let mut child = Command::new(BIN).args(["run", "--config"]).arg(cfg).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let lines = capture(&mut child);
    let appliance = Proc { child, stdin: None };
    // stdout and stderr arrive on one channel in any order: wait for "running", then
    // take the bond's port line ("port uplink (...) dpdk id N mac M ...") from all seen.
    let mut seen = Vec::new();
    let running = wait_line(&lines, |l| l.contains("tapsplice: running"), Duration::from_secs(30), &mut seen);
    seen.extend(std::iter::from_fn(|| lines.recv_timeout(Duration::from_millis(200)).ok()).take(50));
    let mac = seen.iter().find(|l| l.contains("port uplink") && l.contains(" mac ")).and_then(|l| l.split(" mac ").nth(1)?.split_whitespace().next()).map(str::to_string);
    match (running, mac) {
        (Some(_), Some(mac)) => (appliance, mac),
        _ => panic!("the appliance did not come up: {seen:#?}"),
    }
}

fn has(m: &Value, list: &str, flag: &str) -> bool {
    m[list].as_array().is_some_and(|a| a.iter().any(|f| f == flag))
}

fn rx_packets(iface: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/statistics/rx_packets")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// One case's scratch directory and names, and the lock that runs cases one at a time
/// (each runs DPDK processes that poll the same CPUs).
struct Case {
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
    dir: PathBuf,
    id: u32,
    /// The TAP interface the appliance forwards the bond to.
    lan: String,
    socket: PathBuf,
}

impl Case {
    fn new() -> Case {
        let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = scratch(n);
        let id = (std::process::id() % 10_000) * 10 + n;
        let socket = dir.join("ctl.sock");
        Case { _one_at_a_time: guard, dir, id, lan: format!("tsbl{id}"), socket }
    }

    /// Writes the rack: bond `uplink` in `mode` over ports m0 and m1 (device, args),
    /// forwarded to the TAP port `lan` (device `lan_device`); returns its path.
    fn rack(&self, mode: &str, members: [(&str, String); 2], lan_device: &str) -> PathBuf {
        self.rack_with(mode, members, lan_device, "forward", "", "[forward]\npairs = [[\"uplink\", \"lan\"]]\n")
    }

    /// As [`Case::rack`], with role `role`, `lan_keys` added to the `lan` port and
    /// `sections` (the role's) instead of the forward pair.
    fn rack_with(&self, mode: &str, members: [(&str, String); 2], lan_device: &str, role: &str, lan_keys: &str, sections: &str) -> PathBuf {
        let xmit = if mode == "active-backup" { "primary = \"m0\"" } else { "xmit_hash = \"l34\"" };
        let [(d0, a0), (d1, a1)] = members;
        let cfg = self.dir.join("rack.toml");
        let text = format!(
            r#"[node]
id = "bond{id}"
roles = ["{role}"]

[eal]
lcores = "0,1"
memory_mb = 256
hugepages = false
file_prefix = "tsbond{id}"

[mempool]
mbufs = 8191

[[port]]
name = "m0"
device = "{d0}"
args = "{a0}"

[[port]]
name = "m1"
device = "{d1}"
args = "{a1}"

[[port]]
name = "lan"
device = "{lan_device}"
args = "iface={lan}"
{lan_keys}
[[bond]]
name = "uplink"
mode = "{mode}"
members = ["m0", "m1"]
{xmit}

{sections}
[ctl]
socket = "{socket}"

[metrics]
enabled = false
"#,
            id = self.id,
            lan = self.lan,
            socket = self.socket.display()
        );
        std::fs::write(&cfg, text).unwrap();
        cfg
    }
}

fn scratch(n: u32) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tapsplice-bond-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn lacp_converges_with_an_independent_partner_and_survives_a_member_link_cut() {
    lacp_case();
}

/// active-backup and balance-xor give every member the bond's MAC, which net_vhost
/// refuses: these run over net_tap members, fed from the kernel side of the TAPs.
#[test]
fn active_backup_takes_only_the_primary_and_follows_its_link() {
    tap_bond_case("active-backup");
}

#[test]
fn balance_xor_takes_every_member() {
    tap_bond_case("balance-xor");
}

/// Sends `n` UDP datagrams (distinct source ports) to `dst_mac` out of the kernel
/// interface `iface`, i.e. into the DPDK port behind that TAP.
fn inject(iface: &str, dst_mac: [u8; 6], n: u16) {
    // Protocol 0: a socket that sends only.
    let fd = packet_socket(iface, 0);
    for i in 0..n {
        let mut f = [0u8; 60];
        f[0..6].copy_from_slice(&dst_mac);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0x0c, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14..34].copy_from_slice(&[0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0, 10, 9, 0, 1, 10, 9, 0, 2]);
        f[34..36].copy_from_slice(&(1024 + i).to_be_bytes());
        f[36..38].copy_from_slice(&9u16.to_be_bytes());
        f[38..40].copy_from_slice(&26u16.to_be_bytes());
        // SAFETY: send from a buffer we own, of the length given.
        let sent = unsafe { libc::send(fd, f.as_ptr().cast(), f.len(), 0) };
        assert_eq!(sent, f.len() as isize, "send on {iface}");
    }
    // SAFETY: our socket, closed once.
    unsafe { libc::close(fd) };
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// Frames the appliance sent out of the members behind TAPs `a` and `b` while `f` ran.
fn delivered(a: &str, b: &str, f: impl FnOnce()) -> (u64, u64) {
    let before = (rx_packets(a), rx_packets(b));
    f();
    std::thread::sleep(Duration::from_millis(500));
    (rx_packets(a) - before.0, rx_packets(b) - before.1)
}

/// How many frames the TAP port `lan` forwarded to the kernel while `f` ran.
fn forwarded(lan: &str, f: impl FnOnce()) -> u64 {
    let before = rx_packets(lan);
    f();
    std::thread::sleep(Duration::from_millis(500));
    rx_packets(lan) - before
}

fn tap_bond_case(mode: &str) {
    let c = Case::new();
    let (a, b, lan) = (format!("tsba{}", c.id), format!("tsbb{}", c.id), c.lan.clone());
    let socket = c.socket.clone();
    let cfg = c.rack(mode, [("net_tap0", format!("iface={a}")), ("net_tap1", format!("iface={b}"))], "net_tap2");
    let (_appliance, mac) = start_appliance(&cfg);
    let mac = parse_mac(&mac);
    for i in [&a, &b, &lan] {
        // Quiet TAPs: no IPv6 autoconfiguration chatter in the counts.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{i}/disable_ipv6"), "1");
        ip(&["link", "set", i, "up"]);
    }
    let mut last = Vec::new();
    let up = eventually(Duration::from_secs(10), || {
        last = members(&socket, mode);
        last.len() == 2 && last.iter().all(|m| m["link_up"] == true && m["active"] == true)
    });
    assert!(up, "both members up and active: {last:#?}");

    let into_m0 = forwarded(&lan, || inject(&a, mac, 300));
    let into_m1 = forwarded(&lan, || inject(&b, mac, 300));
    assert!(into_m0 >= 300, "{mode}: frames into m0 forwarded: {into_m0}");
    if mode == "active-backup" {
        assert!(into_m1 < 30, "active-backup takes nothing from the backup member: {into_m1}");
    } else {
        assert!(into_m1 >= 300, "balance-xor takes every member: {into_m1}");
    }

    // balance-xor spreads the flows from the LAN over both members.
    let lan_dst = [2, 0, 0, 0, 0x0d, 1];
    if mode == "balance-xor" {
        let (m0, m1) = delivered(&a, &b, || inject(&lan, lan_dst, 300));
        assert!(m0 > 0 && m1 > 0 && m0 + m1 >= 300, "balance-xor: 300 flows from the LAN over both members: {m0} + {m1}");
    }

    // m0's link goes down: ctl shows it. The bonding PMD of DPDK 22.11 gets no link event
    // from net_tap members and keeps such a member in its active list; for active-backup
    // the appliance moves the primary itself (bondwatch.rs), and back when m0 returns; for
    // balance-xor it signals the link change, and the PMD takes m0 out of its list.
    ip(&["link", "set", &a, "down"]);
    let cut_at = Instant::now();
    let seen_down = eventually(Duration::from_secs(5), || {
        last = members(&socket, mode);
        last.iter().any(|m| m["name"] == "m0" && m["link_up"] == false)
    });
    assert!(seen_down, "{mode}: m0's link loss is not shown: {last:#?}");
    if mode == "active-backup" {
        let primary = |want: &str| {
            let v = ctl_ports(&socket);
            v["ports"].as_array().and_then(|a| a.iter().find(|p| p["name"] == "uplink")).is_some_and(|b| b["bond"]["primary"] == want)
        };
        assert!(eventually(Duration::from_secs(5), || primary("m1")), "the primary did not move to m1: {:#}", ctl_ports(&socket));
        eprintln!("{mode}: primary moved to m1 {} ms after m0's link went down", cut_at.elapsed().as_millis());
        let after_cut = forwarded(&lan, || inject(&b, mac, 300));
        assert!(after_cut >= 300, "{mode}: m1 carries the traffic after the cut: {after_cut}");
        // m0 back: the preferred member is the primary again.
        ip(&["link", "set", &a, "up"]);
        assert!(eventually(Duration::from_secs(5), || primary("m0")), "the primary did not return to m0: {:#}", ctl_ports(&socket));
        let back = forwarded(&lan, || inject(&a, mac, 300));
        assert!(back >= 300, "{mode}: m0 carries the traffic again: {back}");
        let v = ctl_ports(&socket);
        let moves = v["ports"].as_array().and_then(|a| a.iter().find(|p| p["name"] == "uplink")).map(|b| b["bond"]["primary_moves"].as_u64().unwrap_or(0)).unwrap_or(0);
        assert_eq!(moves, 2, "{v:#}");
    } else {
        let m0_active = |want: bool, last: &mut Vec<Value>| {
            *last = members(&socket, mode);
            last.iter().any(|m| m["name"] == "m0" && m["active"] == want)
        };
        assert!(eventually(Duration::from_secs(5), || m0_active(false, &mut last)), "balance-xor: m0 still active after its link went down: {last:#?}");
        eprintln!("{mode}: m0 out of the bond {} ms after its link went down", cut_at.elapsed().as_millis());
        let (m0, m1) = delivered(&a, &b, || inject(&lan, lan_dst, 300));
        assert!(m1 >= 300 && m0 == 0, "balance-xor: every flow over m1 after the cut: m0 {m0}, m1 {m1}");
        // m0 back: in the bond again, and flows spread over both.
        ip(&["link", "set", &a, "up"]);
        assert!(eventually(Duration::from_secs(5), || m0_active(true, &mut last)), "balance-xor: m0 not back in the bond: {last:#?}");
        let (m0, m1) = delivered(&a, &b, || inject(&lan, lan_dst, 300));
        assert!(m0 > 0 && m1 > 0 && m0 + m1 >= 300, "balance-xor: both members again: {m0} + {m1}");
        let v = ctl_ports(&socket);
        let signals = v["ports"].as_array().and_then(|a| a.iter().find(|p| p["name"] == "uplink")).map(|b| b["bond"]["primary_moves"].as_u64().unwrap_or(0)).unwrap_or(0);
        assert_eq!(signals, 2, "one signal for the cut, one for the return: {v:#}");
    }
    drop(_appliance);
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// One bonding mode, the partner in the same mode: up, traffic, member link 0 cut.
fn lacp_case() {
    let mode = "802.3ad";
    let c = Case::new();
    let (lan, socket) = (c.lan.clone(), c.socket.clone());
    let (l0, l1) = (c.dir.join("l0.sock"), c.dir.join("l1.sock"));
    let vhost = |p: &Path| format!("iface={},queues=1", p.display());
    let cfg = c.rack(mode, [("net_vhost0", vhost(&l0)), ("net_vhost1", vhost(&l1))], "net_tap0");
    let id = c.id;
    let (_appliance, our_mac) = start_appliance(&cfg);

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

    // LACP up: both members collecting and distributing, partner = testpmd's bond.
    let mut last = Vec::new();
    let converged = eventually(Duration::from_secs(15), || {
        last = members(&socket, mode);
        last.len() == 2
            && last.iter().all(|m| {
                m["active"] == true
                    && m["link_up"] == true
                    && has(m, "actor", "distributing")
                    && has(m, "actor", "collecting")
                    && m["partner_system"] == PARTNER_MAC
                    && has(m, "partner", "distributing")
            })
    });
    assert!(converged, "LACP did not converge: {last:#?}");
    // Traffic forwarded out of the TAP port; the partner spreads its flows over both
    // members (l34).
    let before: Vec<u64> = members(&socket, mode).iter().map(|m| m["rx_packets"].as_u64().unwrap()).collect();
    let lan_before = rx_packets(&lan);
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<u64> = members(&socket, mode).iter().map(|m| m["rx_packets"].as_u64().unwrap()).collect();
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
        last = members(&socket, mode);
        let m0 = last.iter().find(|m| m["name"] == "m0").cloned().unwrap_or_default();
        let m1 = last.iter().find(|m| m["name"] == "m1").cloned().unwrap_or_default();
        m0["active"] == false && m0["link_up"] == false && m1["active"] == true && has(&m1, "actor", "distributing")
    });
    assert!(dropped, "the bond still uses the cut member: {last:#?}");
    eprintln!("{mode}: member m0 left the bond {} ms after the cut", cut_at.elapsed().as_millis());
    // Traffic keeps flowing, over m1 only.
    let m = |v: &[Value], name: &str, key: &str| v.iter().find(|m| m["name"] == name).and_then(|m| m[key].as_u64()).unwrap();
    let (v0, lan0) = (members(&socket, mode), rx_packets(&lan));
    std::thread::sleep(Duration::from_secs(1));
    let (v1, lan1) = (members(&socket, mode), rx_packets(&lan));
    assert!(m(&v1, "m1", "rx_packets") > m(&v0, "m1", "rx_packets") + 100, "m1 carries the traffic: {v0:#?} -> {v1:#?}");
    assert_eq!(m(&v1, "m0", "rx_packets"), m(&v0, "m0", "rx_packets"), "nothing arrives over the cut member");
    assert!(lan1 > lan0 + 200, "still forwarded after the cut: {lan0} -> {lan1}");

    drop(testpmd);
    drop(_appliance);
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// The balance role on top of a bond (issue 4: "the role runs on top of it"): a VIP
/// whose clients arrive over a balance-xor bond of two TAP members, balanced over three
/// members behind a TAP port in their own namespace (each a macvlan with its own MAC).
/// Shown: ARP for the VIP is answered over the bond with the bond's MAC; each of 300
/// flows goes to the same member whichever bond member it arrived on (seen per flow on
/// the members' wire), and the three members share the flows; with one bond member's
/// link cut, every flow still reaches its member and the VIP still answers ARP.
#[test]
fn balance_role_runs_on_top_of_a_bond() {
    let c = Case::new();
    let (a, b, lan) = (format!("tsba{}", c.id), format!("tsbb{}", c.id), c.lan.clone());
    let socket = c.socket.clone();
    let cfg = c.rack_with(
        "balance-xor",
        [("net_tap0", format!("iface={a}")), ("net_tap1", format!("iface={b}"))],
        "net_tap2",
        "balance",
        "addresses = [\"10.9.1.3/24\"]\n",
        r#"[[pool]]
name = "udp"
via = "lan"
members = [{ address = "10.9.1.21" }, { address = "10.9.1.22" }, { address = "10.9.1.23" }]

[[service]]
name = "udp9"
vip = "10.9.0.2"
ports = [9]
protocol = "udp"
mode = "balance"
hash = "l34"
pool = "udp"
via = "uplink"
"#,
    );
    // Declared before the appliance, so dropped (namespace deleted) after it, pass or fail.
    let ns = Netns::new(&format!("tsbn{}", c.id));
    let (_appliance, mac) = start_appliance(&cfg);
    let bond_mac = parse_mac(&mac);
    // The members: a macvlan each on the kernel side of the `lan` TAP, in the namespace;
    // each answers ARP for its own address only.
    ip(&["link", "set", &lan, "netns", &ns.0]);
    ip(&["-n", &ns.0, "link", "set", &lan, "up"]);
    let out = common::in_ns(&ns.0, &["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"]);
    assert!(out.status.success(), "arp_ignore: {out:?}");
    let mut member_macs = Vec::new();
    for (i, addr) in ["10.9.1.21/24", "10.9.1.22/24", "10.9.1.23/24"].iter().enumerate() {
        let (name, mac) = (format!("mv{i}"), format!("02:00:00:00:0e:2{i}"));
        ip(&["-n", &ns.0, "link", "add", &name, "link", &lan, "address", &mac, "type", "macvlan", "mode", "bridge"]);
        ip(&["-n", &ns.0, "addr", "add", addr, "dev", &name]);
        ip(&["-n", &ns.0, "link", "set", &name, "up"]);
        member_macs.push(parse_mac(&mac));
    }
    for i in [&a, &b] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{i}/disable_ipv6"), "1");
        ip(&["link", "set", i, "up"]);
    }
    let mut last = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            last = members(&socket, "balance-xor");
            last.len() == 2 && last.iter().all(|m| m["link_up"] == true && m["active"] == true)
        }),
        "both bond members up and active: {last:#?}"
    );
    assert!(common::members_up(&socket, 3), "the three members resolved: {:#}", common::ctl_json(&socket, "members"));

    // ARP for the VIP, asked over either bond member, is answered with the bond's MAC.
    for via in [&a, &b] {
        assert_eq!(arp_ask(via, &[&a, &b], [10, 9, 0, 2]), Some(bond_mac), "ARP for the VIP asked over {via}");
    }

    // The same 300 flows in over m0, then over m1: which member's MAC each flow's frame
    // carried on the members' wire, and what the appliance counted per member.
    let per_member = || -> Vec<u64> {
        let v = common::ctl_json(&socket, "members");
        let mut m: Vec<(String, u64)> = v["members"].as_array().into_iter().flatten().map(|m| (m["member"].as_str().unwrap_or("").to_string(), m["packets"].as_u64().unwrap_or(0))).collect();
        m.sort();
        m.into_iter().map(|(_, p)| p).collect()
    };
    let send_flows = |via: &str| -> (HashMap<u16, [u8; 6]>, Vec<u64>) {
        let before = per_member();
        let (ready, flows) = flows_seen(&ns.0, &lan, 300);
        ready.recv_timeout(Duration::from_secs(5)).expect("capture ready");
        inject(via, bond_mac, 300);
        let flows = flows.join().expect("capture thread");
        // The counters are published about ten times a second.
        let mut after = per_member();
        eventually(Duration::from_secs(3), || {
            after = per_member();
            after.iter().sum::<u64>() >= before.iter().sum::<u64>() + 300
        });
        (flows, after.iter().zip(&before).map(|(x, y)| x.saturating_sub(*y)).collect())
    };
    let (over_m0, counted_m0) = send_flows(&a);
    let (over_m1, counted_m1) = send_flows(&b);
    let share = |flows: &HashMap<u16, [u8; 6]>| member_macs.iter().map(|m| flows.values().filter(|v| *v == m).count()).collect::<Vec<_>>();
    eprintln!("balance over a bond: flows per member {:?}; counted per member, in over m0 {counted_m0:?}, over m1 {counted_m1:?}", share(&over_m0));
    assert_eq!(over_m0.len(), 300, "every flow in over m0 reached a member");
    assert!(over_m0.values().all(|m| member_macs.contains(m)), "only members' MACs: {over_m0:?}");
    assert_eq!(over_m0, over_m1, "each flow's member does not depend on the bond member it came in on");
    assert!(share(&over_m0).iter().all(|&n| n >= 60), "300 flows shared by three members of equal weight: {:?}", share(&over_m0));
    assert_eq!(counted_m0.iter().sum::<u64>(), 300, "counted per member: {counted_m0:?}");
    assert_eq!(counted_m0, counted_m1, "the same counts per member over either bond member");

    // m0's link goes down: the bond leaves it out; the balance table does not change.
    ip(&["link", "set", &a, "down"]);
    assert!(
        eventually(Duration::from_secs(5), || {
            last = members(&socket, "balance-xor");
            last.iter().any(|m| m["name"] == "m0" && m["active"] == false)
        }),
        "m0 still active after its link went down: {last:#?}"
    );
    let (after_cut, _) = send_flows(&b);
    assert_eq!(after_cut, over_m0, "every flow reaches its member after a bond member's cut");
    assert_eq!(arp_ask(&b, &[&b], [10, 9, 0, 2]), Some(bond_mac), "ARP for the VIP after the cut");
    assert!(common::members_up(&socket, 3), "members unchanged by the bond's member loss: {:#}", common::ctl_json(&socket, "members"));
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        Netns(name.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Watches `iface` in namespace `ns` (5 s at most) for UDP datagrams to the VIP's port 9
/// until `flows` source ports were seen: each source port with the destination MAC its
/// frame carried. The receiver says when the capture is open.
fn flows_seen(ns: &str, iface: &str, flows: usize) -> (mpsc::Receiver<()>, std::thread::JoinHandle<HashMap<u16, [u8; 6]>>) {
    let (tx, rx) = mpsc::channel();
    let iface = iface.to_string();
    let h = common::spawn_in_ns(ns, move || {
        let fd = packet_socket(&iface, 0x0003);
        tx.send(()).unwrap();
        let mut seen = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < flows && Instant::now() < deadline {
            let mut buf = [0u8; 128];
            // SAFETY: recv into a buffer we own, of the length given.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            // IPv4, UDP, to 10.9.0.2 port 9.
            if n >= 42 && buf[12..14] == [8, 0] && buf[23] == 17 && buf[30..34] == [10, 9, 0, 2] && buf[36..38] == [0, 9] {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&buf[0..6]);
                seen.insert(u16::from_be_bytes([buf[34], buf[35]]), mac);
            }
        }
        // SAFETY: our socket, closed once.
        unsafe { libc::close(fd) };
        seen
    });
    (rx, h)
}

/// An AF_PACKET socket for `protocol` (0: none, a socket that only sends) bound to
/// `iface` (in the calling thread's namespace), receiving with a 100 ms timeout.
fn packet_socket(iface: &str, protocol: u16) -> i32 {
    // SAFETY: plain socket calls on a socket we own; the address structs are fully
    // initialised and outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol.to_be()));
        assert!(fd >= 0, "AF_PACKET socket");
        let name = std::ffi::CString::new(iface).unwrap();
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        assert!(sll.sll_ifindex > 0, "no interface {iface}");
        let rc = libc::bind(fd, (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32);
        assert_eq!(rc, 0, "bind on {iface}");
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), std::mem::size_of::<libc::timeval>() as u32);
        fd
    }
}

/// Asks "who has `target`" from the kernel side of TAP `via` (up to three times, a second
/// apart) and waits for the reply on any of `listen` (a bond may answer over any member);
/// the MAC it gives.
fn arp_ask(via: &str, listen: &[&str], target: [u8; 4]) -> Option<[u8; 6]> {
    const ETH_P_ARP: u16 = 0x0806;
    let me = [2, 0, 0, 0, 0x0c, 1];
    let fds: Vec<i32> = listen.iter().map(|i| packet_socket(i, ETH_P_ARP)).collect();
    let tx = packet_socket(via, ETH_P_ARP);
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&me);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&me);
    f[28..32].copy_from_slice(&[10, 9, 0, 1]);
    f[38..42].copy_from_slice(&target);
    let mut answer = None;
    'ask: for _ in 0..3 {
        // SAFETY: send from a buffer we own, of the length given.
        let sent = unsafe { libc::send(tx, f.as_ptr().cast(), f.len(), 0) };
        assert_eq!(sent, f.len() as isize, "ARP request on {via}");
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            for &fd in &fds {
                let mut buf = [0u8; 128];
                // SAFETY: recv into a buffer we own, of the length given.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                // A reply (opcode 2) from `target` to us.
                if n >= 42 && buf[20..22] == [0, 2] && buf[28..32] == target && buf[32..38] == me {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(&buf[22..28]);
                    answer = Some(mac);
                    break 'ask;
                }
            }
        }
    }
    for fd in fds.into_iter().chain([tx]) {
        // SAFETY: our sockets, each closed once.
        unsafe { libc::close(fd) };
    }
    answer
}
