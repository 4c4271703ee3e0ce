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
    pub server_ns: String,
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
}

impl Spec {
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
        Ok(Spec {
            name,
            kind: w.kind,
            client_ns: w.clients.iter().map(|c| ns(c)).collect(),
            server_ns: ns(&w.server),
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
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// A started workload.
pub struct Running {
    ctx: Arc<Ctx>,
    started: Instant,
    server: Option<JoinHandle<()>>,
    clients: Vec<JoinHandle<client::ConnResult>>,
}

/// Start the server (and wait until it listens), then every client connection.
pub fn start(spec: Spec) -> Result<Running> {
    let deadline = Instant::now() + spec.timeout;
    let ctx = Arc::new(Ctx {
        spec,
        live: Live::default(),
        stop: AtomicBool::new(false),
        deadline,
    });
    let (tx, rx) = mpsc::channel();
    let sctx = ctx.clone();
    let server = std::thread::Builder::new()
        .name(format!("srv-{}", ctx.spec.name))
        .spawn(move || server::serve(sctx, tx))
        .map_err(|e| anyhow!("cannot start server thread: {}", e))?;
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = server.join();
            return Err(anyhow!("workload {}: server: {}", ctx.spec.name, e));
        }
        Err(_) => {
            ctx.stop.store(true, Ordering::Relaxed);
            return Err(anyhow!(
                "workload {}: server did not start listening within 5 s",
                ctx.spec.name
            ));
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
        server: Some(server),
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
                }
                Err(_) => ctx.live.error("a client thread panicked".into()),
            }
        }
        ctx.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.server.take() {
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
        let l = &ctx.live;
        let elapsed = last_end
            .duration_since(self.started)
            .as_secs_f64()
            .max(1e-6);
        let verified = l.bytes_verified.load(Ordering::Relaxed);
        let errors = l.errors.load(Ordering::Relaxed);
        let mismatched = l.mismatched_bytes.load(Ordering::Relaxed);
        let expected = l.bytes_expected.load(Ordering::Relaxed);
        let passed =
            mismatched == 0 && (spec.allow_errors || (errors == 0 && verified == expected));
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
            histogram: hist,
        }
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
