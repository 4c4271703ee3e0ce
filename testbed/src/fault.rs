//! Fault injection during workloads: kill an appliance's process, take a link down (and
//! optionally up again), bring a link up, kill or restart a `tapsplice agent`.

use crate::runid::RunId;
use crate::topology::{Fault, FaultKind, Topology};
use anyhow::{anyhow, Result};
use nix::sys::signal::Signal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn parse_signal(s: &str) -> Result<Signal> {
    let up = s.trim().to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{}", up)
    };
    name.parse::<Signal>()
        .map_err(|_| anyhow!("unknown signal `{}`", s))
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultResult {
    pub kind: FaultKind,
    pub target: String,
    /// `at_s` and `done_at_s` count from the start of this workload (else the first one).
    pub workload: Option<String>,
    pub at_s: f64,
    pub done_at_s: Option<f64>,
    pub error: Option<String>,
}

/// The interfaces a fault acts on: (host namespace, ifname).
type Targets = Vec<(String, String)>;

fn link_targets(topo: &Topology, run: &RunId, f: &Fault) -> Result<Targets> {
    if let (Some(ns), Some(ifn)) = (&f.ns, &f.ifname) {
        return Ok(vec![(run.netns(ns), ifn.clone())]);
    }
    let name = f.link.as_deref().unwrap_or("");
    let l = topo
        .links
        .iter()
        .find(|l| l.name.as_deref() == Some(name))
        .ok_or_else(|| anyhow!("no link `{}`", name))?;
    let mut v = Vec::new();
    let li = topo
        .links
        .iter()
        .position(|x| std::ptr::eq(x, l))
        .unwrap_or(0);
    for (i, ep) in [&l.a, &l.b].into_iter().enumerate() {
        match &ep.ns {
            Some(ns) => v.push((run.netns(ns), ep.ifname.clone().unwrap_or_default())),
            None => v.push((run.fabric_ns(), crate::network::bridge_end_name(ep, li, i))),
        }
    }
    Ok(v)
}

fn set_links(targets: &[(String, String)], up: bool) -> Result<()> {
    for (ns, ifn) in targets {
        crate::netns::set_link(ns, ifn, up)?;
    }
    Ok(())
}

/// Start times of the run's workloads by name (faults with `workload` count from them).
pub type WorkloadStarts = Arc<Mutex<BTreeMap<String, Instant>>>;

/// Runs the faults of a topology on a thread, each at `at_s` after the start of the first
/// workload (the injector's start), or of the workload it names.
pub struct Injector {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<FaultResult>>>,
}

fn target_of(f: &Fault) -> String {
    match f.kind {
        FaultKind::Kill => f.appliance.clone().unwrap_or_default(),
        FaultKind::KillAgent | FaultKind::StartAgent => f.agent.clone().unwrap_or_default(),
        _ => f.link.clone().unwrap_or_else(|| {
            format!(
                "{}:{}",
                f.ns.clone().unwrap_or_default(),
                f.ifname.clone().unwrap_or_default()
            )
        }),
    }
}

impl Injector {
    /// `pids` maps appliance names to their process ids; `killed` records which appliances
    /// a kill fault hit; `agents` are the run's [[agent]] processes; `starts` is filled by
    /// the workload runner.
    pub fn start(
        topo: &Topology,
        run: &RunId,
        pids: BTreeMap<String, i32>,
        killed: Arc<Mutex<Vec<String>>>,
        agents: Option<Arc<crate::agent::Agents>>,
        starts: WorkloadStarts,
    ) -> Injector {
        let stop = Arc::new(AtomicBool::new(false));
        let mut plan: Vec<(f64, Fault, Result<Targets>)> = Vec::new();
        for f in &topo.faults {
            let targets = match f.kind {
                FaultKind::Kill | FaultKind::KillAgent | FaultKind::StartAgent => Ok(Vec::new()),
                _ => link_targets(topo, run, f),
            };
            plan.push((f.at_s, f.clone(), targets.map_err(|e| anyhow!("{}", e))));
            if let (FaultKind::LinkDown, Some(d)) = (f.kind, f.duration_s) {
                let mut up = f.clone();
                up.kind = FaultKind::LinkUp;
                up.duration_s = None;
                plan.push((f.at_s + d, up, link_targets(topo, run, f)));
            }
        }
        let st = stop.clone();
        let start = Instant::now();
        let handle = std::thread::spawn(move || {
            let mut results = Vec::new();
            let mut pending: Vec<Option<(f64, Fault, Result<Targets>)>> =
                plan.into_iter().map(Some).collect();
            // When each fault is due (None while its workload has not started).
            let due = |f: &Fault, at: f64| -> Option<Instant> {
                let base = match &f.workload {
                    Some(w) => *starts.lock().ok()?.get(w)?,
                    None => start,
                };
                Some(base + Duration::from_secs_f64(at))
            };
            loop {
                if pending.iter().all(Option::is_none) {
                    break;
                }
                // The earliest fault that is due now, in due order (after an interrupt:
                // none, every fault left is "not reached").
                let now = Instant::now();
                let interrupted = crate::guard::interrupted();
                let next = pending
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        p.as_ref()
                            .and_then(|(at, f, _)| due(f, *at))
                            .map(|d| (i, d))
                    })
                    .filter(|(_, d)| *d <= now && !interrupted)
                    .min_by_key(|(_, d)| *d);
                let Some((i, _)) = next else {
                    if st.load(Ordering::Relaxed) || interrupted {
                        for (at, f, _) in pending.iter_mut().filter_map(Option::take) {
                            results.push(FaultResult {
                                kind: f.kind,
                                target: target_of(&f),
                                workload: f.workload.clone(),
                                at_s: at,
                                done_at_s: None,
                                error: Some("not reached".into()),
                            });
                        }
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let Some((at, f, targets)) = pending[i].take() else {
                    continue;
                };
                let target = target_of(&f);
                let r: Result<()> = (|| {
                    match f.kind {
                        FaultKind::Kill => {
                            let name = f.appliance.as_deref().unwrap_or("");
                            let pid = *pids
                                .get(name)
                                .ok_or_else(|| anyhow!("appliance `{}` is not running", name))?;
                            let sig = parse_signal(f.signal.as_deref().unwrap_or("KILL"))?;
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
                                .map_err(|e| anyhow!("kill {}: {}", pid, e))?;
                            if let Ok(mut k) = killed.lock() {
                                k.push(name.to_string());
                            }
                        }
                        FaultKind::KillAgent => {
                            let a = agents
                                .as_ref()
                                .ok_or_else(|| anyhow!("no agents are running"))?;
                            let sig = parse_signal(f.signal.as_deref().unwrap_or("KILL"))?;
                            a.kill(f.agent.as_deref().unwrap_or(""), sig)?;
                        }
                        FaultKind::StartAgent => {
                            let a = agents
                                .as_ref()
                                .ok_or_else(|| anyhow!("no agents are running"))?;
                            a.start(f.agent.as_deref().unwrap_or(""))?;
                        }
                        FaultKind::LinkDown => {
                            set_links(targets.as_ref().map_err(|e| anyhow!("{}", e))?, false)?
                        }
                        FaultKind::LinkUp => {
                            set_links(targets.as_ref().map_err(|e| anyhow!("{}", e))?, true)?
                        }
                    }
                    Ok(())
                })();
                // Seconds since the fault's reference (the first workload, or its own).
                let base = f
                    .workload
                    .as_ref()
                    .and_then(|w| starts.lock().ok()?.get(w).copied())
                    .unwrap_or(start);
                let done = base.elapsed().as_secs_f64();
                eprintln!(
                    "testbed: [{:6.2}s{}] fault {:?} {}: {}",
                    done,
                    f.workload
                        .as_ref()
                        .map(|w| format!(" of {}", w))
                        .unwrap_or_default(),
                    f.kind,
                    target,
                    r.as_ref()
                        .map(|_| "done".to_string())
                        .unwrap_or_else(|e| format!("{:#}", e))
                );
                results.push(FaultResult {
                    kind: f.kind,
                    target,
                    workload: f.workload.clone(),
                    at_s: at,
                    done_at_s: Some((done * 1000.0).round() / 1000.0),
                    error: r.err().map(|e| format!("{:#}", e)),
                });
            }
            results
        });
        Injector {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Vec<FaultResult> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}
