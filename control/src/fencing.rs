//! Fencing inside `tapsplice run`: which device powers which node off, and the
//! [`FenceDesk`] that puts both kinds of fence — automatic ones decided by the takeover
//! logic, and manual ones from `tapsplice ctl fence NODE --yes-really` — through one
//! [`Fencer`], so that one power switch never gets two sessions at once, every result
//! reaches the takeover logic, and every attempt is counted in the metrics.
//!
//! The control thread only submits (never blocking) and drains results; a ctl connection
//! thread that asked for a manual fence waits for its own request's result.

use crate::config::RackConfig;
use crate::ctl::handler::FenceFn;
use crate::ctl::proto::{ErrorBody, ErrorCode, FenceResult as CtlFenceResult};
use crate::events::EventLog;
use crate::fence::service::{FenceEvent, FenceEventKind, FenceRequest, FenceResult, Fencer, FencerConfig, SubmitError};
use crate::fence::FenceDevice;
use crate::metrics::FenceMetrics;
use crate::takeover::{Outcome, Takeover};
use crossbeam_channel::{bounded, Sender};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A node that can be fenced, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct FenceTarget {
    pub node: String,
    pub device: FenceDevice,
    pub plug: Option<String>,
}

/// Every `[[server]]` primary with `fence`, and backup with `backup_fence`.
pub fn targets(cfg: &RackConfig) -> Vec<FenceTarget> {
    let device = |name: &Option<String>| {
        let name = name.as_ref()?;
        cfg.fence_device.iter().find(|d| &d.name == name).map(FenceDevice::from_config)
    };
    let mut out = Vec::new();
    for s in &cfg.server {
        if let Some(d) = device(&s.fence) {
            out.push(FenceTarget { node: s.primary.clone(), device: d, plug: s.fence_plug.clone() });
        }
        if let Some(d) = device(&s.backup_fence) {
            out.push(FenceTarget { node: s.backup.clone(), device: d, plug: s.backup_fence_plug.clone() });
        }
    }
    out
}

/// Manual requests waiting for their result, by request id.
type Waiters = Arc<Mutex<HashMap<u64, Sender<FenceResult>>>>;

/// See the module documentation.
pub struct FenceDesk {
    fencer: Fencer,
    targets: Vec<FenceTarget>,
    waiters: Waiters,
    metrics: BTreeMap<(String, String), FenceMetrics>,
    log: EventLog,
}

impl FenceDesk {
    pub fn start(targets: Vec<FenceTarget>, log: EventLog) -> Result<FenceDesk, String> {
        let fencer = Fencer::start(FencerConfig::default()).map_err(|e| format!("cannot start the fencing threads: {e}"))?;
        Ok(FenceDesk { fencer, targets, waiters: Arc::default(), metrics: BTreeMap::new(), log })
    }

    /// The ctl's `fence` command: queues a power-off of `node` and waits for its verdict
    /// (on the ctl connection's thread). `None` when the rack has no fence devices.
    pub fn manual(&self) -> Option<FenceFn> {
        if self.targets.is_empty() {
            return None;
        }
        let targets = self.targets.clone();
        let requests = self.fencer.requests();
        let waiters = self.waiters.clone();
        Some(Arc::new(move |node: &str| {
            let t = targets.iter().find(|t| t.node == node).ok_or_else(|| {
                ErrorBody::new(ErrorCode::Refused, format!("no fence device for node {node:?} (see [[server]] fence / backup_fence)"))
            })?;
            let req = FenceRequest::off(node, Arc::new(t.device.clone()), t.plug.as_deref());
            let id = req.id;
            let (tx, rx) = bounded(1);
            waiters.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
            if let Err(e) = requests.try_send(req) {
                waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                return Err(ErrorBody::new(ErrorCode::Internal, format!("{node} was not fenced: {}", submit_error(e.is_full()))));
            }
            let result = rx.recv_timeout(wait_bound(&t.device)).map_err(|_| {
                waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                ErrorBody::new(ErrorCode::Internal, format!("no verdict for fencing {node} in time; see `tapsplice ctl events`"))
            })?;
            Ok(serde_json::to_value(ctl_result(node, t, &result)).unwrap_or_default())
        }))
    }

    /// Queues an automatic power-off decided by the takeover logic; a request that cannot
    /// be queued is a failed fence for it.
    pub fn submit(&mut self, target: &FenceTarget, takeover: &mut Takeover) -> Outcome {
        let req = FenceRequest::off(target.node.clone(), Arc::new(target.device.clone()), target.plug.as_deref());
        match self.fencer.submit(req) {
            Ok(_) => Outcome::default(),
            Err(e) => {
                self.record_result(&target.node, &target.device.name, "not_started", None);
                takeover.on_fence_not_submitted(&target.node, &e.to_string())
            }
        }
    }

    /// Takes every fencing event that arrived: logs it, counts it, hands power-off verdicts
    /// to the takeover logic and manual results to their waiters.
    pub fn drain(&mut self, takeover: &mut Takeover) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        while let Ok(ev) = self.fencer.events().try_recv() {
            outcomes.extend(self.on_event(ev, takeover));
        }
        outcomes
    }

    fn on_event(&mut self, ev: FenceEvent, takeover: &mut Takeover) -> Option<Outcome> {
        match &ev.kind {
            FenceEventKind::Started => {
                self.entry(&ev.node, &ev.device).attempts += 1;
                self.log.push_at(ev.ts_unix_ms, ev.kind_str(), Some(&ev.node), ev.message(), false);
                None
            }
            FenceEventKind::Attempt(a) => {
                self.log.push_at(ev.ts_unix_ms, ev.kind_str(), Some(&ev.node), ev.message(), a.failure.is_some());
                None
            }
            FenceEventKind::Finished(r) => {
                let label = result_label(r);
                let took = match r {
                    FenceResult::Off(o) => Some(o.took.as_secs_f64()),
                    _ => None,
                };
                self.record_result(&ev.node, &ev.device, label, took);
                self.log.push_at(ev.ts_unix_ms, ev.kind_str(), Some(&ev.node), ev.message(), !r.succeeded());
                if let Some(w) = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&ev.request) {
                    let _ = w.try_send(r.clone());
                }
                matches!(r, FenceResult::Off(_) | FenceResult::Cancelled(_)).then(|| {
                    let detail = r.verdict().map_or_else(|| label.to_string(), |v| v.to_string());
                    takeover.on_fence_result(&ev.node, r.permits_promotion(), &detail)
                })
            }
        }
    }

    fn entry(&mut self, node: &str, device: &str) -> &mut FenceMetrics {
        self.metrics.entry((node.to_string(), device.to_string())).or_insert_with(|| FenceMetrics {
            target: node.to_string(),
            device: device.to_string(),
            ..Default::default()
        })
    }

    fn record_result(&mut self, node: &str, device: &str, label: &str, took_s: Option<f64>) {
        let m = self.entry(node, device);
        *m.results.entry(label.to_string()).or_default() += 1;
        if took_s.is_some() {
            m.last_duration_s = took_s;
        }
    }

    /// Per (node, device) counts, for the metrics.
    pub fn metrics(&self) -> Vec<FenceMetrics> {
        self.metrics.values().cloned().collect()
    }

    /// Cancels queued requests and waits for the agents that are running.
    pub fn shutdown(self) {
        self.fencer.shutdown();
    }
}

fn submit_error(full: bool) -> String {
    if full { SubmitError::Full } else { SubmitError::Stopped }.to_string()
}

/// The longest a manual request can take: every attempt's off and status at their timeout,
/// plus queueing behind a request already running on the device.
fn wait_bound(d: &FenceDevice) -> Duration {
    d.timeout * (4 * d.attempts.max(1)) + Duration::from_secs(5)
}

/// The metrics label of a finished request: the verdict, or the failure's kind.
fn result_label(r: &FenceResult) -> &'static str {
    match (r.verdict(), r.failure()) {
        (Some(v), None) => v.as_str(),
        (_, Some(f)) => f.kind.as_str(),
        (None, None) => "ok",
    }
}

fn ctl_result(node: &str, t: &FenceTarget, r: &FenceResult) -> CtlFenceResult {
    let (outcome, message) = match r.verdict() {
        Some(v) if v.permits_promotion() => {
            (if v.as_str() == "verified_off" { "off_verified" } else { "off" }, format!("{node} powered off through {} ({v})", t.device.name))
        }
        Some(v) => ("failed", format!("fencing {node} through {} {v}", t.device.name)),
        None => ("failed", format!("fencing {node} through {} did not run: {}", t.device.name, r.failure().map_or(String::new(), |f| f.to_string()))),
    };
    let duration_ms = match r {
        FenceResult::Off(o) => Some(o.took.as_millis() as u64),
        _ => None,
    };
    CtlFenceResult { node: node.into(), outcome: outcome.into(), message, duration_ms }
}
