//! The splice when things go wrong, with real peers: the appliance on TAP ports, kernel
//! TCP clients in a client namespace, kernel TCP stacks and a Rust HTTP server in two
//! backend namespaces.
//!
//! ```text
//!  ns c 10.79.0.11 ── [clients  sp  b1] ── ns b1 10.79.1.21  :80 nothing listens (RST)
//!                      10.79.0.2    │ 10.79.1.2               :81 SYNs dropped (nftables)
//!                  VIP 10.79.0.100  [b2] ── ns b2 10.79.2.21  :80, :81 the Rust server "b2"
//!                                   10.79.2.2
//! ```
//!
//! Services on the VIP (each its own pool, so that one pool's suspects do not steer
//! another's choice; b1 has weight 100 against b2's 1, so the hash picks b1 first):
//! - `:80` pool `refusing` (b1:80, b2:80), HTTP-routed: b1 answers the backend SYN with a
//!   RST, the connection moves to b2 at once; a first request that never completes is
//!   reset after `first_request_ms`.
//! - `:81` pool `silent` (b1:81, b2:81): b1 drops the SYNs, the connection moves to b2
//!   after `connect_attempts` SYNs (`connect_ms` 300, then 600).
//! - `:82` pool `small` (b2:80), `max_connections = 3`: a fourth connection is refused
//!   with a RST while the three keep working; one closed, a new one is taken again.
//! - `:83` pool `later` (10.79.2.22:80, an address nobody holds at first): the client's
//!   SYN goes unanswered (`syns_no_backend`: the service has had no live backend since
//!   the start) instead of being answered and then reset;
//!   once b2 takes the address and the appliance resolves it, the client's retransmitted
//!   SYN is answered and the connection served.
//!
//! Every reply is checked byte for byte, every refusal is a RST the client sees, and the
//! appliance counts each case under its own name.

mod common;
use common::{cookie_key, ctl, ctl_json, in_ns, members_up, members_up_of, rust_server, spawn_in_ns, splice_rack, wait_for, Lab};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const VIP: &str = "10.79.0.100";
const NS: [&str; 3] = ["tsf-c", "tsf-b1", "tsf-b2"];

fn rack(dir: &Path) -> String {
    let ports = [("clients", "tsf-c0", "10.79.0.2/24"), ("b1", "tsf-b10", "10.79.1.2/24"), ("b2", "tsf-b20", "10.79.2.2/24")];
    let services = format!(
        r#"[[pool]]
name = "refusing"
members = [{{ address = "10.79.1.21", port = 80, weight = 100 }}, {{ address = "10.79.2.21", port = 80, weight = 1 }}]

[[pool]]
name = "silent"
members = [{{ address = "10.79.1.21", port = 81, weight = 100 }}, {{ address = "10.79.2.21", port = 81, weight = 1 }}]

[[pool]]
name = "small"
members = [{{ address = "10.79.2.21", port = 80 }}]

[[pool]]
name = "later"
members = [{{ address = "10.79.2.22", port = 80 }}]

[[service]]
name = "web"
vip = "{VIP}"
ports = [80]
mode = "splice"
pool = "refusing"
via = "clients"
fault_tolerance = "none"

[service.timeouts]
first_request_ms = 1500

# A rule makes the appliance wait for a whole HTTP request before it routes.
[[service.route]]
host = "elsewhere.example.com"
pool = "refusing"

[[service]]
name = "slow"
vip = "{VIP}"
ports = [81]
mode = "splice"
pool = "silent"
via = "clients"
fault_tolerance = "none"

[service.timeouts]
connect_ms = 300
connect_attempts = 2

[[service]]
name = "tiny"
vip = "{VIP}"
ports = [82]
mode = "splice"
pool = "small"
via = "clients"
fault_tolerance = "none"
max_connections = 3

[[service]]
name = "notyet"
vip = "{VIP}"
ports = [83]
mode = "splice"
pool = "later"
via = "clients"
fault_tolerance = "none"
"#
    );
    splice_rack("spf", &ports, &services, dir)
}

/// One `GET /whoami` on `s`; the reply's body, or the error that ended it.
fn whoami(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(b"GET /whoami HTTP/1.1\r\nHost: site.example.com\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, String::from_utf8_lossy(&got).into_owned()));
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0);
            if body.len() >= len {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return Ok(body.to_string());
            }
        }
    }
}

/// A connection to the VIP's `port` from the client namespace (5 s to connect, 10 s read
/// timeout).
fn connect(port: u16) -> std::io::Result<TcpStream> {
    connect_within(port, Duration::from_secs(5))
}

fn connect_within(port: u16, limit: Duration) -> std::io::Result<TcpStream> {
    spawn_in_ns(NS[0], move || {
        let s = TcpStream::connect_timeout(&format!("{VIP}:{port}").parse().unwrap(), limit)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(s)
    })
    .join()
    .unwrap()
}

fn splice_counters(sock: &Path) -> serde_json::Value {
    ctl_json(sock, "stats")["splice"].clone()
}

/// Waits (5 s at most: the control thread publishes the counters a few times a second)
/// until the splice counter `name` (from `ctl stats`) is at least `n`; its value then.
fn counter_reaches(sock: &Path, name: &str, n: u64) -> u64 {
    let get = || splice_counters(sock)[name].as_u64().unwrap_or(0);
    wait_for(Duration::from_secs(5), || get() >= n);
    get()
}

#[test]
fn refused_silent_and_missing_peers_and_a_full_table_with_real_peers() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (network namespaces, TAP ports)");
    let mut lab = Lab::new(&NS, std::env::temp_dir().join(format!("tsf-{}", std::process::id())));
    let dir = lab.dir.clone();
    cookie_key(&dir);
    let report = dir.join("report.json");
    lab.start(&rack(&dir), &[std::ffi::OsStr::new("--report-json"), report.as_os_str()], &[("tsf-c0", NS[0], "10.79.0.11/24"), ("tsf-b10", NS[1], "10.79.1.21/24"), ("tsf-b20", NS[2], "10.79.2.21/24")]);
    // b1 drops every SYN to :81 (silent); nothing listens on its :80 (its kernel resets).
    for rule in [
        &["nft", "add", "table", "inet", "tsf"][..],
        &["nft", "add", "chain", "inet", "tsf", "in", "{ type filter hook input priority 0 ; }"],
        &["nft", "add", "rule", "inet", "tsf", "in", "tcp", "dport", "81", "drop"],
    ] {
        let out = in_ns(NS[1], rule);
        assert!(out.status.success(), "{rule:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // b2 serves :80 and :81.
    for port in [80u16, 81] {
        let (stop, (tx, rx)) = (lab.stop.clone(), mpsc::channel());
        spawn_in_ns(NS[2], move || match TcpListener::bind(("0.0.0.0", port)) {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                rust_server(l, "b2", stop);
            }
            Err(e) => drop(tx.send(Err(e))),
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("b2 started").unwrap_or_else(|e| panic!("b2 cannot listen on :{port}: {e}"));
    }
    let sock = dir.join("ctl.sock");
    // Five members up and in their tables; the sixth (pool `later`) has no host yet.
    assert!(members_up_of(&sock, 5, 6), "backends not resolved: {}", String::from_utf8_lossy(&ctl(&sock, &["members"]).stdout));

    // 1. A backend that refuses: every connection is answered by b2, the client never
    //    sees b1's RST. b1 (99 % of the table) is tried once: after its RST it is passed
    //    over for SUSPECT_MS (10 s) while b2 is live.
    for i in 0..6 {
        let mut s = connect(80).unwrap();
        assert_eq!(whoami(&mut s).unwrap_or_else(|e| panic!("connection {i} to :80: {e}")), "b2");
    }
    assert_eq!(counter_reaches(&sock, "backend_refused", 1), 1, "b1 refused once, then passed over: {}", splice_counters(&sock));

    // 2. A backend that stays silent: after two SYNs (0.3 + 0.6 s) the connection goes to
    //    b2. (A connection the hash sends to b2 first, 1 in 100, is answered at once: up to
    //    five are made until one was held up by b1.)
    let mut waited = None;
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut s = connect(81).unwrap();
        assert_eq!(whoami(&mut s).unwrap(), "b2");
        if t0.elapsed() >= Duration::from_millis(800) {
            waited = Some(t0.elapsed());
            break;
        }
    }
    assert!(waited.is_some(), "no connection to :81 waited for b1's SYNs to go unanswered");
    assert!(counter_reaches(&sock, "backend_timeouts", 1) >= 1, "{}", splice_counters(&sock));

    // 3. A first request that never completes: reset after first_request_ms.
    let mut s = connect(80).unwrap();
    s.write_all(b"GET /whoami HTTP/1.1\r\nHost: site.exa").unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let r = s.read(&mut buf);
    assert!(r.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionReset), "{r:?}");
    assert!(t0.elapsed() >= Duration::from_millis(1000) && t0.elapsed() < Duration::from_secs(8), "reset after {:?}", t0.elapsed());
    assert_eq!(counter_reaches(&sock, "first_request_timeouts", 1), 1);

    // 4. A full table: three connections held, the fourth refused, the three still served.
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(82).unwrap()).collect();
    for s in &mut held {
        assert_eq!(whoami(s).unwrap(), "b2");
    }
    // `ctl members` shows the backend's open connections.
    let small_conns = || {
        ctl_json(&sock, "members")["members"].as_array().and_then(|m| m.iter().find(|m| m["service"] == "small")).and_then(|m| m["connections"].as_u64())
    };
    assert!(wait_for(Duration::from_secs(5), || small_conns() == Some(3)), "pool small's backend: {:?} connections", small_conns());
    // The handshake is the appliance's own (SYN cookie); its RST answers the handshake's
    // last ACK, so it can already be there when connect() looks at the socket.
    let refused = connect(82).and_then(|mut s| whoami(&mut s));
    assert!(refused.as_ref().is_err_and(|e| e.kind() == ErrorKind::ConnectionReset), "{refused:?}");
    // (Each of the client's segments that still carries the valid cookie is refused again.)
    assert!(counter_reaches(&sock, "refused_full", 1) >= 1);
    for s in &mut held {
        assert_eq!(whoami(s).unwrap(), "b2", "an established splice survives the refusal");
    }
    // One closed: once its entry is gone (a closed splice lingers a moment) a new one is taken.
    drop(held.pop());
    let again = wait_for(Duration::from_secs(10), || connect(82).and_then(|mut s| whoami(&mut s)).is_ok_and(|b| b == "b2"));
    assert!(again, "no connection taken after one of the three closed: {}", splice_counters(&sock));
    for s in &mut held {
        assert_eq!(whoami(s).unwrap(), "b2");
    }
    drop(held);

    // 5. A service whose backend has not been there since the start: no SYN-ACK (so no
    //    RST after the handshake either, whatever `no_backend` says); the client's
    //    retransmitted SYN (after 1 s, then 2 s more) is answered once it is. (`ctl stats`
    //    is refreshed every 250 ms: two refreshes carry the cases above in full.)
    std::thread::sleep(Duration::from_millis(600));
    let cookies_before = splice_counters(&sock)["syn_cookies"].as_u64().unwrap_or(0);
    let pending = std::thread::spawn(|| {
        let t0 = Instant::now();
        let r = connect_within(83, Duration::from_secs(10)).and_then(|mut s| whoami(&mut s));
        (r, t0.elapsed())
    });
    assert!(counter_reaches(&sock, "syns_no_backend", 1) >= 1, "{}", splice_counters(&sock));
    assert_eq!(splice_counters(&sock)["syn_cookies"].as_u64(), Some(cookies_before), "no SYN-ACK while no backend is live");
    let out = in_ns(NS[2], &["ip", "addr", "add", "10.79.2.22/24", "dev", "tsf-b20"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (r, took) = pending.join().unwrap();
    assert_eq!(r.unwrap_or_else(|e| panic!("connection to :83 once its backend is up: {e}")), "b2");
    assert!(took >= Duration::from_millis(900), "answered after {took:?}: the first SYN was not dropped");
    assert!(members_up(&sock, 6));

    let (status, stderr) = lab.appliance.take().unwrap().stop();
    assert!(status.success(), "appliance: {status}: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let sp = &v["splice"];
    eprintln!("splice counters: {sp}");
    // Each case under its own name, and nothing else went wrong.
    assert!(sp["backend_refused"].as_u64().unwrap() >= 1, "{sp}");
    assert!(sp["backend_timeouts"].as_u64().unwrap() >= 1, "{sp}");
    assert_eq!(sp["first_request_timeouts"], 1, "{sp}");
    assert!(sp["refused_full"].as_u64().unwrap() >= 1, "{sp}");
    assert!(sp["syns_no_backend"].as_u64().unwrap() >= 1, "{sp}");
    assert_eq!(sp["refused_no_backend"], 0, "no handshake answered without a backend: {sp}");
    assert_eq!(sp["backends_exhausted"], 0, "{sp}");
    assert_eq!(sp["bad_requests"], 0, "{sp}");
    // Each service counts its own cases.
    let per = &v["splice_services"];
    let n = |svc: &str, k: &str| per[svc][k].as_u64().unwrap_or_else(|| panic!("no {svc}.{k} in {per}"));
    assert!(n("web", "backend_refused") >= 1 && n("slow", "backend_refused") == 0, "{per}");
    assert!(n("slow", "backend_timeouts") >= 1 && n("web", "backend_timeouts") == 0, "{per}");
    assert_eq!((n("web", "first_request_timeouts"), n("tiny", "first_request_timeouts")), (1, 0), "{per}");
    assert!(n("tiny", "refused_full") >= 1 && n("web", "refused_full") == 0, "{per}");
    assert!(n("notyet", "syns_no_backend") >= 1 && n("tiny", "syns_no_backend") == 0, "{per}");
    for k in ["established", "syn_cookies", "to_client_bytes"] {
        let sum: u64 = ["web", "slow", "tiny", "notyet"].iter().map(|s| n(s, k)).sum();
        assert_eq!(sum, sp[k].as_u64().unwrap(), "{k}: the services add up to the total");
    }
}
