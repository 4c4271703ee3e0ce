//! Link state of TAP ports whose kernel interfaces live in other network namespaces (as
//! in every testbed), seen by the operator and acted on by the workers: the appliance
//! forwards between two TAP ports; `ctl ports` must show both links up once their
//! interfaces are up in their namespaces (DPDK's TAP driver alone reports them down for
//! good: it looks for the interface in the appliance's namespace), and while one interface
//! is down the frames forwarded toward it are dropped as `link_down`, not failed in the
//! driver as TX errors; when it comes back up (renamed meanwhile) the traffic flows again.
//!
//! ```text
//!  ns tls-a 10.76.0.1 ── [a  ls  b] ── ns tls-b 10.76.0.2 (UDP :9 counted)
//! ```

mod common;
use common::{ctl_json, in_ns, spawn_in_ns, wait_for, Lab};
use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NS: [&str; 2] = ["tls-a", "tls-b"];

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

/// Sends `n` datagrams from ns a to b's :9.
fn send_from_a(n: usize) {
    spawn_in_ns(NS[0], move || {
        let s = UdpSocket::bind("10.76.0.1:0").unwrap();
        for i in 0..n {
            let _ = s.send_to(&[i as u8; 64], "10.76.0.2:9");
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .join()
    .unwrap();
}

#[test]
fn tap_links_in_other_namespaces_are_read_and_a_down_link_drops_as_link_down() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (network namespaces, TAP ports)");
    let mut lab = Lab::new(&NS, std::env::temp_dir().join(format!("tls-{}", std::process::id())));
    let dir = lab.dir.clone();
    lab.start(&rack(&dir), &[], &[("tls-a0", NS[0], "10.76.0.1/24"), ("tls-b0", NS[1], "10.76.0.2/24")]);
    let sock = dir.join("ctl.sock");

    // Both links up, read in the namespaces the interfaces were moved into.
    assert!(
        wait_for(Duration::from_secs(5), || port(&sock, "a")["link"]["up"] == true && port(&sock, "b")["link"]["up"] == true),
        "links not seen up: {}",
        ctl_json(&sock, "ports")
    );

    // b counts what reaches its :9.
    let got = Arc::new(AtomicU64::new(0));
    let (g, stop) = (got.clone(), lab.stop.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in_ns(NS[1], move || {
        let s = UdpSocket::bind("10.76.0.2:9").unwrap();
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
    send_from_a(50);
    assert!(wait_for(Duration::from_secs(5), || got.load(Ordering::Relaxed) >= 45), "b received {} of 50", got.load(Ordering::Relaxed));

    // b's interface goes down: the operator sees it, and what a sends toward it is
    // dropped as link_down by the worker, not written to the TAP (a TX error).
    let out = in_ns(NS[1], &["ip", "link", "set", "tls-b0", "down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for(Duration::from_secs(5), || port(&sock, "b")["link"]["up"] == false), "b's link not seen down: {}", port(&sock, "b"));
    let (errors_before, drops_before) = (port(&sock, "b")["tx_errors"].as_u64().unwrap_or(0), link_down_drops(&sock));
    send_from_a(200);
    assert!(wait_for(Duration::from_secs(5), || link_down_drops(&sock) >= drops_before + 150), "link_down drops: {} (before {drops_before})", link_down_drops(&sock));
    assert_eq!(port(&sock, "b")["tx_errors"].as_u64().unwrap_or(0), errors_before, "no TX error toward a down link: {}", port(&sock, "b"));

    // Renamed in its namespace (as testbeds do) and up again: seen, and the traffic flows.
    let out = in_ns(NS[1], &["ip", "link", "set", "tls-b0", "name", "tls-bx"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = in_ns(NS[1], &["ip", "link", "set", "tls-bx", "up"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_for(Duration::from_secs(5), || port(&sock, "b")["link"]["up"] == true), "b's link not seen up again: {}", port(&sock, "b"));
    let before = got.load(Ordering::Relaxed);
    send_from_a(50);
    assert!(wait_for(Duration::from_secs(5), || got.load(Ordering::Relaxed) >= before + 45), "after the link came back b received {} of 50", got.load(Ordering::Relaxed) - before);

    let (status, stderr) = lab.appliance.take().unwrap().stop();
    assert!(status.success(), "appliance: {status}: {stderr}");
}
