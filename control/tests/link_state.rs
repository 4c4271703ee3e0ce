//! Link state of TAP ports whose kernel interfaces live in other network namespaces (as
//! in every testbed), seen by the operator and acted on by the workers: the appliance
//! forwards between two TAP ports; `ctl ports` must show both links up once their
//! interfaces are up in their namespaces (DPDK's TAP driver alone reports them down for
//! good: it looks for the interface in the appliance's namespace), and while one interface
//! is down the frames forwarded toward it are dropped as `link_down`, not failed in the
//! driver as TX errors; when it comes back up (renamed meanwhile) the traffic flows again.
//!
//! The same for socket ports (`net_af_xdp`) on veths whose other ends are in the
//! namespaces: DPDK's driver reports them up for good, the appliance reads the root end's
//! `IFF_UP | IFF_RUNNING` (a veth whose peer is down has no carrier).
//!
//! ```text
//!  ns tls-a 10.76.0.1 ── [a  ls  b] ── ns tls-b 10.76.0.2 (UDP :9 counted)
//!  ns tlx-a 10.77.0.1 ── [a  lx  b] ── ns tlx-b 10.77.0.2   (veths, AF_XDP)
//! ```

mod common;
use common::{ctl_json, in_ns, spawn_in_ns, wait_for, Lab};
use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NS: [&str; 2] = ["tls-a", "tls-b"];
const XDP_NS: [&str; 2] = ["tlx-a", "tlx-b"];

/// The forward rack between ports a and b of `device` kind (`net_tap` or `net_af_xdp`)
/// on interfaces `ifaces`, node `id`.
fn rack_of(dir: &Path, id: &str, device: &str, ifaces: [&str; 2]) -> String {
    rack(dir).replace("tapsplice-ls", &format!("tapsplice-{id}")).replace("id = \"ls\"", &format!("id = \"{id}\"")).replace("net_tap", device).replace("tls-a0", ifaces[0]).replace("tls-b0", ifaces[1])
}

fn rack(dir: &Path) -> String {
    format!(
        r#"[node]
id = "ls"
roles = ["forward"]

[eal]
lcores = "0,1"
memory_mb = 256
hugepages = false
file_prefix = "tapsplice-ls"

[mempool]
mbufs = 8191

[workers]
idle_backoff = true

[[port]]
name = "a"
device = "net_tap0"
args = "iface=tls-a0"

[[port]]
name = "b"
device = "net_tap1"
args = "iface=tls-b0"

[forward]
pairs = [["a", "b"]]

[ctl]
socket = "{d}/ctl.sock"

[metrics]
enabled = false
"#,
        d = dir.display()
    )
}

/// Port `name`'s entry in `ctl ports`.
fn port(sock: &Path, name: &str) -> serde_json::Value {
    ctl_json(sock, "ports")["ports"].as_array().and_then(|p| p.iter().find(|p| p["name"] == name).cloned()).unwrap_or_default()
}

/// The worker's `link_down` drops.
fn link_down_drops(sock: &Path) -> u64 {
    ctl_json(sock, "stats")["lcores"].as_array().map_or(0, |l| l.iter().map(|l| l["drops"]["link_down"].as_u64().unwrap_or(0)).sum())
}

/// One side of the lab: its namespace and its address there.
#[derive(Clone, Copy)]
struct Side {
    ns: &'static str,
    addr: &'static str,
}

/// Sends `n` datagrams from `a` to `b`'s :9.
fn send(a: Side, b: Side, n: usize) {
    spawn_in_ns(a.ns, move || {
        let s = UdpSocket::bind(format!("{}:0", a.addr)).unwrap();
        for i in 0..n {
            let _ = s.send_to(&[i as u8; 64], format!("{}:9", b.addr));
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join()
    .unwrap();
}

/// Counts what reaches `b`'s :9 until the lab stops.
fn count_at(b: Side, stop: Arc<std::sync::atomic::AtomicBool>) -> Arc<AtomicU64> {
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in_ns(b.ns, move || {
        let s = UdpSocket::bind(format!("{}:9", b.addr)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 128];
        while !stop.load(Ordering::Relaxed) {
            if s.recv(&mut buf).is_ok() {
                g.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("b's receiver started");
    got
}

/// Both links seen up; traffic from a reaches b; b's interface in its namespace (`b_if`)
/// taken down: seen down, and what a sends toward it dropped as `link_down`, not failed in
/// the driver. Returns b's counter.
fn links_up_then_b_down(sock: &Path, (a, b): (Side, Side), b_if: &str, stop: Arc<std::sync::atomic::AtomicBool>) -> Arc<AtomicU64> {
    assert!(
        wait_for(Duration::from_secs(5), || port(sock, "a")["link"]["up"] == true && port(sock, "b")["link"]["up"] == true),
        "links not seen up: {}",
        ctl_json(sock, "ports")
    );
    let got = count_at(b, stop);
    send(a, b, 50);
    assert!(wait_for(Duration::from_secs(5), || got.load(Ordering::Relaxed) >= 45), "b received {} of 50", got.load(Ordering::Relaxed));

    let out = in_ns(b.ns, &["ip", "link", "set", b_if, "down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for(Duration::from_secs(5), || port(sock, "b")["link"]["up"] == false), "b's link not seen down: {}", port(sock, "b"));
    let (errors_before, drops_before) = (port(sock, "b")["tx_errors"].as_u64().unwrap_or(0), link_down_drops(sock));
    send(a, b, 200);
    assert!(wait_for(Duration::from_secs(5), || link_down_drops(sock) >= drops_before + 150), "link_down drops: {} (before {drops_before})", link_down_drops(sock));
    assert_eq!(port(sock, "b")["tx_errors"].as_u64().unwrap_or(0), errors_before, "no TX error toward a down link: {}", port(sock, "b"));
    got
}

/// b's link seen up again, and the traffic flows.
fn b_back_up(sock: &Path, (a, b): (Side, Side), got: &AtomicU64) {
    assert!(wait_for(Duration::from_secs(5), || port(sock, "b")["link"]["up"] == true), "b's link not seen up again: {}", port(sock, "b"));
    let before = got.load(Ordering::Relaxed);
    send(a, b, 50);
    assert!(wait_for(Duration::from_secs(5), || got.load(Ordering::Relaxed) >= before + 45), "after the link came back b received {} of 50", got.load(Ordering::Relaxed) - before);
}

#[test]
fn tap_links_in_other_namespaces_are_read_and_a_down_link_drops_as_link_down() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (network namespaces, TAP ports)");
    let mut lab = Lab::new(&NS, std::env::temp_dir().join(format!("tls-{}", std::process::id())));
    let dir = lab.dir.clone();
    lab.start(&rack(&dir), &[], &[("tls-a0", NS[0], "10.76.0.1/24"), ("tls-b0", NS[1], "10.76.0.2/24")]);
    let sock = dir.join("ctl.sock");
    let sides = (Side { ns: NS[0], addr: "10.76.0.1" }, Side { ns: NS[1], addr: "10.76.0.2" });
    // Read in the namespaces the interfaces were moved into.
    let got = links_up_then_b_down(&sock, sides, "tls-b0", lab.stop.clone());

    // Renamed in its namespace (as testbeds do) and up again: seen, and the traffic flows.
    let out = in_ns(NS[1], &["ip", "link", "set", "tls-b0", "name", "tls-bx"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = in_ns(NS[1], &["ip", "link", "set", "tls-bx", "up"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    b_back_up(&sock, sides, &got);

    let (status, stderr) = lab.appliance.take().unwrap().stop();
    assert!(status.success(), "appliance: {status}: {stderr}");
}

#[test]
fn af_xdp_links_follow_their_veths_and_a_down_link_drops_as_link_down() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (network namespaces, XDP)");
    let mut lab = Lab::new(&XDP_NS, std::env::temp_dir().join(format!("tlx-{}", std::process::id())));
    let dir = lab.dir.clone();
    // A veth per side: the root end for the port, the other in the side's namespace
    // (deleting the namespace deletes the pair).
    let sides = (Side { ns: XDP_NS[0], addr: "10.77.0.1" }, Side { ns: XDP_NS[1], addr: "10.77.0.2" });
    for (side, root, peer) in [(sides.0, "tlx-a0r", "tlx-a0"), (sides.1, "tlx-b0r", "tlx-b0")] {
        let _ = std::process::Command::new("ip").args(["link", "del", root]).output();
        common::ip(&["link", "add", root, "type", "veth", "peer", "name", peer]);
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{root}/disable_ipv6"), "1").unwrap();
        common::ip(&["link", "set", peer, "netns", side.ns]);
        common::ip(&["-n", side.ns, "addr", "add", &format!("{}/24", side.addr), "dev", peer]);
        common::ip(&["-n", side.ns, "link", "set", peer, "up"]);
        // The namespace's kernel must finish its checksums: a veth leaves them to the
        // receiver when offloading, and the socket port passes the bytes on as they are.
        let out = in_ns(side.ns, &["ethtool", "-K", peer, "tx", "off"]);
        assert!(out.status.success(), "ethtool: {}", String::from_utf8_lossy(&out.stderr));
        common::ip(&["link", "set", root, "up"]);
    }
    lab.start(&rack_of(&dir, "lx", "net_af_xdp", ["tlx-a0r", "tlx-b0r"]), &[], &[]);
    let sock = dir.join("ctl.sock");
    let got = links_up_then_b_down(&sock, sides, "tlx-b0", lab.stop.clone());
    let out = in_ns(XDP_NS[1], &["ip", "link", "set", "tlx-b0", "up"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    b_back_up(&sock, sides, &got);

    let (status, stderr) = lab.appliance.take().unwrap().stop();
    assert!(status.success(), "appliance: {status}: {stderr}");
}
