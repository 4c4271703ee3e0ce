//! The [`Fencer`]: fencing for the control thread, off its back.
//!
//! The control thread sends [`FenceRequest`]s (never blocking: the queue is bounded and a
//! full queue is an error it can act on), worker threads run them, and every step comes
//! back as a timestamped [`FenceEvent`] on an unbounded channel (a few events per request,
//! so it cannot grow without requests). Requests for one device run one at a time, in the
//! order they were sent (a power switch or BMC rarely takes two sessions, and an `on`
//! must not overtake the `off` before it); different devices run in parallel, one per
//! worker. Counters can be read from any thread.
//!
//! Shutting down cancels queued requests — each still gets its `Finished` event, with a
//! [`FailKind::Cancelled`] failure, so no caller waits forever — and waits for the agents
//! that are running (each is bounded by its device's timeout).

use super::ops::{
    fence_off_with, monitor, power_on_with, status, AttemptRecord, FenceOutcome, FenceVerdict, MonitorOutcome,
    OnVerdict, PowerOnOutcome, StatusOutcome,
};
use super::{unix_ms_now, FailKind, Failure, FenceDevice};
use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender, TrySendError};
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FenceOp {
    /// [`super::fence_off`]: the fence proper.
    Off,
    /// [`super::power_on`].
    On,
    /// [`super::status`].
    Status,
    /// [`super::monitor`] (the plug is ignored).
    Monitor,
}

impl FenceOp {
    pub fn as_str(self) -> &'static str {
        match self {
            FenceOp::Off => "off",
            FenceOp::On => "on",
            FenceOp::Status => "status",
            FenceOp::Monitor => "monitor",
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One request to the fencer.
#[derive(Clone, Debug)]
pub struct FenceRequest {
    /// Unique within the process (assigned by [`FenceRequest::new`]); events carry it.
    pub id: u64,
    /// The node this is about (peer id), for events and logs.
    pub node: String,
    pub device: Arc<FenceDevice>,
    pub plug: Option<String>,
    pub op: FenceOp,
}

impl FenceRequest {
    pub fn new(node: impl Into<String>, device: Arc<FenceDevice>, plug: Option<&str>, op: FenceOp) -> Self {
        FenceRequest {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            node: node.into(),
            device,
            plug: plug.map(str::to_owned),
            op,
        }
    }

    /// Power `node` off: the request that can permit a promotion.
    pub fn off(node: impl Into<String>, device: Arc<FenceDevice>, plug: Option<&str>) -> Self {
        FenceRequest::new(node, device, plug, FenceOp::Off)
    }
}

/// The result of a request, by operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceResult {
    Off(FenceOutcome),
    On(PowerOnOutcome),
    Status(StatusOutcome),
    Monitor(MonitorOutcome),
    /// The request never ran (the fencer shut down).
    Cancelled(Failure),
}

impl FenceResult {
    /// True only for a power-off whose verdict permits promotion (see
    /// [`FenceVerdict::permits_promotion`]); false for every other operation and result.
    pub fn permits_promotion(&self) -> bool {
        matches!(self, FenceResult::Off(o) if o.verdict.permits_promotion())
    }

    /// The operation did what it was asked (for `status`: a state was obtained).
    pub fn succeeded(&self) -> bool {
        self.failure().is_none()
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            FenceResult::Off(o) => o.verdict.failure(),
            FenceResult::On(o) => match &o.verdict {
                OnVerdict::Failed(f) => Some(f),
                _ => None,
            },
            FenceResult::Status(s) => s.state.as_ref().err(),
            FenceResult::Monitor(m) => m.result.as_ref().err(),
            FenceResult::Cancelled(f) => Some(f),
        }
    }

    /// The off verdict, for an `Off` request.
    pub fn verdict(&self) -> Option<&FenceVerdict> {
        match self {
            FenceResult::Off(o) => Some(&o.verdict),
            _ => None,
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceEventKind {
    /// A worker picked the request up.
    Started,
    /// One agent run finished.
    Attempt(AttemptRecord),
    /// The request is done; the last event of the request.
    Finished(FenceResult),
}

/// A timestamped event about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceEvent {
    pub request: u64,
    pub node: String,
    pub device: String,
    pub plug: Option<String>,
    pub op: FenceOp,
    /// Wall clock, milliseconds since the Unix epoch.
    pub ts_unix_ms: u64,
    /// Monotonic time of the event (for durations between events).
    pub at: Instant,
    pub kind: FenceEventKind,
}

impl FenceEvent {
    /// snake_case kind for the ctl event log: `fence_started`, `fence_attempt`, then
    /// `fence_ok` / `fence_failed` (or `fence_on_ok`, `fence_status`, ... for other ops).
    pub fn kind_str(&self) -> &'static str {
        match &self.kind {
            FenceEventKind::Started => "fence_started",
            FenceEventKind::Attempt(_) => "fence_attempt",
            FenceEventKind::Finished(r) => match (r, r.succeeded()) {
                (FenceResult::Off(_), true) => "fence_ok",
                (FenceResult::Off(_), false) | (FenceResult::Cancelled(_), _) => "fence_failed",
                (FenceResult::On(_), true) => "fence_on_ok",
                (FenceResult::On(_), false) => "fence_on_failed",
                (FenceResult::Status(_), true) => "fence_status",
                (FenceResult::Status(_), false) => "fence_status_failed",
                (FenceResult::Monitor(_), true) => "fence_monitor_ok",
                (FenceResult::Monitor(_), false) => "fence_monitor_failed",
            },
        }
    }

    /// One human line, secret-free.
    pub fn message(&self) -> String {
        let plug = self.plug.as_deref().map(|p| format!(" plug={p}")).unwrap_or_default();
        let head = format!("{} of {} via {}{plug}", self.op.as_str(), self.node, self.device);
        match &self.kind {
            FenceEventKind::Started => format!("{head}: started"),
            FenceEventKind::Attempt(a) => format!("{head}: {a}"),
            FenceEventKind::Finished(r) => match r {
                FenceResult::Off(o) => format!(
                    "{head}: {} after {} agent run(s) in {:.3} s; promotion {}",
                    o.verdict,
                    o.attempts.len(),
                    o.took.as_secs_f64(),
                    if o.permits_promotion() { "permitted" } else { "FORBIDDEN" }
                ),
                FenceResult::On(o) => format!("{head}: {:?} in {:.3} s", o.verdict, o.took.as_secs_f64()),
                FenceResult::Status(s) => match &s.state {
                    Ok(st) => format!("{head}: {st:?} ({:.3} s)", s.record.took.as_secs_f64()),
                    Err(f) => format!("{head}: {f}"),
                },
                FenceResult::Monitor(m) => match &m.result {
                    Ok(()) => format!("{head}: device answers ({:.3} s)", m.record.took.as_secs_f64()),
                    Err(f) => format!("{head}: {f}"),
                },
                FenceResult::Cancelled(f) => format!("{head}: {f}"),
            },
        }
    }
}

/// Counters, updated by the workers, readable from any thread.
#[derive(Debug, Default)]
pub struct FenceCounters {
    /// Requests accepted by [`Fencer::submit`] (or sent on [`Fencer::requests`] and picked up).
    pub requests: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected: AtomicU64,
    /// Requests finished (successes + failures).
    pub completed: AtomicU64,
    /// Requests whose operation succeeded (`off`: the verdict permits promotion).
    pub successes: AtomicU64,
    /// Requests that failed, in total and by the kind of the final failure.
    pub failures: AtomicU64,
    failures_by_kind: [AtomicU64; FailKind::ALL.len()],
    /// Agent runs (off, on, status, monitor; verification runs included).
    pub agent_runs: AtomicU64,
    /// Agent runs that failed, for whatever reason.
    pub agent_run_failures: AtomicU64,
    /// Requests being run right now.
    pub in_progress: AtomicU64,
    /// Duration of the last finished `off` request and the longest one, in microseconds.
    pub last_off_us: AtomicU64,
    pub max_off_us: AtomicU64,
}

/// A plain copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FenceCountersSnapshot {
    pub requests: u64,
    pub rejected: u64,
    pub completed: u64,
    pub successes: u64,
    pub failures: u64,
    /// (kind, count) for every kind, in [`FailKind::ALL`] order.
    pub failures_by_kind: Vec<(&'static str, u64)>,
    pub agent_runs: u64,
    pub agent_run_failures: u64,
    pub in_progress: u64,
    pub last_off_us: u64,
    pub max_off_us: u64,
}

impl FenceCounters {
    pub fn failures_of(&self, kind: FailKind) -> u64 {
        self.failures_by_kind[kind.index()].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> FenceCountersSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FenceCountersSnapshot {
            requests: l(&self.requests),
            rejected: l(&self.rejected),
            completed: l(&self.completed),
            successes: l(&self.successes),
            failures: l(&self.failures),
            failures_by_kind: FailKind::ALL.iter().map(|k| (k.as_str(), self.failures_of(*k))).collect(),
            agent_runs: l(&self.agent_runs),
            agent_run_failures: l(&self.agent_run_failures),
            in_progress: l(&self.in_progress),
            last_off_us: l(&self.last_off_us),
            max_off_us: l(&self.max_off_us),
        }
    }
}

/// Sizing of the fencer.
#[derive(Clone, Copy, Debug)]
pub struct FencerConfig {
    /// Worker threads: how many devices can be driven at once.
    pub workers: usize,
    /// Requests waiting before [`Fencer::submit`] refuses more.
    pub queue: usize,
}

impl Default for FencerConfig {
    fn default() -> Self {
        FencerConfig { workers: 2, queue: 64 }
    }
}

/// Why [`Fencer::submit`] refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full; the request was not accepted.
    Full,
    /// The fencer is shutting down.
    Stopped,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full => f.write_str("the fencing queue is full"),
            SubmitError::Stopped => f.write_str("the fencer is stopped"),
        }
    }
}

impl std::error::Error for SubmitError {}

struct Shared {
    events: Sender<FenceEvent>,
    counters: Arc<FenceCounters>,
    stopping: AtomicBool,
    serial: Mutex<Serial>,
}

/// Per-device serialisation: devices with a request running, and the requests waiting
/// behind it.
#[derive(Default)]
struct Serial {
    busy: HashSet<String>,
    waiting: HashMap<String, VecDeque<FenceRequest>>,
}

/// Runs fencing requests on worker threads. See the module documentation.
pub struct Fencer {
    requests: Option<Sender<FenceRequest>>,
    events: Receiver<FenceEvent>,
    shared: Arc<Shared>,
    stop: Option<Sender<()>>,
    workers: Vec<JoinHandle<()>>,
    request_rx: Receiver<FenceRequest>,
}

impl Fencer {
    /// Starts the workers.
    pub fn start(config: FencerConfig) -> std::io::Result<Fencer> {
        let (req_tx, req_rx) = bounded::<FenceRequest>(config.queue.max(1));
        let (ev_tx, ev_rx) = unbounded();
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let shared = Arc::new(Shared {
            events: ev_tx,
            counters: Arc::new(FenceCounters::default()),
            stopping: AtomicBool::new(false),
            serial: Mutex::new(Serial::default()),
        });
        let mut workers = Vec::new();
        for i in 0..config.workers.max(1) {
            let rx = req_rx.clone();
            let stop = stop_rx.clone();
            let sh = Arc::clone(&shared);
            let h = std::thread::Builder::new().name(format!("fence-{i}")).spawn(move || worker(rx, stop, sh))?;
            workers.push(h);
        }
        Ok(Fencer {
            requests: Some(req_tx),
            events: ev_rx,
            shared,
            stop: Some(stop_tx),
            workers,
            request_rx: req_rx,
        })
    }

    /// Queues a request without blocking; returns its id.
    pub fn submit(&self, req: FenceRequest) -> Result<u64, SubmitError> {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return Err(SubmitError::Stopped);
        }
        let Some(tx) = &self.requests else { return Err(SubmitError::Stopped) };
        let id = req.id;
        match tx.try_send(req) {
            Ok(()) => Ok(id),
            Err(TrySendError::Full(_)) => {
                self.shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// The request channel itself, for senders on other threads (`try_send` to stay
    /// non-blocking).
    pub fn requests(&self) -> Sender<FenceRequest> {
        self.requests.clone().expect("requests sender lives until shutdown")
    }

    /// The event channel (clones share the events: each event goes to one receiver).
    pub fn events(&self) -> Receiver<FenceEvent> {
        self.events.clone()
    }

    pub fn counters(&self) -> Arc<FenceCounters> {
        Arc::clone(&self.shared.counters)
    }

    /// Cancels queued requests, waits for running ones, stops the workers.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.requests = None;
        self.stop = None; // disconnects the stop channel: every worker wakes up
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        // Anything still queued (sent on a cloned sender after the workers left).
        while let Ok(req) = self.request_rx.try_recv() {
            cancel(&self.shared, req);
        }
    }
}

impl Drop for Fencer {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop_now();
        }
    }
}

fn emit(sh: &Shared, req: &FenceRequest, kind: FenceEventKind) {
    let _ = sh.events.send(FenceEvent {
        request: req.id,
        node: req.node.clone(),
        device: req.device.name.clone(),
        plug: req.plug.clone(),
        op: req.op,
        ts_unix_ms: unix_ms_now(),
        at: Instant::now(),
        kind,
    });
}

fn cancel(sh: &Shared, req: FenceRequest) {
    let c = &sh.counters;
    c.completed.fetch_add(1, Ordering::Relaxed);
    c.failures.fetch_add(1, Ordering::Relaxed);
    c.failures_by_kind[FailKind::Cancelled.index()].fetch_add(1, Ordering::Relaxed);
    let f = Failure::new(FailKind::Cancelled, "the fencer shut down before this request ran");
    emit(sh, &req, FenceEventKind::Finished(FenceResult::Cancelled(f)));
}

fn worker(rx: Receiver<FenceRequest>, stop: Receiver<()>, sh: Arc<Shared>) {
    loop {
        let req = select! {
            recv(rx) -> r => match r { Ok(r) => r, Err(_) => break },
            recv(stop) -> _ => break,
        };
        if sh.stopping.load(Ordering::SeqCst) {
            sh.counters.requests.fetch_add(1, Ordering::Relaxed);
            cancel(&sh, req);
            continue;
        }
        sh.counters.requests.fetch_add(1, Ordering::Relaxed);
        let key = req.device.name.clone();
        {
            let mut g = sh.serial.lock().unwrap_or_else(|e| e.into_inner());
            if g.busy.contains(&key) {
                // Another worker is driving this device: it runs this one after its own.
                g.waiting.entry(key).or_default().push_back(req);
                continue;
            }
            g.busy.insert(key.clone());
        }
        let mut next = Some(req);
        while let Some(req) = next.take() {
            if sh.stopping.load(Ordering::SeqCst) {
                cancel(&sh, req);
            } else {
                run_request(&sh, req);
            }
            let mut g = sh.serial.lock().unwrap_or_else(|e| e.into_inner());
            next = g.waiting.get_mut(&key).and_then(VecDeque::pop_front);
            if next.is_none() {
                g.waiting.remove(&key);
                g.busy.remove(&key);
            }
        }
    }
    // Drain what is left so that every request gets its Finished event.
    while let Ok(req) = rx.try_recv() {
        sh.counters.requests.fetch_add(1, Ordering::Relaxed);
        cancel(&sh, req);
    }
}

fn run_request(sh: &Shared, req: FenceRequest) {
    let c = &sh.counters;
    c.in_progress.fetch_add(1, Ordering::Relaxed);
    emit(sh, &req, FenceEventKind::Started);
    let mut on_run = |a: &AttemptRecord| {
        c.agent_runs.fetch_add(1, Ordering::Relaxed);
        if a.failure.is_some() {
            c.agent_run_failures.fetch_add(1, Ordering::Relaxed);
        }
        emit(sh, &req, FenceEventKind::Attempt(a.clone()));
    };
    let dev = &req.device;
    let plug = req.plug.as_deref();
    let result = match req.op {
        FenceOp::Off => {
            let o = fence_off_with(dev, plug, &mut on_run);
            let us = duration_us(o.took);
            c.last_off_us.store(us, Ordering::Relaxed);
            c.max_off_us.fetch_max(us, Ordering::Relaxed);
            FenceResult::Off(o)
        }
        FenceOp::On => FenceResult::On(power_on_with(dev, plug, &mut on_run)),
        FenceOp::Status => {
            let s = status(dev, plug);
            on_run(&s.record);
            FenceResult::Status(s)
        }
        FenceOp::Monitor => {
            let m = monitor(dev);
            on_run(&m.record);
            FenceResult::Monitor(m)
        }
    };
    c.completed.fetch_add(1, Ordering::Relaxed);
    match result.failure() {
        None => {
            c.successes.fetch_add(1, Ordering::Relaxed);
        }
        Some(f) => {
            c.failures.fetch_add(1, Ordering::Relaxed);
            c.failures_by_kind[f.kind.index()].fetch_add(1, Ordering::Relaxed);
        }
    }
    c.in_progress.fetch_sub(1, Ordering::Relaxed);
    emit(sh, &req, FenceEventKind::Finished(result));
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::FenceVerdict;

    fn finished(rx: &Receiver<FenceEvent>, id: u64) -> (Vec<FenceEvent>, FenceResult) {
        let mut evs = Vec::new();
        loop {
            let e = rx.recv_timeout(Duration::from_secs(10)).expect("event");
            if e.request != id {
                continue;
            }
            evs.push(e.clone());
            if let FenceEventKind::Finished(r) = e.kind {
                return (evs, r);
            }
        }
    }

    #[test]
    fn requests_run_off_thread_and_report_events_and_counters() {
        let f = Fencer::start(FencerConfig::default()).unwrap();
        let ev = f.events();
        let dev = Arc::new(FenceDevice::new("truthy", "/bin/true").with_verify(false));
        let t0 = Instant::now();
        let id = f.submit(FenceRequest::off("srv-a", Arc::clone(&dev), Some("1"))).unwrap();
        assert!(t0.elapsed() < Duration::from_millis(50), "submit must not wait for the agent");
        let (evs, r) = finished(&ev, id);
        assert_eq!(evs[0].kind, FenceEventKind::Started);
        assert!(matches!(evs[1].kind, FenceEventKind::Attempt(_)));
        assert_eq!(r.verdict(), Some(&FenceVerdict::OffUnverified));
        assert!(r.permits_promotion());
        assert_eq!(evs.last().unwrap().kind_str(), "fence_ok");
        assert!(evs.last().unwrap().message().contains("promotion permitted"));

        let bad = Arc::new(FenceDevice::new("gone", "/nonexistent/fence_gone"));
        let id = f.submit(FenceRequest::off("srv-b", bad, None)).unwrap();
        let (evs, r) = finished(&ev, id);
        assert!(!r.permits_promotion());
        assert_eq!(evs.last().unwrap().kind_str(), "fence_failed");
        assert!(evs.last().unwrap().message().contains("FORBIDDEN"));

        let s = f.counters().snapshot();
        assert_eq!((s.requests, s.completed, s.successes, s.failures), (2, 2, 1, 1));
        assert_eq!(f.counters().failures_of(FailKind::AgentMissing), 1);
        assert_eq!(s.agent_runs, 2);
        assert_eq!(s.in_progress, 0);
        f.shutdown();
    }

    #[test]
    fn status_is_not_a_promotion() {
        let f = Fencer::start(FencerConfig { workers: 1, queue: 4 }).unwrap();
        let dev = Arc::new(FenceDevice::new("t", "/bin/true"));
        let id = f.submit(FenceRequest::new("n", dev, None, FenceOp::Status)).unwrap();
        let (_, r) = finished(&f.events(), id);
        assert!(r.succeeded());
        assert!(!r.permits_promotion());
    }
}
