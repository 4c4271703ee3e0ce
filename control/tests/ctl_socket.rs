//! The ctl socket: permissions, the protocol round trip, hostile and broken clients, stale
//! and live sockets, the `tapsplice ctl` client and its tables.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tapsplice::ctl::cli::{self, CtlArgs, CtlCmd};
use tapsplice::ctl::client::{Client, ClientError};
use tapsplice::ctl::handler::{self, Handler, Sources};
use tapsplice::ctl::proto::*;
use tapsplice::ctl::server::{self, Limits};
use tapsplice::metrics::{LatencySnapshot, LcoreMetrics, MetricsSnapshot, PortMetrics};

const T: Duration = Duration::from_secs(5);

/// A fresh directory unique to this test (not created: the server creates it).
fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "tsctl-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn snapshot() -> MetricsSnapshot {
    let mut drops = BTreeMap::new();
    drops.insert("no_route".to_string(), 12_345u64);
    drops.insert("tx_full".to_string(), 0);
    MetricsSnapshot {
        node: "fw1".into(),
        role: "forward".into(),
        version: "0.1.0".into(),
        uptime_s: 7384.0,
        control_loop: tapsplice::loop_watch::LoopStats { period_ms: 25.0, iterations: 295_000, late: 3, stalls: 1, max_gap_ms: 4200.0 },
        snapshot_age_ms: 4500.0,
        ports: vec![
            PortMetrics {
                name: "wan".into(),
                device: "net_tap0".into(),
                mac: "02:00:00:00:0a:01".into(),
                link_up: true,
                speed_mbps: 10_000,
                rx_packets: 1_234_567,
                rx_bytes: 98_765_432,
                tx_packets: 7,
                tx_bytes: 700,
                rx_queue_packets: vec![1_000_000, 234_567],
                ..Default::default()
            },
            PortMetrics { name: "lan".into(), device: "net_tap1".into(), link_up: false, ..Default::default() },
        ],
        lcores: vec![LcoreMetrics { lcore: 1, rx_packets: 1_234_567, polls: 100, empty_polls: 25, drops, ..Default::default() }],
        burst_latency: LatencySnapshot {
            count: 3,
            p50_ns: 850,
            p90_ns: 12_345,
            p99_ns: 12_345,
            p999_ns: 12_345,
            max_ns: 12_345,
            buckets: vec![(1024, 2), (16384, 1)],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The standard handler over [`snapshot`], plus `boom` (panics) and `echo` (returns args).
fn test_handler() -> Handler {
    let sources = Sources { snapshot: Arc::new(snapshot), events: None, fence: None, splices: Default::default(), links: Default::default() };
    Arc::new(move |req: Request| match req.cmd.as_str() {
        "boom" => panic!("test handler exploded"),
        "echo" => Response::ok(req.id, Value::Object(req.args.clone())),
        _ => handler::answer(&sources, &req),
    })
}

struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(path: &Path) -> Server {
        Server::start_with(path, Limits::default())
    }
    fn start_with(path: &Path, limits: Limits) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = server::spawn_with(path, test_handler(), stop.clone(), limits).expect("ctl server starts");
        Server { path: path.to_path_buf(), stop, thread: Some(thread) }
    }
    fn client(&self) -> Client {
        Client::connect(&self.path).expect("connect")
    }
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("ctl thread exits cleanly");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(d) = self.path.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn code(r: &Response) -> &str {
    r.error.as_ref().map(|e| e.code.as_str()).unwrap_or("ok")
}

#[test]
fn socket_is_0600_in_a_0755_directory_and_removed_on_stop() {
    let root = scratch("mode");
    let dir = root.join("run").join("tapsplice");
    let path = dir.join("fw1.sock");
    let mut srv = Server::start(&path);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let dmode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(dmode & 0o777, 0o755, "directory mode {dmode:o}");
    let t0 = Instant::now();
    srv.stop();
    assert!(t0.elapsed() < Duration::from_secs(2), "stop took {:?}", t0.elapsed());
    assert!(!path.exists(), "socket file left behind");
    drop(srv);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn status_round_trip() {
    let dir = scratch("status");
    let srv = Server::start(&dir.join("ctl.sock"));
    let mut c = srv.client();
    let v = c.call(&Command::Status).unwrap();
    let s: StatusResult = serde_json::from_value(v).unwrap();
    assert_eq!((s.node.as_str(), s.role.as_str(), s.proto), ("fw1", "forward", 1));
    assert_eq!((s.ports.total, s.ports.up, s.ports.down.clone()), (2, 1, vec!["lan".to_string()]));
    assert_eq!(s.totals.rx_packets, 1_234_567);
    assert_eq!(s.totals.drops, 12_345);
    // The raw line carries v and the id back.
    let r = c.send_line(br#"{"id":41,"cmd":"status"}"#, T).unwrap();
    assert_eq!((r.v, r.id, r.ok), (1, Some(41), true));
    for cmd in [Command::Ports, Command::Stats, Command::Histogram, Command::Events, Command::Peers] {
        c.call(&cmd).unwrap_or_else(|e| panic!("{}: {e}", cmd.name()));
    }
}

#[test]
fn malformed_json_gets_bad_request_and_the_connection_stays_usable() {
    let dir = scratch("malformed");
    let srv = Server::start(&dir.join("ctl.sock"));
    let mut c = srv.client();
    for bad in [
        &b"{not json"[..],
        b"[1,2,3]",
        b"\"status\"",
        b"{\"cmd\":\"status\"}",
        b"{\"id\":\"seven\",\"cmd\":\"status\"}",
        b"{\"id\":1,\"v\":2,\"cmd\":\"status\"}",
        b"{\"id\":1,\"cmd\":\"status\",\"args\":[]}",
        b"\xff\xfe\x00garbage",
        &[b'['; 5000],
    ] {
        let r = c.send_line(bad, T).unwrap();
        assert_eq!(code(&r), "bad_request", "for {:?}: {r:?}", String::from_utf8_lossy(bad));
        assert!(!r.ok && r.result.is_none());
    }
    let r = c.send_line(br#"{"id":2,"cmd":"status"}"#, T).unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.id, Some(2));
}

#[test]
fn pipelined_requests_crlf_and_a_last_line_without_newline_are_answered_in_order() {
    let dir = scratch("pipeline");
    let srv = Server::start(&dir.join("ctl.sock"));
    let mut s = UnixStream::connect(&srv.path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"{\"id\":1,\"cmd\":\"echo\",\"args\":{\"n\":1}}\r\n\n{\"id\":2,\"cmd\":\"status\"}\n{\"id\":3,\"cmd\":\"echo\"}")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut lines = Vec::new();
    BufReader::new(&s).lines().for_each(|l| lines.push(l.unwrap()));
    let ids: Vec<Option<u64>> = lines.iter().map(|l| serde_json::from_str::<Response>(l).unwrap().id).collect();
    assert_eq!(ids, vec![Some(1), Some(2), Some(3)], "{lines:?}");
    assert!(lines[0].contains("\"result\":{\"n\":1}"));
}

#[test]
fn an_over_long_line_is_refused_and_the_server_keeps_serving() {
    let dir = scratch("long");
    let srv = Server::start(&dir.join("ctl.sock"));
    let mut s = UnixStream::connect(&srv.path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut big = br#"{"id":1,"cmd":"echo","args":{"x":""#.to_vec();
    big.resize(big.len() + server::MAX_LINE + 10, b'a');
    big.extend_from_slice(b"\"}}\n");
    // The server may close before it has read everything; a write error is fine.
    let _ = s.write_all(&big);
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let r: Response = serde_json::from_str(&line).unwrap();
    assert_eq!(code(&r), "bad_request");
    assert!(r.error.unwrap().message.contains("longer than 65536"));
    // Then the connection is closed.
    let mut rest = Vec::new();
    let _ = (&s).read_to_end(&mut rest);
    assert!(rest.is_empty());
    // A line just under the limit is fine.
    let mut c = srv.client();
    let mut ok = br#"{"id":5,"cmd":"echo","args":{"x":""#.to_vec();
    ok.resize(server::MAX_LINE - 3, b'b');
    ok.extend_from_slice(b"\"}}");
    assert_eq!(ok.len(), server::MAX_LINE);
    let r = c.send_line(&ok, T).unwrap();
    assert!(r.ok, "{:?}", r.error);
    assert!(c.call(&Command::Status).is_ok());
}

#[test]
fn unknown_command_and_bad_arguments() {
    let dir = scratch("unknown");
    let srv = Server::start(&dir.join("ctl.sock"));
    let mut c = srv.client();
    for cmd in ["drain", "resplice", "conntrack", "reboot"] {
        match c.call_raw(cmd, Map::new(), T) {
            Err(ClientError::Remote(e)) => {
                assert!(e.is(ErrorCode::UnknownCommand), "{e}");
                assert!(e.message.contains("status"), "lists the known commands: {e}");
            }
            other => panic!("{cmd}: {other:?}"),
        }
    }
    let args = json!({"verbose": true}).as_object().cloned().unwrap();
    match c.call_raw("status", args, T) {
        Err(ClientError::Remote(e)) => assert!(e.is(ErrorCode::BadRequest)),
        other => panic!("{other:?}"),
    }
    // fence: no confirmation → refused; confirmed → the handler's answer (not_implemented here).
    let args = json!({"node": "srv1"}).as_object().cloned().unwrap();
    match c.call_raw("fence", args, T) {
        Err(ClientError::Remote(e)) => assert!(e.is(ErrorCode::Refused), "{e}"),
        other => panic!("{other:?}"),
    }
    match c.call(&Command::Fence { node: "srv1".into() }) {
        Err(ClientError::Remote(e)) => assert!(e.is(ErrorCode::NotImplemented), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(c.call(&Command::Status).is_ok());
}

#[test]
fn a_handler_panic_is_internal_and_the_server_keeps_serving() {
    let dir = scratch("panic");
    let srv = Server::start(&dir.join("ctl.sock"));
    let mut c = srv.client();
    for _ in 0..3 {
        let r = c.send_line(br#"{"id":9,"cmd":"boom"}"#, T).unwrap();
        assert_eq!((code(&r), r.id), ("internal", Some(9)));
        assert!(r.error.unwrap().message.contains("test handler exploded"));
    }
    assert!(c.call(&Command::Status).is_ok(), "same connection still answers");
    assert!(srv.client().call(&Command::Status).is_ok(), "new connections too");
}

#[test]
fn a_second_server_on_a_live_socket_is_refused() {
    let dir = scratch("live");
    let path = dir.join("ctl.sock");
    let srv = Server::start(&path);
    let stop = Arc::new(AtomicBool::new(false));
    let e = server::spawn(&path, test_handler(), stop).expect_err("second server must be refused");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains("another process is serving the ctl socket"), "{e}");
    assert!(srv.client().call(&Command::Status).is_ok(), "the first one is untouched");
    assert!(path.exists());
}

#[test]
fn a_stale_socket_is_replaced_and_a_non_socket_is_refused() {
    let dir = scratch("stale");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ctl.sock");
    drop(UnixListener::bind(&path).unwrap()); // leaves the file, nobody listening
    assert!(path.exists());
    let srv = Server::start(&path);
    assert!(srv.client().call(&Command::Status).is_ok());
    drop(srv);

    let dir = scratch("notsock");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ctl.sock");
    std::fs::write(&path, "precious").unwrap();
    let e = server::spawn(&path, test_handler(), Arc::new(AtomicBool::new(false))).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    let _ = std::fs::remove_dir_all(&dir);

    let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
    let e = server::spawn(&long, test_handler(), Arc::new(AtomicBool::new(false))).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn connections_beyond_the_limit_are_refused_and_idle_ones_closed() {
    let dir = scratch("limit");
    let limits = Limits { max_connections: 2, idle_timeout: Duration::from_millis(1500), ..Limits::default() };
    let srv = Server::start_with(&dir.join("ctl.sock"), limits);
    let mut a = srv.client();
    let mut b = srv.client();
    assert!(a.call(&Command::Status).is_ok() && b.call(&Command::Status).is_ok());
    let mut c = srv.client();
    let r = c.read_response(T).unwrap();
    assert_eq!(code(&r), "refused", "{r:?}");
    // Idle connections are closed, which frees the slots.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(a.call(&Command::Status).is_err(), "idle connection should have been closed");
    assert!(srv.client().call(&Command::Status).is_ok());
}

#[test]
fn garbage_and_abrupt_clients_do_not_hurt_the_server() {
    let dir = scratch("garbage");
    let srv = Server::start(&dir.join("ctl.sock"));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..50 {
        let mut s = UnixStream::connect(&srv.path).unwrap();
        let len = 1 + (i * 997) % 3000;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = s.write_all(&bytes);
        if i % 2 == 0 {
            let _ = s.write_all(b"\n");
        }
        drop(s); // hang up without reading
    }
    // The connection threads notice the hang-ups within a moment; until then a new client
    // may be refused (connection limit), never left hanging.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match srv.client().call(&Command::Status) {
            Ok(_) => break,
            Err(ClientError::Remote(e)) if e.is(ErrorCode::Refused) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn permission_denied_for_another_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch one thread to another user");
        return;
    }
    let dir = scratch("perm");
    let srv = Server::start(&dir.join("ctl.sock"));
    let path = srv.path.clone();
    // The raw syscall changes the credentials of this thread only (glibc's setuid would
    // change every thread of the test process).
    let result = std::thread::spawn(move || {
        // SAFETY: plain syscall; affects only the calling thread.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(rc, 0, "setresuid");
        let args = CtlArgs { socket: path.clone(), json: false, cmd: CtlCmd::Status };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cli::execute(&args, &mut out, &mut err);
        (Client::connect(&path).err().map(|e| e.to_string()), code, String::from_utf8(err).unwrap())
    })
    .join()
    .unwrap();
    let (connect_err, exit, stderr) = result;
    assert!(connect_err.unwrap_or_default().contains("permission denied"));
    assert_eq!(exit, cli::EXIT_UNREACHABLE);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("permission denied on the ctl socket"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// The CLI against a live server.

fn run_cli(socket: &Path, json: bool, cmd: CtlCmd) -> (u8, String, String) {
    let args = CtlArgs { socket: socket.to_path_buf(), json, cmd };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::execute(&args, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn cli_prints_tables_json_and_one_line_errors() {
    let dir = scratch("cli");
    let srv = Server::start(&dir.join("ctl.sock"));
    let (code, out, err) = run_cli(&srv.path, false, CtlCmd::Status);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.contains("node     fw1") && out.contains("1 of 2 up (down: lan)") && out.contains("1,234,567 packets  98.8 MB"), "{out}");
    let (code, out, _) = run_cli(&srv.path, false, CtlCmd::Ports);
    assert_eq!(code, 0);
    assert!(out.starts_with("PORT  DEVICE"), "{out}");
    assert!(out.contains("up 10G") && out.contains("1,000,000 / 234,567"), "{out}");

    let (code, out, _) = run_cli(&srv.path, true, CtlCmd::Ports);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(v["ports"][0]["rx_queue_packets"], json!([1_000_000, 234_567]));
    assert_eq!(v["ports"][1]["link"]["up"], json!(false));

    for cmd in [CtlCmd::Stats, CtlCmd::Histogram, CtlCmd::Events, CtlCmd::Peers] {
        let (code, out, err) = run_cli(&srv.path, false, cmd.clone());
        assert_eq!(code, 0, "{cmd:?}: {err}");
        assert!(!out.is_empty());
    }

    // The appliance answers an error: exit 1, one line on stderr; with --json the error
    // object on stdout as well.
    let fence = CtlCmd::Fence { node: "srv1".into(), yes_really: true };
    let (code, out, err) = run_cli(&srv.path, false, fence.clone());
    assert_eq!(code, cli::EXIT_REMOTE_ERROR);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("tapsplice: ctl fence: the appliance answered not_implemented:"), "{err}");
    let (code, out, _) = run_cli(&srv.path, true, fence);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["code"], "not_implemented");

    // A stale socket: nobody listening.
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let (code, _, err) = run_cli(&stale, false, CtlCmd::Status);
    assert_eq!(code, cli::EXIT_UNREACHABLE);
    assert!(err.contains("nothing is listening"), "{err}");
    // Not a socket.
    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    let (code, _, err) = run_cli(&file, false, CtlCmd::Status);
    assert_eq!(code, cli::EXIT_UNREACHABLE);
    assert!(err.contains("is not a socket"), "{err}");
}

#[test]
fn cli_reports_a_server_that_does_not_speak_the_protocol() {
    let dir = scratch("notctl");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bogus.sock");
    let l = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
    });
    let (code, _, err) = run_cli(&path, false, CtlCmd::Status);
    t.join().unwrap();
    assert_eq!(code, cli::EXIT_UNREACHABLE);
    assert!(err.contains("unexpected answer") && err.lines().count() == 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Renderers: the expected columns for every command.

/// The header line's column names, in order (split on runs of 2+ spaces).
fn header_columns(table: &str) -> Vec<String> {
    let header = table.lines().next().unwrap();
    header.split("  ").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

#[test]
fn renderers_have_the_expected_columns() {
    let snap = snapshot();

    let status = cli::render_status(&handler::status_result(&snap));
    let keys: Vec<&str> = status.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(keys, ["node", "role", "version", "uptime", "ports", "lcores", "peers", "rx", "tx", "missed", "errors", "drops", "control"]);
    assert!(status.contains("uptime   2h03m04s"), "{status}");
    assert!(
        status.contains("control  loop every 25 ms, largest gap 4200 ms, 3 late (> 2 periods), 1 stalls (see events); NOT RUNNING for 4.5 s (snapshot age)"),
        "{status}"
    );
    assert!(status.contains("drops    12,345"), "{status}");

    let ports = cli::render_ports(&handler::ports_result(&snap));
    assert_eq!(header_columns(&ports), cli::PORTS_COLUMNS);
    assert_eq!(ports.lines().count(), 3);
    let wan = ports.lines().nth(1).unwrap();
    for cell in ["wan", "net_tap0", "02:00:00:00:0a:01", "up 10G", "1,234,567", "98.8 MB", "700 B", "1,000,000 / 234,567"] {
        assert!(wan.contains(cell), "{cell:?} not in {wan:?}");
    }
    assert!(ports.lines().nth(2).unwrap().contains("down"));
    // Right-aligned numbers end where their header ends.
    let header = ports.lines().next().unwrap();
    let end = header.find("RX PKTS").unwrap() + "RX PKTS".len();
    assert_eq!(&wan[end - "1,234,567".len()..end], "1,234,567", "{ports}");

    let stats = cli::render_stats(&handler::stats_result(&snap));
    let (lcores, drops) = stats.split_once("\n\n").unwrap();
    assert_eq!(header_columns(lcores), cli::STATS_COLUMNS);
    assert!(lcores.lines().nth(1).unwrap().contains("75.0%"), "{lcores}");
    assert_eq!(header_columns(drops), cli::DROPS_COLUMNS);
    assert!(drops.contains("no_route") && drops.contains("1: 12,345"), "{drops}");
    assert!(!drops.contains("tx_full"), "zero reasons are left out: {drops}");

    let hist = cli::render_histogram(&handler::histogram_result(&snap));
    let (summary, table) = hist.split_once("\n\n").unwrap();
    let keys: Vec<&str> = summary.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(keys, ["bursts", "p50", "p90", "p99", "p99.9", "max"]);
    assert!(summary.contains("850 ns") && summary.contains("12.3 µs"), "{summary}");
    assert_eq!(header_columns(table), cli::HISTOGRAM_COLUMNS);
    assert!(table.contains("1.02 µs") && table.contains("66.67%"), "{table}");

    let events = EventsResult {
        events: vec![Event {
            ts_unix_ms: 1_709_251_199_123,
            kind: "peer_down".into(),
            node: Some("p2".into()),
            message: "3 heartbeats missed".into(),
        }],
    };
    let ev = cli::render_events(&events);
    assert_eq!(header_columns(&ev), cli::EVENTS_COLUMNS);
    assert!(ev.contains("2024-02-29 23:59:59.123Z  peer_down  p2"), "{ev}");
    let none = cli::render_events(&EventsResult::default());
    assert_eq!(header_columns(&none), cli::EVENTS_COLUMNS);
    assert!(none.contains("(no events)"));

    let peers = PeersResult {
        peers: vec![PeerInfo {
            node: "p2".into(),
            class: "appliance".into(),
            state: "up".into(),
            incarnation: 4,
            last_heard_ms: Some(12),
            heartbeats_received: 123_456,
            heartbeats_missed: 0,
            workload: Some(0.5),
        }],
    };
    let pr = cli::render_peers(&peers);
    assert_eq!(header_columns(&pr), cli::PEERS_COLUMNS);
    assert!(pr.contains("12 ms") && pr.contains("123,456") && pr.contains("0.50"), "{pr}");
    assert!(cli::render_peers(&PeersResult::default()).contains("(no peers)"));

    let f = cli::render_fence("srv1", &json!({"node": "srv1", "outcome": "off_verified", "duration_ms": 120, "message": "status=off"}));
    assert_eq!(f, "fence srv1: off_verified in 120 ms: status=off\n");
}
