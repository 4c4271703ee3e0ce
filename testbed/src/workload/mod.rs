//! Workloads over real kernel TCP, run by threads of this process inside the namespaces.
//!
//! A workload has one server (a listener thread in the server namespace, one handler
//! thread per accepted connection) and `connections` client threads, each in one of the
//! client namespaces. Each client connection issues requests one after the other; every
//! reply byte is regenerated from the request's seed and compared (see `pattern`).

pub mod bulk;
mod client;
pub mod echo;
pub mod interactive;
pub mod pattern;
mod server;

use crate::topology::{Workload, WorkloadKind};
use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A workload with every default resolved and namespaces named as on the host.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub kind: WorkloadKind,
    pub client_ns: Vec<String>,
    /// Server namespaces (host names) and their topology names, in the same order.
    pub server_ns: Vec<String>,
    pub server_names: Vec<String>,
    pub connect: SocketAddr,
    pub listen: SocketAddr,
    pub connections: u32,
    /// Requests per connection, 0 = until `duration`.
    pub requests: u64,
    pub request_bytes: u32,
    pub reply_bytes: u64,
    pub duration: Option<Duration>,
    pub timeout: Duration,
    pub seed: u64,
    pub allow_errors: bool,
    /// Requests per TCP connection before the client reconnects; 0 = all on one.
    pub requests_per_connection: u64,
    /// Expected connection share per server (same order as `server_ns`); empty = no check.
    pub weights: Vec<u32>,
    /// Relative tolerance of each share (0.1 = ±10 % of the expected share).
    pub share_tolerance: f64,
    /// Servers (indices) whose connections may break; `None` = no placement check.
    pub expect_broken: Option<Vec<usize>>,
    pub min_concurrent: Option<u32>,
    /// The servers wait this long before each reply (not echoes).
    pub reply_delay: Duration,
}

/// Default relative tolerance of a server's connection share.
pub const DEFAULT_SHARE_TOLERANCE: f64 = 0.10;

impl Spec {
    /// A spec with one server and no per-server expectations (benchmarks).
    #[allow(clippy::too_many_arguments)]
    pub fn simple(
        name: String,
        kind: WorkloadKind,
        client_ns: Vec<String>,
        server_ns: String,
        connect: SocketAddr,
        listen: SocketAddr,
        connections: u32,
        requests: u64,
        reply_bytes: u64,
        duration: Option<Duration>,
        timeout: Duration,
        seed: u64,
    ) -> Spec {
        Spec {
            name,
            kind,
            client_ns,
            server_names: vec![server_ns.clone()],
            server_ns: vec![server_ns],
            connect,
            listen,
            connections,
            requests,
            request_bytes: 150,
            reply_bytes,
            duration,
            timeout,
            seed,
            allow_errors: false,
            requests_per_connection: 0,
            weights: Vec::new(),
            share_tolerance: DEFAULT_SHARE_TOLERANCE,
            expect_broken: None,
            min_concurrent: None,
            reply_delay: Duration::ZERO,
        }
    }

    /// `ns` maps a topology namespace name to the host's namespace name.
    pub fn from_topology(name: String, w: &Workload, ns: &dyn Fn(&str) -> String) -> Result<Spec> {
        let ip: IpAddr = w
            .address
            .parse()
            .map_err(|_| anyhow!("bad address {}", w.address))?;
        let lip: IpAddr = match &w.listen {
            Some(l) => l.parse().map_err(|_| anyhow!("bad listen address {}", l))?,
            None => ip,
        };
        let (def_req, def_bytes) = match w.kind {
            WorkloadKind::Echo => (echo::DEFAULT_REQUESTS, echo::reply_len(w.request_bytes)),
            WorkloadKind::Interactive => (
                interactive::DEFAULT_REQUESTS,
                interactive::DEFAULT_REPLY_BYTES,
            ),
            WorkloadKind::Bulk => (bulk::DEFAULT_REQUESTS, bulk::DEFAULT_REPLY_BYTES),
        };
        let reply_bytes = if w.kind == WorkloadKind::Echo {
            def_bytes
        } else {
            w.bytes.unwrap_or(def_bytes)
        };
        let requests = match (w.requests, w.duration_s) {
            (Some(n), _) => n,
            (None, Some(_)) => 0,
            (None, None) => def_req,
        };
        let servers = w.server_names();
        let index = |n: &String| servers.iter().position(|s| s == n).unwrap_or(0);
        Ok(Spec {
            name,
            kind: w.kind,
            client_ns: w.clients.iter().map(|c| ns(c)).collect(),
            server_ns: servers.iter().map(|s| ns(s)).collect(),
            server_names: servers.clone(),
            requests_per_connection: w.requests_per_connection.unwrap_or(0),
            weights: if w.weights.is_empty() {
                Vec::new()
            } else {
                servers
                    .iter()
                    .map(|s| w.weights.get(s).copied().unwrap_or(0))
                    .collect()
            },
            share_tolerance: w.share_tolerance.unwrap_or(DEFAULT_SHARE_TOLERANCE),
            expect_broken: w
                .expect_broken
                .as_ref()
                .map(|b| b.iter().map(index).collect()),
            min_concurrent: w.min_concurrent,
            reply_delay: Duration::from_millis(w.reply_delay_ms),
            connect: SocketAddr::new(ip, w.port),
            listen: SocketAddr::new(lip, w.port),
            connections: w.connections,
            requests,
            request_bytes: w.request_bytes,
            reply_bytes,
            duration: w.duration_s.map(Duration::from_secs_f64),
            timeout: Duration::from_secs_f64(w.timeout_s),
            seed: w.seed,
            allow_errors: w.allow_errors,
        })
    }

    fn echo(&self) -> bool {
        self.kind == WorkloadKind::Echo
    }
}

/// Counters updated while the workload runs (read by progress lines).
#[derive(Default)]
pub struct Live {
    pub bytes_expected: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_verified: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub mismatched_bytes: AtomicU64,
    pub requests_ok: AtomicU64,
    pub errors: AtomicU64,
    pub conns_done: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Live {
    pub fn error(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() < 8 {
            s.push(msg);
        }
    }
}

pub(crate) struct Ctx {
    pub spec: Spec,
    pub live: Live,
    pub stop: AtomicBool,
    pub deadline: Instant,
    /// Client address of every accepted connection → index of the server that accepted it.
    pub accepted: Mutex<std::collections::HashMap<SocketAddr, usize>>,
    /// Connections accepted per server.
    pub accepts: Vec<AtomicU64>,
    /// Client connections open now, and the most open at once.
    pub open: AtomicU64,
    pub max_open: AtomicU64,
}

impl Ctx {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || crate::guard::interrupted()
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds")
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    pub name: String,
    pub kind: WorkloadKind,
    pub connections: u32,
    pub requests: u64,
    pub bytes_expected: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub bytes_verified: u64,
    pub mismatched_bytes: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub elapsed_s: f64,
    pub goodput_mbps: f64,
    pub latency_us: Latency,
    pub allow_errors: bool,
    pub passed: bool,
    /// TCP connections the clients opened (more than `connections` with
    /// `requests_per_connection`).
    pub tcp_connections: u64,
    /// Most client connections open at the same moment.
    pub max_concurrent: u64,
    /// Per server: the connections it accepted, their requests and bytes, how many broke.
    pub servers: Vec<ServerResult>,
    /// Connections the clients opened that no server accepted, and those of them that broke.
    pub unattributed_connections: u64,
    pub unattributed_broken: u64,
    /// Why the workload failed besides errors and bytes (shares, broken placement,
    /// concurrency).
    pub failures: Vec<String>,
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// One server's part of a workload.
#[derive(Debug, Clone, Serialize)]
pub struct ServerResult {
    pub name: String,
    /// Client connections attributed to it (it accepted them).
    pub connections: u64,
    /// Connections it accepted (its own count; equals `connections` unless a client gave
    /// up before using an accepted connection).
    pub accepted: u64,
    pub requests: u64,
    pub bytes_verified: u64,
    /// Its connections that ended in an error at the client (reset, closed early, timeout).
    pub broken: u64,
    /// `connections` / all attributed connections.
    pub share: f64,
    /// weight / Σ weights, when weights are given.
    pub expected_share: Option<f64>,
    pub share_ok: Option<bool>,
}

/// A started workload.
pub struct Running {
    ctx: Arc<Ctx>,
    started: Instant,
    servers: Vec<JoinHandle<()>>,
    clients: Vec<JoinHandle<client::ConnResult>>,
}

/// Start the server (and wait until it listens), then every client connection.
pub fn start(spec: Spec) -> Result<Running> {
    let deadline = Instant::now() + spec.timeout;
    let n = spec.server_ns.len();
    let ctx = Arc::new(Ctx {
        spec,
        live: Live::default(),
        stop: AtomicBool::new(false),
        deadline,
        accepted: Mutex::new(std::collections::HashMap::new()),
        accepts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        open: AtomicU64::new(0),
        max_open: AtomicU64::new(0),
    });
    let mut servers = Vec::new();
    for i in 0..n {
        let (tx, rx) = mpsc::channel();
        let sctx = ctx.clone();
        let server = std::thread::Builder::new()
            .name(format!("srv-{}", ctx.spec.name))
            .spawn(move || server::serve(sctx, i, tx))
            .map_err(|e| anyhow!("cannot start server thread: {}", e))?;
        let fail = |servers: Vec<JoinHandle<()>>| {
            ctx.stop.store(true, Ordering::Relaxed);
            for s in servers {
                let _ = s.join();
            }
        };
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => servers.push(server),
            Ok(Err(e)) => {
                let _ = server.join();
                fail(servers);
                return Err(anyhow!("workload {}: server: {}", ctx.spec.name, e));
            }
            Err(_) => {
                fail(servers);
                return Err(anyhow!(
                    "workload {}: server in {} did not start listening within 5 s",
                    ctx.spec.name,
                    ctx.spec.server_ns[i]
                ));
            }
        }
    }
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..ctx.spec.connections {
        let cctx = ctx.clone();
        let h = std::thread::Builder::new()
            .name(format!("cli-{}-{}", ctx.spec.name, i))
            .stack_size(256 * 1024)
            .spawn(move || client::run_connection(&cctx, i as u64, started));
        match h {
            Ok(h) => clients.push(h),
            Err(e) => {
                ctx.live
                    .error(format!("cannot start client thread {}: {}", i, e));
                break;
            }
        }
    }
    Ok(Running {
        ctx,
        started,
        servers,
        clients,
    })
}

impl Running {
    pub fn name(&self) -> &str {
        &self.ctx.spec.name
    }

    pub fn live(&self) -> &Live {
        &self.ctx.live
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn spec(&self) -> &Spec {
        &self.ctx.spec
    }

    pub fn done(&self) -> bool {
        self.clients.iter().all(|h| h.is_finished())
    }

    /// Wait for every client (bounded by the workload's deadline), stop the server, and
    /// build the result.
    pub fn finish(mut self) -> WorkloadResult {
        let ctx = self.ctx.clone();
        let spec = &ctx.spec;
        let mut hist = new_histogram();
        let mut last_end = self.started;
        let mut records: Vec<client::ConnRecord> = Vec::new();
        let hard = ctx.deadline + Duration::from_secs(5);
        for h in self.clients.drain(..) {
            while !h.is_finished() && Instant::now() < hard {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !h.is_finished() {
                ctx.live
                    .error("a client thread did not stop by the deadline".into());
                continue;
            }
            match h.join() {
                Ok(r) => {
                    let _ = hist.add(&r.hist);
                    if r.ended > last_end {
                        last_end = r.ended;
                    }
                    records.extend(r.conns);
                }
                Err(_) => ctx.live.error("a client thread panicked".into()),
            }
        }
        ctx.stop.store(true, Ordering::Relaxed);
        for s in self.servers.drain(..) {
            while !s.is_finished() && Instant::now() < hard {
                std::thread::sleep(Duration::from_millis(10));
            }
            if s.is_finished() {
                if s.join().is_err() {
                    ctx.live.error("the server thread panicked".into());
                }
            } else {
                ctx.live
                    .error("the server did not stop by the deadline".into());
            }
        }
        let acc = ctx.accepted.lock().map(|m| m.clone()).unwrap_or_default();
        let per = attribute(spec, &records, &acc, &ctx.accepts);
        let max_concurrent = ctx.max_open.load(Ordering::Relaxed);
        let l = &ctx.live;
        let elapsed = last_end
            .duration_since(self.started)
            .as_secs_f64()
            .max(1e-6);
        let verified = l.bytes_verified.load(Ordering::Relaxed);
        let errors = l.errors.load(Ordering::Relaxed);
        let mismatched = l.mismatched_bytes.load(Ordering::Relaxed);
        let expected = l.bytes_expected.load(Ordering::Relaxed);
        let mut failures = per.failures;
        if let Some(m) = spec.min_concurrent {
            if max_concurrent < m as u64 {
                failures.push(format!(
                    "at most {} connections were open at once, expected at least {}",
                    max_concurrent, m
                ));
            }
        }
        let passed = mismatched == 0
            && (spec.allow_errors || (errors == 0 && verified == expected))
            && failures.is_empty();
        let samples = l.samples.lock().map(|s| s.clone()).unwrap_or_default();
        WorkloadResult {
            name: spec.name.clone(),
            kind: spec.kind,
            connections: spec.connections,
            requests: l.requests_ok.load(Ordering::Relaxed),
            bytes_expected: expected,
            bytes_sent: l.bytes_sent.load(Ordering::Relaxed),
            bytes_received: l.bytes_received.load(Ordering::Relaxed),
            bytes_verified: verified,
            mismatched_bytes: mismatched,
            errors,
            error_samples: samples,
            elapsed_s: (elapsed * 1000.0).round() / 1000.0,
            goodput_mbps: ((verified as f64 * 8.0 / elapsed / 1e6) * 10.0).round() / 10.0,
            latency_us: Latency::of(&hist),
            allow_errors: spec.allow_errors,
            passed,
            tcp_connections: records.len() as u64,
            max_concurrent,
            servers: per.servers,
            unattributed_connections: per.unattributed,
            unattributed_broken: per.unattributed_broken,
            failures,
            histogram: hist,
        }
    }
}

struct Attribution {
    servers: Vec<ServerResult>,
    unattributed: u64,
    unattributed_broken: u64,
    failures: Vec<String>,
}

/// Attribute every client connection to the server that accepted it (by the client's
/// address and port), then check the shares against the weights and where connections
/// broke against `expect_broken`.
fn attribute(
    spec: &Spec,
    records: &[client::ConnRecord],
    accepted: &std::collections::HashMap<SocketAddr, usize>,
    accepts: &[AtomicU64],
) -> Attribution {
    let n = spec.server_names.len();
    let mut servers: Vec<ServerResult> = spec
        .server_names
        .iter()
        .enumerate()
        .map(|(i, name)| ServerResult {
            name: name.clone(),
            connections: 0,
            accepted: accepts
                .get(i)
                .map(|a| a.load(Ordering::Relaxed))
                .unwrap_or(0),
            requests: 0,
            bytes_verified: 0,
            broken: 0,
            share: 0.0,
            expected_share: None,
            share_ok: None,
        })
        .collect();
    let (mut unattributed, mut unattributed_broken) = (0, 0);
    for r in records {
        match r.local.and_then(|a| accepted.get(&a)).filter(|i| **i < n) {
            Some(&i) => {
                let s = &mut servers[i];
                s.connections += 1;
                s.requests += r.requests;
                s.bytes_verified += r.bytes_verified;
                s.broken += r.broken as u64;
            }
            None => {
                unattributed += 1;
                unattributed_broken += r.broken as u64;
            }
        }
    }
    let total: u64 = servers.iter().map(|s| s.connections).sum();
    let wsum: u64 = spec.weights.iter().map(|w| *w as u64).sum();
    let mut failures = Vec::new();
    for (i, s) in servers.iter_mut().enumerate() {
        s.share = if total > 0 {
            s.connections as f64 / total as f64
        } else {
            0.0
        };
        s.share = (s.share * 10000.0).round() / 10000.0;
        if wsum > 0 {
            let want = spec.weights[i] as f64 / wsum as f64;
            let got = if total > 0 {
                s.connections as f64 / total as f64
            } else {
                0.0
            };
            let ok = total > 0 && (got - want).abs() <= spec.share_tolerance * want + 1e-12;
            s.expected_share = Some((want * 10000.0).round() / 10000.0);
            s.share_ok = Some(ok);
            if !ok {
                failures.push(format!(
                    "server {}: {:.1} % of {} connections, expected {:.1} % ± {:.0} % of it ({:.1}..{:.1} %)",
                    s.name,
                    got * 100.0,
                    total,
                    want * 100.0,
                    spec.share_tolerance * 100.0,
                    want * (1.0 - spec.share_tolerance) * 100.0,
                    want * (1.0 + spec.share_tolerance) * 100.0
                ));
            }
        }
    }
    if let Some(expect) = &spec.expect_broken {
        for (i, s) in servers.iter().enumerate() {
            if expect.contains(&i) {
                if s.broken == 0 {
                    failures.push(format!(
                        "server {}: no connection broke, expected its connections to break",
                        s.name
                    ));
                }
            } else if s.broken > 0 {
                failures.push(format!(
                    "server {}: {} of its {} connections broke, expected none to",
                    s.name, s.broken, s.connections
                ));
            }
        }
        // A connection no server accepted cannot be attributed; when the fault breaks the
        // expected servers' connections it can be one of theirs that the server's kernel
        // had answered but its application had not accepted yet (a CI run of
        // balance_e2e saw one beside 68 of m2's). A few are allowed; more would hide
        // breaks the test must see.
        let expected_broken: u64 = servers.iter().enumerate().filter(|(i, _)| expect.contains(i)).map(|(_, s)| s.broken).sum();
        let allowed = 1 + expected_broken / 50;
        if unattributed_broken > allowed {
            failures.push(format!(
                "{} connections broke that no server had accepted (at most {} may, beside the {} expected breaks)",
                unattributed_broken, allowed, expected_broken
            ));
        }
    }
    Attribution {
        servers,
        unattributed,
        unattributed_broken,
        failures,
    }
}

/// Read into `buf`, waiting through socket timeouts until `deadline`; 0 = EOF.
pub(crate) fn read_some(
    s: &mut std::net::TcpStream,
    buf: &mut [u8],
    ctx: &Ctx,
) -> std::io::Result<usize> {
    use std::io::{ErrorKind, Read};
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if Instant::now() >= ctx.deadline {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        "workload time limit reached",
                    ));
                }
                if ctx.stopping() {
                    return Err(std::io::Error::new(ErrorKind::Interrupted, "stopped"));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Write all of `buf`, waiting through socket timeouts until `deadline`.
pub(crate) fn write_all(
    s: &mut std::net::TcpStream,
    mut buf: &[u8],
    ctx: &Ctx,
) -> std::io::Result<()> {
    use std::io::{ErrorKind, Write};
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    ErrorKind::WriteZero,
                    "connection closed",
                ))
            }
            Ok(n) => buf = &buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if Instant::now() >= ctx.deadline {
                    return Err(std::io::Error::new(
                        ErrorKind::TimedOut,
                        "workload time limit reached",
                    ));
                }
                if ctx.stopping() {
                    return Err(std::io::Error::new(ErrorKind::Interrupted, "stopped"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(weights: Vec<u32>, expect_broken: Option<Vec<usize>>) -> Spec {
        let a: SocketAddr = "10.0.0.100:80".parse().unwrap();
        let mut s = Spec::simple(
            "w".into(),
            WorkloadKind::Echo,
            vec!["c".into()],
            "m1".into(),
            a,
            a,
            1,
            1,
            150,
            None,
            Duration::from_secs(1),
            1,
        );
        s.server_names = vec!["m1".into(), "m2".into(), "m3".into()];
        s.server_ns = s.server_names.clone();
        s.weights = weights;
        s.expect_broken = expect_broken;
        s
    }

    /// `n[i]` connections on server i, the first `broken[i]` of them broken; plus one
    /// connection no server accepted.
    fn records(
        n: [u64; 3],
        broken: [u64; 3],
    ) -> (Vec<client::ConnRecord>, HashMap<SocketAddr, usize>) {
        let mut recs = Vec::new();
        let mut acc = HashMap::new();
        let mut port = 1000u16;
        for i in 0..3 {
            for k in 0..n[i] {
                let a: SocketAddr = format!("10.0.0.11:{}", port).parse().unwrap();
                port += 1;
                acc.insert(a, i);
                recs.push(client::ConnRecord {
                    local: Some(a),
                    requests: 1,
                    bytes_verified: 10,
                    broken: k < broken[i],
                });
            }
        }
        recs.push(client::ConnRecord {
            local: Some("10.0.0.12:5".parse().unwrap()),
            requests: 0,
            bytes_verified: 0,
            broken: false,
        });
        (recs, acc)
    }

    #[test]
    fn shares_are_checked_relative_to_the_expected_share() {
        let accepts: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        // 25 % / 25 % / 50 % expected; 22.5 %..27.5 % is within ±10 % of 25 %.
        let (r, a) = records([230, 270, 500], [0; 3]);
        let at = attribute(&spec(vec![100, 100, 200], None), &r, &a, &accepts);
        assert!(at.failures.is_empty(), "{:?}", at.failures);
        assert_eq!(at.servers[0].connections, 230);
        assert_eq!(at.servers[2].share, 0.5);
        assert_eq!(at.servers[1].expected_share, Some(0.25));
        assert_eq!(at.unattributed, 1);
        assert_eq!(at.servers[0].bytes_verified, 2300);
        let (r, a) = records([220, 280, 500], [0; 3]);
        let at = attribute(&spec(vec![100, 100, 200], None), &r, &a, &accepts);
        assert_eq!(at.failures.len(), 2, "{:?}", at.failures);
        assert_eq!(at.servers[0].share_ok, Some(false));
        assert_eq!(at.servers[2].share_ok, Some(true));
    }

    #[test]
    fn broken_connections_must_be_on_the_expected_servers() {
        let accepts: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
        let (r, a) = records([60, 60, 120], [0, 60, 0]);
        let at = attribute(&spec(vec![], Some(vec![1])), &r, &a, &accepts);
        assert!(at.failures.is_empty(), "{:?}", at.failures);
        assert_eq!(at.servers[1].broken, 60);
        let (r, a) = records([60, 60, 120], [1, 60, 0]);
        let at = attribute(&spec(vec![], Some(vec![1])), &r, &a, &accepts);
        assert_eq!(at.failures.len(), 1, "{:?}", at.failures);
        assert!(
            at.failures[0].contains("m1: 1 of its 60"),
            "{:?}",
            at.failures
        );
        let (r, a) = records([60, 60, 120], [0, 0, 0]);
        let at = attribute(&spec(vec![], Some(vec![1])), &r, &a, &accepts);
        assert!(
            at.failures[0].contains("m2: no connection broke"),
            "{:?}",
            at.failures
        );
        // Connections no server accepted that broke: 1 + 2 % of the expected breaks pass.
        let unaccepted_broken = |k: u16| {
            (0..k).map(move |i| client::ConnRecord { local: Some(SocketAddr::from(([10, 0, 0, 13], 7000 + i))), requests: 0, bytes_verified: 0, broken: true })
        };
        let (mut r, a) = records([60, 100, 120], [0, 100, 0]);
        r.extend(unaccepted_broken(3));
        let at = attribute(&spec(vec![], Some(vec![1])), &r, &a, &accepts);
        assert!(at.failures.is_empty(), "3 of 100: {:?}", at.failures);
        r.extend(unaccepted_broken(4).skip(3));
        let at = attribute(&spec(vec![], Some(vec![1])), &r, &a, &accepts);
        assert!(at.failures.iter().any(|f| f.contains("4 connections broke that no server had accepted (at most 3")), "{:?}", at.failures);
    }
}
