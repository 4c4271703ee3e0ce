//! One run of a topology: build the network, start the appliances, run the checks, the
//! workloads and the faults, stop everything, and report.

use crate::agent::{AgentResult, Agents};
use crate::appliance::{self, ApplianceResult, Binaries, RunningAppliance, TapCounter};
use crate::check::{self, CheckResult};
use crate::fault::{FaultResult, Injector, WorkloadStarts};
use crate::guard::{self, RunGuard};
use crate::network;
use crate::report::RunReport;
use crate::runid::RunId;
use crate::topology::{ApplianceKind, Topology};
use crate::workload::{self, Spec, WorkloadResult};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    pub bins: Binaries,
    /// Run every appliance as this kind instead of the topology's.
    pub kind_override: Option<ApplianceKind>,
    /// `--set KEY=VALUE` overrides for tapsplice rack configs.
    pub sets: BTreeMap<String, toml::Value>,
}

pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("testbed must run as root (it creates network namespaces, TAP devices and DPDK processes): run it with sudo");
    }
    Ok(())
}

/// A built network with its guard: dropping it removes everything.
pub struct Testbed {
    pub topo: Topology,
    pub run: RunId,
    pub opts: Options,
    _guard: RunGuard,
    started: Instant,
}

impl Testbed {
    pub fn setup(topo: Topology, opts: Options) -> Result<Testbed> {
        require_root()?;
        let run = RunId::fresh();
        let guard = RunGuard::new(run.clone())?;
        eprintln!(
            "testbed: run {} (topology {}), files in {}",
            run,
            topo.display_name(),
            run.run_dir().display()
        );
        let tb = Testbed {
            topo,
            run,
            opts,
            _guard: guard,
            started: Instant::now(),
        };
        network::build(&tb.topo, &tb.run)?;
        crate::agent::write_rack_key(&tb.run)?;
        Ok(tb)
    }

    /// Start a watchdog that stops the run after `limit` (everything else is bounded too;
    /// this is the last line of defence).
    pub fn watchdog(&self, limit: Duration) {
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < limit {
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!(
                "testbed: the run exceeded its time limit of {:.0} s, stopping",
                limit.as_secs_f64()
            );
            guard::request_stop();
        });
    }

    pub fn kind_of(&self, i: usize) -> ApplianceKind {
        self.opts
            .kind_override
            .unwrap_or(self.topo.appliances[i].kind)
    }

    /// Start every appliance (in order), then add the namespaces' routes.
    pub fn start_appliances(&self) -> Result<Vec<RunningAppliance>> {
        self.start_appliances_as(self.opts.kind_override)
    }

    /// As `start_appliances`, running every appliance as `kind` when given.
    pub fn start_appliances_as(
        &self,
        kind: Option<ApplianceKind>,
    ) -> Result<Vec<RunningAppliance>> {
        let mut out = Vec::new();
        let mut taps = TapCounter(0);
        for a in self.topo.appliances.iter() {
            let kind = kind.unwrap_or(a.kind);
            eprintln!("testbed: starting appliance {} ({})", a.name, kind.as_str());
            match appliance::start(
                &self.topo,
                a,
                kind,
                &self.run,
                &self.opts.bins,
                &self.opts.sets,
                &mut taps,
            ) {
                Ok(r) => out.push(r),
                Err(e) => {
                    // Stop the ones already running before reporting.
                    for r in out {
                        let _ = r.stop();
                    }
                    return Err(e);
                }
            }
        }
        network::routes(&self.topo, &self.run)?;
        Ok(out)
    }

    pub fn run_checks(&self, kinds: &[ApplianceKind]) -> Vec<CheckResult> {
        let mut out = Vec::new();
        for c in &self.topo.checks {
            if let Some(need) = c.needs {
                if kinds.is_empty() || kinds.iter().any(|k| *k != need) {
                    continue;
                }
            }
            let r = check::run(c, &self.run.netns(&c.ns));
            eprintln!(
                "testbed: check {} from {} to {}: {} ({})",
                r.kind,
                r.ns,
                r.address,
                if r.passed { "ok" } else { "FAILED" },
                r.detail
            );
            out.push(r);
        }
        out
    }

    pub fn specs(&self) -> Result<Vec<Spec>> {
        let run = self.run.clone();
        let ns = move |n: &str| run.netns(n);
        (0..self.topo.workloads.len())
            .map(|i| Spec::from_topology(self.topo.workload_name(i), &self.topo.workloads[i], &ns))
            .collect()
    }

    /// Run workloads in phases (a workload with `with_previous` joins the running phase),
    /// with the topology's faults when `faults` is set.
    pub fn run_workloads(
        &self,
        specs: &[(Spec, bool)],
        apps: &mut [RunningAppliance],
        faults: bool,
        agents: Option<Arc<Agents>>,
    ) -> (Vec<WorkloadResult>, Vec<FaultResult>, Vec<String>) {
        let mut results = Vec::new();
        let mut errors = Vec::new();
        let killed = Arc::new(Mutex::new(Vec::new()));
        let starts: WorkloadStarts = Arc::new(Mutex::new(BTreeMap::new()));
        let injector = if faults && !self.topo.faults.is_empty() {
            let pids: BTreeMap<String, i32> =
                apps.iter().map(|a| (a.name.clone(), a.pid())).collect();
            Some(Injector::start(
                &self.topo,
                &self.run,
                pids,
                killed.clone(),
                agents,
                starts.clone(),
            ))
        } else {
            None
        };
        let mut phases: Vec<Vec<Spec>> = Vec::new();
        for (s, with_prev) in specs {
            match phases.last_mut() {
                Some(p) if *with_prev => p.push(s.clone()),
                _ => phases.push(vec![s.clone()]),
            }
        }
        for phase in phases {
            if guard::interrupted() {
                errors.push("interrupted before all workloads ran".to_string());
                break;
            }
            let mut running = Vec::new();
            for s in phase {
                eprintln!(
                    "testbed: workload {} ({}): {} connection(s) from {} to {} (server{} {})",
                    s.name,
                    s.kind.as_str(),
                    s.connections,
                    s.client_ns.join(","),
                    s.connect,
                    if s.server_ns.len() > 1 { "s" } else { "" },
                    s.server_names.join(",")
                );
                let name = s.name.clone();
                match workload::start(s) {
                    Ok(r) => {
                        if let Ok(mut m) = starts.lock() {
                            m.insert(name, Instant::now());
                        }
                        running.push(r)
                    }
                    Err(e) => errors.push(format!("{:#}", e)),
                }
            }
            let mut last = Instant::now();
            let mut prev: Vec<u64> = running.iter().map(|_| 0).collect();
            while !running.iter().all(|r| r.done()) {
                std::thread::sleep(Duration::from_millis(20));
                if last.elapsed() >= Duration::from_secs(1) {
                    let dt = last.elapsed().as_secs_f64();
                    last = Instant::now();
                    for (i, r) in running.iter().enumerate() {
                        let l = r.live();
                        let v = l.bytes_verified.load(Ordering::Relaxed);
                        eprintln!(
                            "testbed: [{:5.1}s] {}: {:.1} MB verified, {:.1} Mbit/s, {} requests, {}/{} connections done, {} errors",
                            r.elapsed().as_secs_f64(),
                            r.name(),
                            v as f64 / 1e6,
                            (v - prev[i]) as f64 * 8.0 / dt / 1e6,
                            l.requests_ok.load(Ordering::Relaxed),
                            l.conns_done.load(Ordering::Relaxed),
                            r.spec().connections,
                            l.errors.load(Ordering::Relaxed)
                        );
                        prev[i] = v;
                    }
                }
            }
            for r in running {
                results.push(r.finish());
            }
        }
        let fr = injector.map(|i| i.finish()).unwrap_or_default();
        if let Ok(k) = killed.lock() {
            for a in apps.iter_mut() {
                if k.contains(&a.name) {
                    a.mark_killed_by_fault();
                }
            }
        }
        (results, fr, errors)
    }

    pub fn stop_appliances(&self, apps: Vec<RunningAppliance>) -> Vec<ApplianceResult> {
        let mut out = Vec::new();
        for a in apps.into_iter().rev() {
            let r = a.stop();
            eprintln!(
                "testbed: appliance {} stopped ({}){}",
                r.name,
                r.exit,
                r.error
                    .as_ref()
                    .map(|e| format!(": {}", e))
                    .unwrap_or_default()
            );
            out.push(r);
        }
        out.reverse();
        // The TAP interfaces go away with the process; wait for that so the next start can
        // reuse the names.
        let deadline = Instant::now() + Duration::from_secs(5);
        for a in &self.topo.appliances {
            for p in &a.ports {
                let (ns, ifn) = match (&p.ns, &p.bridge) {
                    (Some(ns), _) => (
                        self.run.netns(ns),
                        p.ifname.clone().unwrap_or_else(|| p.port.clone()),
                    ),
                    _ => continue,
                };
                while crate::netns::link_exists(&ns, &ifn) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        out
    }

    /// Default time limit of a whole run.
    pub fn default_limit(&self) -> Duration {
        let t = &self.topo;
        if let Some(s) = t.timeout_s {
            return Duration::from_secs_f64(s);
        }
        let mut total = 60.0;
        let mut phase_max: f64 = 0.0;
        for w in &t.workloads {
            if !w.with_previous {
                total += phase_max;
                phase_max = 0.0;
            }
            phase_max = phase_max.max(w.timeout_s + 10.0);
        }
        total += phase_max;
        for a in &t.appliances {
            total += a.ready_timeout_s + a.stop_timeout_s;
        }
        total += t.checks.iter().map(|c| c.timeout_s).sum::<f64>();
        Duration::from_secs_f64(total)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `testbed run`: the whole sequence, returning the report (also on workload failure).
pub fn run_topology(topo: Topology, opts: Options) -> Result<RunReport> {
    let tb = Testbed::setup(topo, opts)?;
    tb.watchdog(tb.default_limit());
    let mut apps = tb.start_appliances()?;
    let agents = if tb.topo.agents.is_empty() {
        None
    } else {
        let started =
            Agents::start_all(&tb.topo, &tb.run, tb.opts.bins.tapsplice.as_deref(), &apps)
                .and_then(|a| {
                    let r = a.wait_up();
                    match r {
                        Ok(()) => Ok(a),
                        Err(e) => {
                            a.stop_all();
                            Err(e)
                        }
                    }
                });
        match started {
            Ok(a) => Some(a),
            Err(e) => {
                guard::keep_run_dirs();
                let _ = tb.stop_appliances(apps);
                return Err(e);
            }
        }
    };
    let kinds: Vec<ApplianceKind> = (0..tb.topo.appliances.len())
        .map(|i| tb.kind_of(i))
        .collect();
    let checks = tb.run_checks(&kinds);
    let specs: Vec<(Spec, bool)> = match tb.specs() {
        Ok(s) => s
            .into_iter()
            .zip(tb.topo.workloads.iter().map(|w| w.with_previous))
            .collect(),
        Err(e) => {
            let _ = tb.stop_appliances(apps);
            return Err(e);
        }
    };
    let (workloads, faults, mut errors) = tb.run_workloads(&specs, &mut apps, true, agents.clone());
    let agent_results: Vec<AgentResult> = agents.map(|a| a.stop_all()).unwrap_or_default();
    let appliances = tb.stop_appliances(apps);
    if guard::interrupted() {
        errors.push("the run was interrupted (signal, or its time limit)".to_string());
    }
    let report = RunReport::build(
        &tb.run,
        &tb.topo.display_name(),
        tb.topo.description.clone(),
        checks,
        workloads,
        faults,
        appliances,
        agent_results,
        errors,
        tb.elapsed(),
    );
    if !report.passed {
        guard::keep_run_dirs();
    }
    Ok(report)
}
