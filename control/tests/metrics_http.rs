//! The metrics endpoint over real sockets: the exposition parses as OpenMetrics text and
//! carries the snapshot's names, labels and values; other paths are 404; garbage, huge and
//! stalled requests do not stop the server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tapsplice::ctl::proto::{lacp_flags, BondInfo, BondMemberInfo};
use tapsplice::metrics::{
    self, FenceMetrics, HeartbeatMetrics, HttpLimits, LatencySnapshot, LcoreMetrics, MetricsSnapshot, PeerMetrics,
    PortMetrics, SnapshotCell, LATENCY_BOUNDS_NS,
};

fn snapshot() -> MetricsSnapshot {
    let mut drops = BTreeMap::new();
    for r in ["no_route", "tx_full", "malformed_ipv4"] {
        drops.insert(r.to_string(), 0);
    }
    drops.insert("no_route".into(), 17);
    let mut buckets: Vec<(u64, u64)> = LATENCY_BOUNDS_NS.iter().map(|b| (*b, 0)).collect();
    buckets[2].1 = 90; // <= 256 ns
    buckets[5].1 = 9; // <= 2048 ns
    let mut rejected = BTreeMap::new();
    rejected.insert("bad_mac".to_string(), 3u64);
    let mut detector_events = BTreeMap::new();
    detector_events.insert("peer_down".to_string(), 2u64);
    let mut results = BTreeMap::new();
    results.insert("ok".to_string(), 1u64);
    results.insert("timeout".to_string(), 1u64);
    MetricsSnapshot {
        node: "fw1".into(),
        role: "forward".into(),
        version: "0.1.0".into(),
        uptime_s: 42.5,
        control_loop: tapsplice::loop_watch::LoopStats { period_ms: 25.0, iterations: 1700, late: 3, stalls: 1, max_gap_ms: 4200.0 },
        ports: vec![
            PortMetrics {
                name: "wan".into(),
                device: "net_tap0".into(),
                mac: "02:00:00:00:0a:01".into(),
                link_up: true,
                speed_mbps: 10_000,
                rx_packets: 1000,
                tx_packets: 990,
                rx_bytes: 64_000,
                tx_bytes: 63_360,
                rx_missed: 4,
                rx_errors: 1,
                tx_errors: 2,
                rx_nombuf: 3,
                rx_queue_packets: vec![600, 400],
                bond: None,
            },
            PortMetrics {
                name: "uplink".into(),
                device: "net_bonding_uplink".into(),
                bond: Some(BondInfo {
                    mode: "802.3ad".into(),
                    members: vec![
                        BondMemberInfo { name: "up0".into(), device: "net_tap2".into(), link_up: true, active: true, rx_packets: 7, tx_packets: 8, actor: lacp_flags(0x3d), partner: lacp_flags(0x3d), partner_system: Some("02:00:00:00:0b:00".into()) },
                        BondMemberInfo { name: "up1".into(), device: "net_tap3".into(), actor: lacp_flags(0x45), ..Default::default() },
                    ],
                    primary: None,
                    primary_moves: 3,
                }),
                ..Default::default()
            },
            PortMetrics { name: "lan".into(), device: "net_tap1".into(), ..Default::default() },
        ],
        lcores: vec![
            LcoreMetrics { lcore: 1, rx_packets: 700, polls: 10_000, empty_polls: 9_000, drops: drops.clone(), ..Default::default() },
            LcoreMetrics { lcore: 2, rx_packets: 300, drops, ..Default::default() },
        ],
        burst_latency: LatencySnapshot {
            count: 100,
            sum_ns: 40_000.0,
            p50_ns: 200,
            p90_ns: 250,
            p99_ns: 2000,
            p999_ns: 9000,
            max_ns: 9000,
            buckets,
        },
        peers: vec![PeerMetrics {
            node: "fw2".into(),
            class: "appliance".into(),
            state: "down".into(),
            incarnation: 7,
            last_heard_ms: Some(2500),
            heartbeats_received: 1234,
            heartbeats_missed: 5,
            workload: Some(0.3),
        }],
        heartbeats: HeartbeatMetrics { sent: 999, rejected, ..Default::default() },
        detector_events,
        fences: vec![FenceMetrics {
            target: "srv1".into(),
            device: "ipmi-srv1".into(),
            attempts: 2,
            results,
            last_duration_s: Some(0.125),
        }],
        ..Default::default()
    }
}

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(source: metrics::Source, limits: HttpLimits) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, thread) =
            metrics::spawn_with("127.0.0.1:0".parse().unwrap(), source, stop.clone(), limits).expect("metrics server starts");
        assert_ne!(addr.port(), 0, "the bound port is returned");
        Server { addr, stop, thread: Some(thread) }
    }
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends raw bytes, returns (status code, headers lower-cased, body).
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, HashMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    parse_http(&buf)
}

fn parse_http(buf: &[u8]) -> (u16, HashMap<String, String>, String) {
    let text = String::from_utf8(buf.to_vec()).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, HashMap<String, String>, String) {
    raw(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text\r\n\r\n").as_bytes())
}

/// One parsed sample.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict-enough OpenMetrics text parser: families (HELP, TYPE), samples whose names
/// belong to the current family with the right suffixes, label escapes, `# EOF` last.
fn parse_exposition(text: &str) -> (HashMap<String, (String, String)>, Vec<Sample>) {
    let mut families: HashMap<String, (String, String)> = HashMap::new(); // name -> (type, help)
    let mut samples = Vec::new();
    let mut current: Option<(String, String)> = None; // (name, type)
    let mut pending_help: Option<(String, String)> = None;
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.last(), Some(&""), "ends with a newline");
    let lines = &lines[..lines.len() - 1];
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "empty HELP for {name}");
            assert!(name.starts_with("tapsplice_"), "{name}");
            pending_help = Some((name.to_string(), help.to_string()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            let (hname, help) = pending_help.take().expect("HELP before TYPE");
            assert_eq!(hname, name);
            assert!(["counter", "gauge", "histogram", "info"].contains(&ty), "{ty}");
            assert!(families.insert(name.to_string(), (ty.to_string(), help)).is_none(), "family {name} twice");
            current = Some((name.to_string(), ty.to_string()));
        } else if line.starts_with('#') {
            panic!("unexpected comment line {line:?}");
        } else {
            let (fam, ty) = current.clone().expect("sample before any TYPE");
            let (name, labels, value) = parse_sample(line);
            let suffix = name.strip_prefix(fam.as_str()).unwrap_or_else(|| panic!("{name} outside family {fam}"));
            let allowed: &[&str] = match ty.as_str() {
                "counter" => &["_total"],
                "gauge" => &[""],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => unreachable!(),
            };
            assert!(allowed.contains(&suffix), "{name} in {ty} family {fam}");
            if ty == "info" {
                assert_eq!(value, 1.0);
            }
            samples.push(Sample { name, labels, value });
        }
    }
    (families, samples)
}

fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let name_end = line.find(['{', ' ']).unwrap();
    let name = &line[..name_end];
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next().expect("unterminated label set");
            match c {
                '}' => {
                    rest = &r[i + 1..];
                    break;
                }
                ',' => {}
                '=' => {
                    assert_eq!(chars.next().map(|x| x.1), Some('"'));
                    let mut val = String::new();
                    loop {
                        let (_, c) = chars.next().expect("unterminated label value");
                        match c {
                            '"' => break,
                            '\\' => match chars.next().unwrap().1 {
                                'n' => val.push('\n'),
                                '"' => val.push('"'),
                                '\\' => val.push('\\'),
                                other => panic!("bad escape \\{other}"),
                            },
                            '\n' => panic!("raw newline in label value"),
                            c => val.push(c),
                        }
                    }
                    assert!(labels.insert(std::mem::take(&mut key), val).is_none(), "duplicate label in {line}");
                }
                c => key.push(c),
            }
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
    };
    (name.to_string(), labels, value)
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)) && s.labels.len() == labels.len())
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}")).value
}

fn check_exposition(body: &str) {
    let (families, samples) = parse_exposition(body);
    // Every family the appliance promises, with its type.
    for (name, ty) in [
        ("tapsplice_node", "info"),
        ("tapsplice_uptime_seconds", "gauge"),
        ("tapsplice_control_loop_iterations", "counter"),
        ("tapsplice_control_loop_late", "counter"),
        ("tapsplice_control_loop_stalls", "counter"),
        ("tapsplice_control_loop_max_gap_seconds", "gauge"),
        ("tapsplice_control_loop_period_seconds", "gauge"),
        ("tapsplice_snapshot_age_seconds", "gauge"),
        ("tapsplice_port_info", "gauge"),
        ("tapsplice_port_up", "gauge"),
        ("tapsplice_port_speed_mbps", "gauge"),
        ("tapsplice_port_rx_packets", "counter"),
        ("tapsplice_port_tx_packets", "counter"),
        ("tapsplice_port_rx_bytes", "counter"),
        ("tapsplice_port_tx_bytes", "counter"),
        ("tapsplice_port_rx_missed", "counter"),
        ("tapsplice_port_rx_errors", "counter"),
        ("tapsplice_port_tx_errors", "counter"),
        ("tapsplice_port_rx_nombuf", "counter"),
        ("tapsplice_port_rx_queue_packets", "counter"),
        ("tapsplice_bond_member_link_up", "gauge"),
        ("tapsplice_bond_member_active", "gauge"),
        ("tapsplice_bond_member_lacp_distributing", "gauge"),
        ("tapsplice_bond_member_rx_packets", "counter"),
        ("tapsplice_bond_member_tx_packets", "counter"),
        ("tapsplice_bond_primary_moves", "counter"),
        ("tapsplice_lcore_rx_packets", "counter"),
        ("tapsplice_lcore_tx_packets", "counter"),
        ("tapsplice_lcore_rx_bytes", "counter"),
        ("tapsplice_lcore_tx_bytes", "counter"),
        ("tapsplice_lcore_local_replies", "counter"),
        ("tapsplice_lcore_polls", "counter"),
        ("tapsplice_lcore_empty_polls", "counter"),
        ("tapsplice_lcore_idle_sleeps", "counter"),
        ("tapsplice_lcore_handed_off", "counter"),
        ("tapsplice_lcore_handed_in", "counter"),
        ("tapsplice_lcore_drops", "counter"),
        ("tapsplice_burst_latency_ns", "histogram"),
        ("tapsplice_burst_latency_quantile_ns", "gauge"),
        ("tapsplice_peer_up", "gauge"),
        ("tapsplice_peer_state", "gauge"),
        ("tapsplice_peer_incarnation", "gauge"),
        ("tapsplice_peer_last_heard_seconds", "gauge"),
        ("tapsplice_peer_heartbeats_received", "counter"),
        ("tapsplice_peer_heartbeats_missed", "counter"),
        ("tapsplice_heartbeats_sent", "counter"),
        ("tapsplice_heartbeats_rejected", "counter"),
        ("tapsplice_detector_events", "counter"),
        ("tapsplice_fence_attempts", "counter"),
        ("tapsplice_fence_results", "counter"),
        ("tapsplice_fence_last_duration_seconds", "gauge"),
    ] {
        let f = families.get(name).unwrap_or_else(|| panic!("family {name} missing"));
        assert_eq!(f.0, ty, "type of {name}");
    }

    let s = &samples;
    let node = find(s, "tapsplice_node_info", &[("node", "fw1"), ("role", "forward"), ("version", "0.1.0")]);
    assert!(node.is_some(), "node info");
    assert_eq!(value(s, "tapsplice_uptime_seconds", &[]), 42.5);
    assert_eq!(value(s, "tapsplice_control_loop_iterations_total", &[]), 1700.0);
    assert_eq!(value(s, "tapsplice_control_loop_late_total", &[]), 3.0);
    assert_eq!(value(s, "tapsplice_control_loop_stalls_total", &[]), 1.0);
    assert_eq!(value(s, "tapsplice_control_loop_max_gap_seconds", &[]), 4.2);
    assert_eq!(value(s, "tapsplice_control_loop_period_seconds", &[]), 0.025);
    assert_eq!(value(s, "tapsplice_port_up", &[("port", "wan")]), 1.0);
    assert!(find(s, "tapsplice_port_info", &[("port", "wan"), ("device", "net_tap0"), ("mac", "02:00:00:00:0a:01")]).is_some(), "port info");
    assert_eq!(value(s, "tapsplice_port_up", &[("port", "lan")]), 0.0);
    assert_eq!(value(s, "tapsplice_port_speed_mbps", &[("port", "wan")]), 10_000.0);
    for (name, v) in [
        ("tapsplice_port_rx_packets_total", 1000.0),
        ("tapsplice_port_tx_packets_total", 990.0),
        ("tapsplice_port_rx_bytes_total", 64_000.0),
        ("tapsplice_port_tx_bytes_total", 63_360.0),
        ("tapsplice_port_rx_missed_total", 4.0),
        ("tapsplice_port_rx_errors_total", 1.0),
        ("tapsplice_port_tx_errors_total", 2.0),
        ("tapsplice_port_rx_nombuf_total", 3.0),
    ] {
        assert_eq!(value(s, name, &[("port", "wan")]), v, "{name}");
        assert_eq!(value(s, name, &[("port", "lan")]), 0.0, "{name}");
    }
    // Bond members: state from the PMD, 802.3ad distributing from the actor state bits.
    let up0 = [("port", "uplink"), ("member", "up0")];
    let up1 = [("port", "uplink"), ("member", "up1")];
    assert_eq!(value(s, "tapsplice_bond_member_link_up", &up0), 1.0);
    assert_eq!(value(s, "tapsplice_bond_member_link_up", &up1), 0.0);
    assert_eq!(value(s, "tapsplice_bond_member_active", &up0), 1.0);
    assert_eq!(value(s, "tapsplice_bond_member_lacp_distributing", &up0), 1.0);
    assert_eq!(value(s, "tapsplice_bond_member_lacp_distributing", &up1), 0.0);
    assert_eq!(value(s, "tapsplice_bond_member_rx_packets_total", &up0), 7.0);
    assert_eq!(value(s, "tapsplice_bond_member_tx_packets_total", &up0), 8.0);
    assert_eq!(value(s, "tapsplice_bond_primary_moves_total", &[("port", "uplink")]), 3.0);
    assert!(find(s, "tapsplice_bond_member_active", &[("port", "wan"), ("member", "up0")]).is_none());
    assert_eq!(value(s, "tapsplice_port_rx_queue_packets_total", &[("port", "wan"), ("queue", "0")]), 600.0);
    assert_eq!(value(s, "tapsplice_port_rx_queue_packets_total", &[("port", "wan"), ("queue", "1")]), 400.0);
    assert_eq!(value(s, "tapsplice_lcore_rx_packets_total", &[("lcore", "1")]), 700.0);
    assert_eq!(value(s, "tapsplice_lcore_rx_packets_total", &[("lcore", "2")]), 300.0);
    assert_eq!(value(s, "tapsplice_lcore_polls_total", &[("lcore", "1")]), 10_000.0);
    assert_eq!(value(s, "tapsplice_lcore_empty_polls_total", &[("lcore", "1")]), 9_000.0);
    assert_eq!(value(s, "tapsplice_lcore_drops_total", &[("lcore", "1"), ("reason", "no_route")]), 17.0);
    assert_eq!(value(s, "tapsplice_lcore_drops_total", &[("lcore", "2"), ("reason", "tx_full")]), 0.0);
    let reasons: HashSet<&str> =
        s.iter().filter(|x| x.name == "tapsplice_lcore_drops_total").map(|x| x.labels["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 3);

    // The histogram: cumulative buckets over the fixed bounds, +Inf = count.
    let buckets: Vec<&Sample> = s.iter().filter(|x| x.name == "tapsplice_burst_latency_ns_bucket").collect();
    assert_eq!(buckets.len(), LATENCY_BOUNDS_NS.len() + 1);
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value), "cumulative");
    assert_eq!(value(s, "tapsplice_burst_latency_ns_bucket", &[("le", "128.0")]), 0.0);
    assert_eq!(value(s, "tapsplice_burst_latency_ns_bucket", &[("le", "256.0")]), 90.0);
    assert_eq!(value(s, "tapsplice_burst_latency_ns_bucket", &[("le", "2048.0")]), 99.0);
    assert_eq!(value(s, "tapsplice_burst_latency_ns_bucket", &[("le", "+Inf")]), 100.0);
    assert_eq!(value(s, "tapsplice_burst_latency_ns_count", &[]), 100.0);
    assert_eq!(value(s, "tapsplice_burst_latency_ns_sum", &[]), 40_000.0);
    for (q, v) in [("0.5", 200.0), ("0.9", 250.0), ("0.99", 2000.0), ("0.999", 9000.0), ("1", 9000.0)] {
        assert_eq!(value(s, "tapsplice_burst_latency_quantile_ns", &[("quantile", q)]), v, "quantile {q}");
    }

    // Peers, heartbeats, detector, fencing.
    let peer = [("peer", "fw2"), ("class", "appliance")];
    assert_eq!(value(s, "tapsplice_peer_up", &peer), 0.0);
    for (st, v) in [("unknown", 0.0), ("up", 0.0), ("app_down", 0.0), ("down", 1.0), ("held_down", 0.0)] {
        assert_eq!(value(s, "tapsplice_peer_state", &[peer[0], peer[1], ("state", st)]), v, "state {st}");
    }
    assert_eq!(value(s, "tapsplice_peer_incarnation", &peer), 7.0);
    assert_eq!(value(s, "tapsplice_peer_last_heard_seconds", &peer), 2.5);
    assert_eq!(value(s, "tapsplice_peer_heartbeats_received_total", &peer), 1234.0);
    assert_eq!(value(s, "tapsplice_peer_heartbeats_missed_total", &peer), 5.0);
    assert_eq!(value(s, "tapsplice_heartbeats_sent_total", &[]), 999.0);
    assert_eq!(value(s, "tapsplice_heartbeats_rejected_total", &[("reason", "bad_mac")]), 3.0);
    assert_eq!(value(s, "tapsplice_detector_events_total", &[("kind", "peer_down")]), 2.0);
    let fence = [("target", "srv1"), ("device", "ipmi-srv1")];
    assert_eq!(value(s, "tapsplice_fence_attempts_total", &fence), 2.0);
    assert_eq!(value(s, "tapsplice_fence_results_total", &[fence[0], fence[1], ("result", "ok")]), 1.0);
    assert_eq!(value(s, "tapsplice_fence_results_total", &[fence[0], fence[1], ("result", "timeout")]), 1.0);
    assert_eq!(value(s, "tapsplice_fence_last_duration_seconds", &fence), 0.125);
}

#[test]
fn get_metrics_over_a_raw_socket_parses_with_the_snapshot_values() {
    let srv = Server::start(Arc::new(snapshot), HttpLimits::default());
    let (status, headers, body) = get(srv.addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], metrics::CONTENT_TYPE);
    assert_eq!(headers["content-length"].parse::<usize>().unwrap(), body.len());
    check_exposition(&body);
    // Query strings are ignored; HTTP/1.0 works.
    let (status, _, body2) = raw(srv.addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200);
    assert_eq!(body2, body);
    // HEAD: headers only.
    let (status, headers, body3) = raw(srv.addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(body3.is_empty());
    assert_eq!(headers["content-length"].parse::<usize>().unwrap(), body.len());
}

#[test]
fn an_empty_snapshot_is_valid_openmetrics_too() {
    let srv = Server::start(Arc::new(MetricsSnapshot::default), HttpLimits::default());
    let (status, _, body) = get(srv.addr, "/metrics");
    assert_eq!(status, 200);
    let (families, samples) = parse_exposition(&body);
    assert!(families.contains_key("tapsplice_peer_up"), "families exist before any peer");
    assert!(samples.iter().any(|s| s.name == "tapsplice_burst_latency_ns_bucket" && s.labels["le"] == "+Inf"));
}

#[test]
fn curl_scrapes_it() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let srv = Server::start(Arc::new(snapshot), HttpLimits::default());
    let url = format!("http://{}/metrics", srv.addr);
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-H", "Accept: application/openmetrics-text", "-w", "\n%{http_code} %{content_type}", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, trailer) = text.rsplit_once('\n').unwrap();
    assert_eq!(trailer, format!("200 {}", metrics::CONTENT_TYPE));
    check_exposition(body);
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/nope", srv.addr)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn other_paths_are_404_and_other_methods_405() {
    let srv = Server::start(Arc::new(snapshot), HttpLimits::default());
    for path in ["/", "/metricsx", "/metrics/", "/favicon.ico", "/../metrics"] {
        let (status, _, _) = get(srv.addr, path);
        assert_eq!(status, 404, "{path}");
    }
    let (status, headers, _) = raw(srv.addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, _, body) = get(srv.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"));
}

#[test]
fn garbage_huge_and_stalled_requests_do_not_stop_the_server() {
    let limits = HttpLimits { read_timeout: Duration::from_secs(3), ..HttpLimits::default() };
    let srv = Server::start(Arc::new(snapshot), limits);
    // Garbage request lines.
    for junk in [&b"\x00\x01\x02\xff\r\n\r\n"[..], b"hello\r\n\r\n", b"GET\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n", b"\r\n\r\n"] {
        let (status, _, _) = raw(srv.addr, junk);
        assert_eq!(status, 400, "{:?}", String::from_utf8_lossy(junk));
    }
    // A head far over the limit.
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        big.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(20)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let _ = s.write_all(&big);
    let mut resp = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut resp);
    assert!(resp.starts_with(b"HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&resp[..resp.len().min(80)]));
    // Connect and hang up; connect and stall (held open during the next scrape).
    drop(TcpStream::connect(srv.addr).unwrap());
    let mut stalled = TcpStream::connect(srv.addr).unwrap();
    stalled.write_all(b"GET /metr").unwrap();
    let t0 = Instant::now();
    let (status, _, _) = get(srv.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(t0.elapsed() < Duration::from_secs(2), "a stalled client blocked a scrape for {:?}", t0.elapsed());
    // The stalled client is dropped after the read timeout.
    stalled.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // Random bytes.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..30 {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        let bytes: Vec<u8> = (0..(1 + i * 331 % 4000))
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = s.write_all(&bytes);
        let _ = s.write_all(b"\r\n\r\n");
    }
    let (status, _, body) = get(srv.addr, "/metrics");
    assert_eq!(status, 200);
    check_exposition(&body);
}

#[test]
fn a_failing_source_is_500_and_the_server_survives() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = calls.clone();
    let source: metrics::Source = Arc::new(move || {
        if c2.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("snapshot source failed");
        }
        snapshot()
    });
    let srv = Server::start(source, HttpLimits::default());
    assert_eq!(get(srv.addr, "/metrics").0, 500);
    assert_eq!(get(srv.addr, "/metrics").0, 200);
}

#[test]
fn each_scrape_sees_the_latest_published_snapshot_and_stop_closes_the_port() {
    let cell = SnapshotCell::new(snapshot());
    let mut srv = Server::start(cell.source(), HttpLimits::default());
    let (_, _, body) = get(srv.addr, "/metrics");
    assert!(body.contains("tapsplice_port_rx_packets_total{port=\"wan\"} 1000\n"));
    let mut next = snapshot();
    next.ports[0].rx_packets = 5000;
    next.uptime_s = 43.5;
    cell.publish(next);
    let (_, _, body) = get(srv.addr, "/metrics");
    assert!(body.contains("tapsplice_port_rx_packets_total{port=\"wan\"} 5000\n"), "{body}");
    assert!(body.contains("tapsplice_uptime_seconds 43.5\n"));
    // The snapshot's age is taken at each read: fresh just after a publish, growing
    // while nothing is published (a stalled control thread).
    let (_, samples) = parse_exposition(&body);
    let fresh = value(&samples, "tapsplice_snapshot_age_seconds", &[]);
    assert!((0.0..1.0).contains(&fresh), "{fresh}");
    std::thread::sleep(Duration::from_millis(300));
    let (_, _, body) = get(srv.addr, "/metrics");
    let (_, samples) = parse_exposition(&body);
    let later = value(&samples, "tapsplice_snapshot_age_seconds", &[]);
    assert!(later >= fresh + 0.29, "{fresh} then {later}");
    let addr = srv.addr;
    let t0 = Instant::now();
    srv.stop();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed after stop");
}

#[test]
fn a_busy_address_is_a_clear_error() {
    let srv = Server::start(Arc::new(snapshot), HttpLimits::default());
    let e = metrics::spawn(srv.addr, Arc::new(snapshot), Arc::new(AtomicBool::new(false))).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains(&format!("cannot serve metrics on {}", srv.addr)), "{e}");
}
