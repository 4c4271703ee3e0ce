//! Manual fencing from the ctl (`tapsplice ctl fence NODE --yes-really`): which fence
//! device powers which node off, and the ctl answer. Automatic fencing on a detector
//! decision (and the promotion rule that depends on its verdict) comes with the ST-TCP
//! takeover; it will use the same table.

use crate::config::RackConfig;
use crate::ctl::proto::{ErrorBody, ErrorCode, Event, FenceResult};
use crate::fence::ops::{fence_off, FenceVerdict};
use crate::fence::FenceDevice;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// A node that can be fenced, and how.
#[derive(Clone, Debug)]
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

/// Powers `node` off through its fence device (blocking: it runs on the ctl connection's
/// thread), logs the outcome as an event, and answers the ctl.
pub fn fence_node(targets: &[FenceTarget], node: &str, log: &Mutex<VecDeque<Event>>) -> Result<FenceResult, ErrorBody> {
    let t = targets
        .iter()
        .find(|t| t.node == node)
        .ok_or_else(|| ErrorBody::new(ErrorCode::Refused, format!("no fence device for node {node:?} (see [[server]] fence / backup_fence)")))?;
    let outcome = fence_off(&t.device, t.plug.as_deref());
    let (kind, result, message) = match &outcome.verdict {
        FenceVerdict::VerifiedOff => ("fence_ok", "off_verified", format!("{node} powered off through {} (verified by status)", t.device.name)),
        FenceVerdict::OffUnverified => ("fence_ok", "off", format!("{node} powered off through {} (not verified: verify = false)", t.device.name)),
        FenceVerdict::Failed(f) => ("fence_failed", "failed", format!("fencing {node} through {} FAILED: {f}", t.device.name)),
    };
    eprintln!("tapsplice: {message}");
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
    if l.len() >= 1024 {
        l.pop_front();
    }
    l.push_back(Event { ts_unix_ms: ts, kind: kind.into(), node: Some(node.into()), message: message.clone() });
    Ok(FenceResult { node: node.into(), outcome: result.into(), message, duration_ms: Some(outcome.took.as_millis() as u64) })
}

/// The shared event log type of the control thread.
pub type EventLog = Arc<Mutex<VecDeque<Event>>>;
