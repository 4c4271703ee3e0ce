//! Layer-7 routing through the splice, end to end: the real appliance on TAP ports, curl
//! and a kernel TCP client in a client namespace, and two real HTTP servers in backend
//! namespaces — a Rust test server (pool `web`) and Debian's `python3 -m http.server`
//! (pool `static`).
//!
//! ```text
//!  ns c 10.77.0.11 ── [clients  sp  web] ── ns s1 10.77.1.21:80 (Rust server, pool web)
//!                      10.77.0.2    │ 10.77.1.2
//!                  VIP 10.77.0.100  [static] ── ns s2 10.77.2.21:80 (python3 http.server, pool static)
//!                                   10.77.2.2
//! ```
//!
//! Rules: Host `static.example.com` → static; path prefix `/assets/` (GET, HEAD) → static;
//! everything else → web. Shown: host- and path-based routing to the two pools, GET
//! downloads (1 MB file, 10 MB generated) byte-exact by SHA-256, a 5 MB POST upload whose
//! digest the server returns, three keep-alive requests on one connection (all to the
//! pool the first one chose), a request that is not HTTP reset, and the appliance's own
//! count of routed connections.

mod common;
use common::{cookie_key, ctl, gen_byte, in_ns, members_up, rust_server, spawn_in_ns, splice_rack, wait_for, Lab};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const VIP: &str = "10.77.0.100";
const NS: [&str; 3] = ["tsh-c", "tsh-s1", "tsh-s2"];

fn curl(args: &[&str]) -> Vec<u8> {
    let mut a = vec!["curl", "-sS", "--max-time", "30"];
    a.extend_from_slice(args);
    let out = in_ns(NS[0], &a);
    assert!(out.status.success(), "curl {:?}: {}", args, String::from_utf8_lossy(&out.stderr));
    out.stdout
}


fn rack(dir: &Path) -> String {
    let ports = [("clients", "tsh-c0", "10.77.0.2/24"), ("web", "tsh-w0", "10.77.1.2/24"), ("static", "tsh-s0", "10.77.2.2/24")];
    let services = format!(
        r#"[[pool]]
name = "web"
members = [{{ address = "10.77.1.21" }}]

[[pool]]
name = "static"
members = [{{ address = "10.77.2.21", port = 8000 }}]

[[service]]
name = "site"
vip = "{VIP}"
ports = [80]
mode = "splice"
pool = "web"
via = "clients"
fault_tolerance = "none"

[service.timeouts]
first_request_ms = 2000

[[service.route]]
host = "static.example.com"
pool = "static"

[[service.route]]
path_prefix = "/assets/"
methods = ["GET", "HEAD"]
pool = "static"
"#
    );
    splice_rack("sph", &ports, &services, dir)
}

#[test]
fn http_requests_are_routed_by_host_and_path_and_spliced_byte_exact() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (network namespaces, TAP ports)");
    let mut lab = Lab::new(&NS, std::env::temp_dir().join(format!("tsh-{}", std::process::id())));
    let dir = lab.dir.clone();
    std::fs::create_dir_all(dir.join("www/assets")).unwrap();
    // The cookie secret (private, as the appliance demands) and the static files.
    cookie_key(&dir);
    std::fs::write(dir.join("www/index.html"), b"static index\n").unwrap();
    let asset: Vec<u8> = (0..1_000_000usize).map(|i| gen_byte(i * 7 + 3)).collect();
    std::fs::write(dir.join("www/assets/app.js"), &asset).unwrap();

    // The appliance, then its TAPs into the namespaces.
    let report = dir.join("report.json");
    lab.start(&rack(&dir), &[std::ffi::OsStr::new("--report-json"), report.as_os_str()], &[("tsh-c0", NS[0], "10.77.0.11/24"), ("tsh-w0", NS[1], "10.77.1.21/24"), ("tsh-s0", NS[2], "10.77.2.21/24")]);

    // Both backends resolved by ARP and in their pools' tables (`ctl members`: per pool).
    let sock = dir.join("ctl.sock");
    assert!(members_up(&sock, 2), "backends not resolved");

    // Backends: the Rust server in s1, Debian's python3 http.server in s2.
    let stop = lab.stop.clone();
    let (ltx, lrx) = mpsc::channel();
    spawn_in_ns(NS[1], move || {
        let l = TcpListener::bind("0.0.0.0:80").expect("bind :80 in s1");
        ltx.send(()).unwrap();
        rust_server(l, "s1", stop);
    });
    lrx.recv_timeout(Duration::from_secs(5)).expect("s1 listening");
    let py = if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
    lab.children.push(
        Command::new("ip")
            .args(["netns", "exec", NS[2], py, "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory"])
            .arg(dir.join("www"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    );
    assert!(wait_for(Duration::from_secs(10), || in_ns(NS[2], &["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:8000/index.html"]).status.success()), "python http.server did not start");

    // Host-based: static.example.com → the python server; any other host → s1.
    assert_eq!(curl(&["-H", "Host: static.example.com", &format!("http://{VIP}/index.html")]), b"static index\n");
    assert_eq!(curl(&["-H", "Host: shop.example.com", &format!("http://{VIP}/index.html")]), b"s1");
    // Path-based: /assets/ (GET) → static, byte-exact 1 MB.
    let got = curl(&[&format!("http://{VIP}/assets/app.js")]);
    assert_eq!(Sha256::digest(&got), Sha256::digest(&asset), "asset: {} bytes", got.len());
    // 10 MB generated download from s1.
    let got = curl(&[&format!("http://{VIP}/bytes/10000000")]);
    let want: Vec<u8> = (0..10_000_000).map(gen_byte).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "download differs");
    // 5 MB POST upload to s1: it returns the length and digest it received.
    let body: Vec<u8> = (0..5_242_880usize).map(|i| gen_byte(i ^ 0x5a5a)).collect();
    let up = dir.join("upload.bin");
    std::fs::write(&up, &body).unwrap();
    let reply = curl(&["--data-binary", &format!("@{}", up.display()), "-H", "Content-Type: application/octet-stream", "-H", "Expect:", &format!("http://{VIP}/upload")]);
    assert_eq!(String::from_utf8_lossy(&reply), format!("s1 {} {:x}", body.len(), Sha256::digest(&body)));

    // Keep-alive: three requests on one connection; the first decides the pool for all.
    let replies = spawn_in_ns(NS[0], || {
        let mut s = TcpStream::connect((VIP, 80)).expect("connect to the VIP");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut servers = Vec::new();
        for path in ["/whoami", "/assets/app.js", "/whoami"] {
            write!(s, "GET {path} HTTP/1.1\r\nHost: shop.example.com\r\n\r\n").unwrap();
            let (mut server, mut len) = (String::new(), 0usize);
            let mut status = String::new();
            r.read_line(&mut status).unwrap();
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("x-server:") {
                    server = v.trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut b = vec![0u8; len];
            r.read_exact(&mut b).unwrap();
            servers.push(server);
        }
        servers
    })
    .join()
    .unwrap();
    assert_eq!(replies, vec!["s1", "s1", "s1"], "a keep-alive connection stays on its backend");

    // `ctl splices`: a connection held open shows up with its tuples and state.
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (open_tx, open_rx) = mpsc::channel::<u16>();
    let holder = spawn_in_ns(NS[0], move || {
        let mut s = TcpStream::connect((VIP, 80)).expect("connect");
        write!(s, "GET /whoami HTTP/1.1\r\nHost: shop.example.com\r\n\r\n").unwrap();
        let mut b = [0u8; 256];
        let _ = s.read(&mut b).unwrap();
        open_tx.send(s.local_addr().unwrap().port()).unwrap();
        let _ = held_rx.recv_timeout(Duration::from_secs(30));
    });
    let cport = open_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let ctl = |args: &[&str]| ctl(&sock, args);
    let out = ctl(&["--json", "splices", "--client", &format!("10.77.0.11:{cport}"), "--state", "established"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["matched"], 1, "{v}");
    let row = &v["splices"][0];
    assert_eq!((row["service"].as_str(), row["pool"].as_str(), row["backend"].as_str()), (Some("site"), Some("web"), Some("10.77.1.21:80")), "{row}");
    assert_eq!(row["vip"], format!("{VIP}:80"));
    assert!(row["nat"].as_str().unwrap().starts_with("10.77.1.2:"), "{row}");
    assert!(row["bytes_to_client"].as_u64().unwrap() > 0, "{row}");
    let text = ctl(&["splices"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&format!("10.77.0.11:{cport}")), "{}", String::from_utf8_lossy(&text.stdout));
    // `ctl members`: the splice pools' backends with the traffic spliced toward them.
    // (The view is published every 250 ms: wait for the upload to show.)
    let mut m = serde_json::Value::Null;
    let seen = wait_for(Duration::from_secs(5), || {
        m = serde_json::from_slice(&ctl(&["--json", "members"]).stdout).unwrap_or_default();
        let s1 = m["members"].as_array().and_then(|a| a.iter().find(|x| x["member"] == "10.77.1.21").cloned()).unwrap_or_default();
        s1["service"] == "web" && s1["packets"].as_u64().unwrap_or(0) > 1000
    });
    assert!(seen, "the 5 MB upload went to s1 in pool web: {m}");
    let bad = ctl(&["splices", "--state", "open"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected routing"), "{}", String::from_utf8_lossy(&bad.stderr));
    held_tx.send(()).unwrap();
    holder.join().unwrap();

    // Not HTTP: reset by the appliance, the backends never see it.
    let refused = spawn_in_ns(NS[0], || {
        let mut s = TcpStream::connect((VIP, 80)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
        let mut b = [0u8; 16];
        s.read(&mut b)
    })
    .join()
    .unwrap();
    assert!(refused.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset), "{refused:?}");

    // Stop the appliance and read its report: every HTTP connection was routed.
    let (status, stderr) = lab.appliance.take().unwrap().stop();
    assert!(status.success(), "appliance: {status}: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let sp = &v["splice"];
    eprintln!("splice counters: {sp}");
    // curl: 5 connections; keep-alive: 1; held open for ctl: 1; the TLS-looking one: 1.
    assert_eq!(sp["cookies_valid"], 8, "{sp}");
    assert_eq!(sp["routed"], 7, "{sp}");
    assert_eq!(sp["established"], 7, "{sp}");
    assert_eq!(sp["bad_requests"], 1, "{sp}");
    assert_eq!(sp["backends_exhausted"], 0, "{sp}");
    // Every splice's setup time is in the histogram (under a second here).
    let setup = &v["splice_setup_us"];
    assert_eq!(setup["count"], 7, "{setup}");
    assert!(setup["max_us"].as_u64().unwrap() <= 1 << 20, "{setup}");
}
