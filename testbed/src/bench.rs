//! `testbed bench NAME`: the same bulk TCP transfer through (a) tapsplice, (b) dpdk-testpmd
//! io-forward on the same TAP topology (same namespaces, TAP names, lcores and memory),
//! optionally (c) a direct veth between two namespaces; repeated with alternating order,
//! medians reported.

use crate::run::{Options, Testbed};
use crate::topology::{ApplianceKind, Endpoint, Link, Namespace, Topology, WorkloadKind};
use crate::workload::{Spec, WorkloadResult};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Tapsplice,
    Testpmd,
    Direct,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        match s.trim() {
            "tapsplice" => Ok(Mode::Tapsplice),
            "testpmd" => Ok(Mode::Testpmd),
            "direct" => Ok(Mode::Direct),
            o => bail!("unknown bench mode `{}` (tapsplice, testpmd, direct)", o),
        }
    }
}

pub struct BenchOptions {
    pub modes: Vec<Mode>,
    pub connections: u32,
    pub bytes: Option<u64>,
    pub seconds: Option<f64>,
    pub repeat: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub mode: Mode,
    pub repeat: u32,
    pub goodput_mbps: f64,
    pub bytes_verified: u64,
    pub elapsed_s: f64,
    pub errors: u64,
    pub passed: bool,
    #[serde(skip)]
    pub appliance_report: Option<Value>,
}

/// The head of a benchmark DUT's rack config: `[node]` (id, one role), `[eal]` (main
/// lcore 0, one worker, no hugepages, `prefix`), `[mempool]` and a busy-polling
/// `[workers]` — what every bench DUT shares; its ports and role sections follow.
pub(crate) fn dut_rack_head(title: &str, id: &str, role: &str, prefix: &str) -> String {
    format!(
        r#"# {title}
[node]
id = "{id}"
roles = ["{role}"]

[eal]
lcores = "0,1"
memory_mb = 256
hugepages = false
file_prefix = "{prefix}"

[mempool]
mbufs = 8191

[workers]
burst = 32
idle_backoff = false
"#
    )
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `x` to three decimals (figures in the benches' JSON).
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `a / b` to three decimals, when both are there and `b` is positive.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(round3(a / b)),
        _ => None,
    }
}

const DIRECT_A: &str = "benchda";
const DIRECT_B: &str = "benchdb";

pub fn run(mut topo: Topology, opts: Options, b: &BenchOptions) -> Result<Value> {
    let template = topo
        .workloads
        .iter()
        .find(|w| w.kind == WorkloadKind::Bulk)
        .or_else(|| topo.workloads.first())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "topology {} has no workload to take clients, server and address from",
                topo.display_name()
            )
        })?;
    if topo.appliances.is_empty() && b.modes.iter().any(|m| *m != Mode::Direct) {
        bail!("topology {} has no appliance", topo.display_name());
    }
    topo.workloads.clear();
    topo.faults.clear();
    topo.checks.clear();
    if b.modes.contains(&Mode::Direct) {
        for n in [DIRECT_A, DIRECT_B] {
            topo.namespaces.push(Namespace {
                name: n.into(),
                routes: vec![],
                forwarding: false,
                loopback: vec![],
                sysctl: Default::default(),
            });
        }
        let ep = |ns: &str, a: &str| Endpoint {
            ns: Some(ns.into()),
            bridge: None,
            ifname: Some("eth0".into()),
            address: Some(a.into()),
            mac: None,
        };
        topo.links.push(Link {
            name: Some("benchdirect".into()),
            a: ep(DIRECT_A, "10.98.0.1/24"),
            b: ep(DIRECT_B, "10.98.0.2/24"),
            mtu: None,
            offloads: true,
        });
        topo.validate()?;
    }
    let seconds = b.seconds;
    let reply = b.bytes.unwrap_or(if seconds.is_some() {
        4_000_000
    } else {
        50_000_000
    });
    let timeout = Duration::from_secs_f64(seconds.map(|s| s + 120.0).unwrap_or(300.0));
    let tb = Testbed::setup(topo, opts)?;
    let per_trial = timeout.as_secs_f64() + 60.0;
    tb.watchdog(Duration::from_secs_f64(
        per_trial * (b.modes.len() as f64) * b.repeat as f64 + 60.0,
    ));
    let run = tb.run.clone();
    let spec_for = |mode: Mode| -> Spec {
        let (clients, server, connect) = if mode == Mode::Direct {
            (
                vec![run.netns(DIRECT_A)],
                run.netns(DIRECT_B),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 98, 0, 2)), template.port),
            )
        } else {
            let ip: IpAddr = template
                .address
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            (
                template.clients.iter().map(|c| run.netns(c)).collect(),
                run.netns(&template.server_names()[0]),
                SocketAddr::new(ip, template.port),
            )
        };
        let listen = match (&template.listen, mode) {
            (Some(l), m) if m != Mode::Direct => {
                SocketAddr::new(l.parse().unwrap_or(connect.ip()), template.port)
            }
            _ => connect,
        };
        Spec::simple(
            format!("bulk-{:?}", mode).to_lowercase(),
            WorkloadKind::Bulk,
            clients,
            server,
            connect,
            listen,
            b.connections,
            if seconds.is_some() { 0 } else { 1 },
            reply,
            seconds.map(Duration::from_secs_f64),
            timeout,
            7,
        )
    };
    let mut trials = Vec::new();
    for r in 0..b.repeat {
        let mut order = b.modes.clone();
        if r % 2 == 1 {
            order.reverse();
        }
        for mode in order {
            if crate::guard::interrupted() {
                bail!("interrupted");
            }
            eprintln!("testbed: bench round {}/{}: {:?}", r + 1, b.repeat, mode);
            let spec = spec_for(mode);
            let (res, app): (WorkloadResult, Option<Value>) = match mode {
                Mode::Direct => {
                    let (mut w, _, e) = tb.run_workloads(&[(spec, false)], &mut [], false, None);
                    if let Some(e) = e.first() {
                        bail!("{:?}: {}", mode, e);
                    }
                    (w.pop().ok_or_else(|| anyhow!("no result"))?, None)
                }
                Mode::Tapsplice | Mode::Testpmd => {
                    let kind = if mode == Mode::Tapsplice {
                        ApplianceKind::Tapsplice
                    } else {
                        ApplianceKind::Testpmd
                    };
                    let mut apps = tb.start_appliances_as(Some(kind))?;
                    let (mut w, _, e) = tb.run_workloads(&[(spec, false)], &mut apps, false, None);
                    let stopped = tb.stop_appliances(apps);
                    if let Some(e) = e.first() {
                        bail!("{:?}: {}", mode, e);
                    }
                    if let Some(err) = stopped.iter().find_map(|a| a.error.clone()) {
                        bail!("{:?}: appliance: {}", mode, err);
                    }
                    (
                        w.pop().ok_or_else(|| anyhow!("no result"))?,
                        stopped.into_iter().next().and_then(|a| a.report),
                    )
                }
            };
            eprintln!(
                "testbed: bench {:?}: {:.1} Mbit/s ({} verified in {:.2} s, {} errors){}",
                mode,
                res.goodput_mbps,
                crate::report::human_bytes(res.bytes_verified),
                res.elapsed_s,
                res.errors,
                if res.passed { "" } else { " FAILED" }
            );
            trials.push(Trial {
                mode,
                repeat: r,
                goodput_mbps: res.goodput_mbps,
                bytes_verified: res.bytes_verified,
                elapsed_s: res.elapsed_s,
                errors: res.errors + res.mismatched_bytes,
                passed: res.passed,
                appliance_report: app,
            });
        }
    }
    let med = |m: Mode| {
        median(
            trials
                .iter()
                .filter(|t| t.mode == m)
                .map(|t| t.goodput_mbps)
                .collect(),
        )
    };
    let tp = med(Mode::Tapsplice);
    let pmd = med(Mode::Testpmd);
    let direct = med(Mode::Direct);
    let ratio = match (tp, pmd) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 1000.0).round() / 1000.0),
        _ => None,
    };
    // The burst histogram of the tapsplice trial closest to the median.
    let rep = tp.and_then(|m| {
        trials
            .iter()
            .filter(|t| t.mode == Mode::Tapsplice)
            .min_by(|a, b| {
                (a.goodput_mbps - m)
                    .abs()
                    .partial_cmp(&(b.goodput_mbps - m).abs())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .and_then(|t| t.appliance_report.clone())
    });
    let passed = trials.iter().all(|t| t.passed) && !crate::guard::interrupted();
    Ok(json!({
        "bench": tb.topo.display_name(),
        "run_id": tb.run.to_string(),
        "passed": passed,
        "tapsplice_mbps": tp,
        "testpmd_mbps": pmd,
        "direct_mbps": direct,
        "ratio": ratio,
        "burst_cycles": rep.as_ref().and_then(|r| r.get("burst_cycles")).cloned(),
        "tsc_hz": rep.as_ref().and_then(|r| r.get("tsc_hz")).cloned(),
        "connections": b.connections,
        "bytes_per_request": reply,
        "seconds": seconds,
        "repeat": b.repeat,
        "trials": trials,
    }))
}

pub fn print_human(v: &Value) {
    let f = |k: &str| {
        v.get(k)
            .and_then(Value::as_f64)
            .map(|x| format!("{:.1} Mbit/s", x))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "bench {} (run {})",
        v["bench"].as_str().unwrap_or("?"),
        v["run_id"].as_str().unwrap_or("?")
    );
    if let Some(ts) = v.get("trials").and_then(Value::as_array) {
        for t in ts {
            println!(
                "  round {} {:10} {:>10.1} Mbit/s  {:>9} B verified  {:.2} s  {}",
                t["repeat"].as_u64().unwrap_or(0) + 1,
                t["mode"].as_str().unwrap_or("?"),
                t["goodput_mbps"].as_f64().unwrap_or(0.0),
                t["bytes_verified"],
                t["elapsed_s"].as_f64().unwrap_or(0.0),
                if t["passed"].as_bool().unwrap_or(false) {
                    "ok"
                } else {
                    "FAILED"
                }
            );
        }
    }
    println!("  median tapsplice: {}", f("tapsplice_mbps"));
    println!("  median testpmd:   {}", f("testpmd_mbps"));
    if !v["direct_mbps"].is_null() {
        println!("  median direct:    {}", f("direct_mbps"));
    }
    match v.get("ratio").and_then(Value::as_f64) {
        Some(r) => println!("  ratio tapsplice/testpmd: {:.3}", r),
        None => println!("  ratio tapsplice/testpmd: -"),
    }
    if let Some(bc) = v.get("burst_cycles").filter(|b| !b.is_null()) {
        println!("  tapsplice per-burst processing time:");
        print!(
            "{}",
            crate::report::burst_table(bc, v.get("tsc_hz").and_then(Value::as_f64))
        );
    }
    println!(
        "result: {}",
        if v["passed"].as_bool().unwrap_or(false) {
            "PASS"
        } else {
            "FAIL"
        }
    );
}

/// With --json the human summary goes to stderr so stdout's last line is the JSON.
pub fn print_human_to_stderr(v: &Value) {
    let ratio = v
        .get("ratio")
        .and_then(Value::as_f64)
        .map(|r| format!("{:.3}", r))
        .unwrap_or_else(|| "-".into());
    eprintln!(
        "testbed: bench medians: tapsplice {} Mbit/s, testpmd {} Mbit/s, direct {} Mbit/s, ratio {}",
        v["tapsplice_mbps"], v["testpmd_mbps"], v["direct_mbps"], ratio
    );
}
