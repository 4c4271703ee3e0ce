//! The run report: human summary, JSON (last line of stdout), and histogram tables.

use crate::agent::AgentResult;
use crate::appliance::ApplianceResult;
use crate::check::CheckResult;
use crate::fault::FaultResult;
use crate::runid::RunId;
use crate::workload::{new_histogram, Latency, WorkloadResult};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub topology: String,
    pub description: Option<String>,
    pub passed: bool,
    pub failures: Vec<String>,
    pub goodput_mbps: f64,
    pub requests: u64,
    /// Reply bytes verified at the clients (= `bytes_verified`).
    pub bytes: u64,
    pub bytes_expected: u64,
    pub bytes_sent: u64,
    pub bytes_verified: u64,
    pub mismatched_bytes: u64,
    pub errors: u64,
    pub latency_us: Latency,
    pub elapsed_s: f64,
    pub workloads: Vec<WorkloadResult>,
    pub checks: Vec<CheckResult>,
    pub faults: Vec<FaultResult>,
    pub appliances: BTreeMap<String, ApplianceResult>,
    /// The run's `tapsplice agent` processes ([[agent]]).
    pub agents: Vec<AgentResult>,
    /// The report of the only appliance, when there is exactly one.
    pub appliance: Option<Value>,
}

impl RunReport {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        run: &RunId,
        topology: &str,
        description: Option<String>,
        checks: Vec<CheckResult>,
        workloads: Vec<WorkloadResult>,
        faults: Vec<FaultResult>,
        appliances: Vec<ApplianceResult>,
        agents: Vec<AgentResult>,
        errors: Vec<String>,
        elapsed: Duration,
    ) -> RunReport {
        let mut failures = errors;
        let mut hist = new_histogram();
        for w in &workloads {
            let _ = hist.add(&w.histogram);
            for f in &w.failures {
                failures.push(format!("workload {}: {}", w.name, f));
            }
            let other = w.mismatched_bytes > 0
                || (!w.allow_errors && (w.errors > 0 || w.bytes_verified != w.bytes_expected));
            if !w.passed && (other || w.failures.is_empty()) {
                let why = if w.mismatched_bytes > 0 {
                    format!("{} mismatched bytes", w.mismatched_bytes)
                } else if w.errors > 0 {
                    format!("{} errors", w.errors)
                } else {
                    format!(
                        "{} of {} bytes verified",
                        w.bytes_verified, w.bytes_expected
                    )
                };
                let first = w
                    .error_samples
                    .first()
                    .map(|s| format!(" (first: {})", s))
                    .unwrap_or_default();
                failures.push(format!("workload {}: {}{}", w.name, why, first));
            }
        }
        for c in &checks {
            if !c.passed {
                failures.push(format!(
                    "check {} from {} to {} (expect {}): {}",
                    c.kind, c.ns, c.address, c.expect, c.detail
                ));
            }
        }
        for f in &faults {
            if let Some(e) = &f.error {
                failures.push(format!("fault {:?} {}: {}", f.kind, f.target, e));
            }
        }
        for a in &appliances {
            if let Some(e) = &a.error {
                failures.push(format!("appliance {}: {}", a.name, e));
            }
        }
        for a in &agents {
            if let Some(e) = &a.error {
                failures.push(format!("agent {}: {}", a.id, e));
            }
        }
        let sum = |f: fn(&WorkloadResult) -> u64| workloads.iter().map(f).sum::<u64>();
        // Phases run one after the other: goodput over the sum of workload times (workloads
        // that ran together overlap, so this is conservative).
        let time: f64 = workloads.iter().map(|w| w.elapsed_s).sum::<f64>().max(1e-6);
        let verified = sum(|w| w.bytes_verified);
        let appliance = if appliances.len() == 1 {
            appliances[0].report.clone()
        } else {
            None
        };
        RunReport {
            run_id: run.to_string(),
            topology: topology.to_string(),
            description,
            passed: failures.is_empty(),
            failures,
            goodput_mbps: ((verified as f64 * 8.0 / time / 1e6) * 10.0).round() / 10.0,
            requests: sum(|w| w.requests),
            bytes: verified,
            bytes_expected: sum(|w| w.bytes_expected),
            bytes_sent: sum(|w| w.bytes_sent),
            bytes_verified: verified,
            mismatched_bytes: sum(|w| w.mismatched_bytes),
            errors: sum(|w| w.errors),
            latency_us: Latency::of(&hist),
            elapsed_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            workloads,
            checks,
            faults,
            appliances: appliances
                .into_iter()
                .map(|a| (a.name.clone(), a))
                .collect(),
            agents,
            appliance,
        }
    }

    pub fn print_human(&self) {
        println!(
            "run {} — topology {} — {:.1} s",
            self.run_id, self.topology, self.elapsed_s
        );
        if let Some(d) = &self.description {
            println!("  {}", d);
        }
        for c in &self.checks {
            println!(
                "  check {:4} {} -> {}: {} ({})",
                c.kind,
                c.ns,
                c.address,
                if c.passed { "ok" } else { "FAILED" },
                c.detail
            );
        }
        for w in &self.workloads {
            println!(
                "  workload {} ({}, {} conn): {} requests, {} verified of {} in {:.2} s = {:.1} Mbit/s; latency µs p50 {} p90 {} p99 {} p99.9 {} max {}; errors {}, mismatched bytes {}  [{}]",
                w.name,
                w.kind.as_str(),
                w.connections,
                w.requests,
                human_bytes(w.bytes_verified),
                human_bytes(w.bytes_expected),
                w.elapsed_s,
                w.goodput_mbps,
                w.latency_us.p50,
                w.latency_us.p90,
                w.latency_us.p99,
                w.latency_us.p99_9,
                w.latency_us.max,
                w.errors,
                w.mismatched_bytes,
                if w.passed { "ok" } else { "FAILED" }
            );
            if w.servers.len() > 1 || w.tcp_connections > w.connections as u64 {
                println!(
                    "      {} TCP connections, at most {} open at once",
                    w.tcp_connections, w.max_concurrent
                );
            }
            if w.servers.len() > 1 {
                for s in &w.servers {
                    let expect = match (s.expected_share, s.share_ok) {
                        (Some(e), Some(ok)) => format!(
                            " (expected {:.1} %: {})",
                            e * 100.0,
                            if ok { "ok" } else { "OUT OF TOLERANCE" }
                        ),
                        _ => String::new(),
                    };
                    println!(
                        "      server {:10} {:>6} connections {:5.1} %{}, {} requests, {} verified, broken {}",
                        s.name,
                        s.connections,
                        s.share * 100.0,
                        expect,
                        s.requests,
                        human_bytes(s.bytes_verified),
                        s.broken
                    );
                }
                if w.unattributed_connections > 0 {
                    println!(
                        "      unattributed: {} connections (no server accepted them), broken {}",
                        w.unattributed_connections, w.unattributed_broken
                    );
                }
            }
            for s in w.error_samples.iter().take(3) {
                println!("      error: {}", s);
            }
        }
        for f in &self.faults {
            println!(
                "  fault {:?} {} at {:.2} s{}: {}",
                f.kind,
                f.target,
                f.at_s,
                f.workload
                    .as_ref()
                    .map(|w| format!(" of {}", w))
                    .unwrap_or_default(),
                f.error.clone().unwrap_or_else(|| "done".into())
            );
        }
        for a in &self.agents {
            println!(
                "  agent {} in {}: started {}x, {}{}",
                a.id,
                a.ns,
                a.starts,
                a.exit,
                if a.killed_by_fault {
                    " (killed by a fault)"
                } else {
                    ""
                }
            );
        }
        for a in self.appliances.values() {
            println!(
                "  appliance {} ({}): ready in {:.2} s, {}",
                a.name,
                a.kind.as_str(),
                a.ready_s,
                a.exit
            );
            // Membership changes: peers going down or up, balance members leaving or
            // joining a table.
            let changes: Vec<&Value> = a
                .events
                .as_ref()
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter(|e| {
                            let k = e.get("kind").and_then(Value::as_str).unwrap_or("");
                            k.starts_with("member_") || k.starts_with("peer_")
                        })
                        .collect()
                })
                .unwrap_or_default();
            for e in changes.iter().take(20) {
                println!(
                    "      event {}: {}",
                    e.get("kind").and_then(Value::as_str).unwrap_or("?"),
                    e.get("message").and_then(Value::as_str).unwrap_or("")
                );
            }
            if changes.len() > 20 {
                println!("      ... {} membership events in all", changes.len());
            }
            if let Some(ports) = a
                .report
                .as_ref()
                .and_then(|r| r.get("ports"))
                .and_then(Value::as_array)
            {
                for p in ports {
                    let g = |k: &str| {
                        p.get(k)
                            .and_then(Value::as_u64)
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into())
                    };
                    println!(
                        "      port {:8} rx {:>10} tx {:>10} rx_missed {} rx_errors {} tx_errors {}",
                        p.get("name").and_then(Value::as_str).unwrap_or("?"),
                        g("rx_packets"),
                        g("tx_packets"),
                        g("rx_missed"),
                        g("rx_errors"),
                        g("tx_errors")
                    );
                }
            }
        }
        println!(
            "total: {} requests, {} verified, {:.1} Mbit/s, {} errors, {} mismatched bytes",
            self.requests,
            human_bytes(self.bytes_verified),
            self.goodput_mbps,
            self.errors,
            self.mismatched_bytes
        );
        for f in &self.failures {
            println!("FAILURE: {}", f);
        }
        println!("result: {}", if self.passed { "PASS" } else { "FAIL" });
    }

    pub fn print_json(&self) {
        match serde_json::to_string(self) {
            Ok(s) => println!("{}", s),
            Err(e) => println!(
                "{{\"passed\":false,\"error\":\"cannot serialize report: {}\"}}",
                e
            ),
        }
    }
}

pub fn human_bytes(b: u64) -> String {
    if b >= 10_000_000 {
        format!("{:.1} MB", b as f64 / 1e6)
    } else if b >= 10_000 {
        format!("{:.1} kB", b as f64 / 1e3)
    } else {
        format!("{} B", b)
    }
}

fn bar(frac: f64, width: usize) -> String {
    let n = (frac * width as f64).round() as usize;
    "#".repeat(n.min(width))
}

/// A histogram's power-of-two buckets `(lo, hi, count)` for values in `[lo, hi)`, from the
/// first non-empty bucket to the one holding the maximum (empty when there are no samples).
pub fn log2_buckets(h: &Histogram<u64>) -> Vec<(u64, u64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut buckets: Vec<(u64, u64, u64)> = Vec::new();
    let mut lo = 1u64;
    while lo <= h.max() {
        let hi = lo.saturating_mul(2);
        let c = h.count_between(lo, hi - 1);
        buckets.push((lo, hi, c));
        if hi == lo {
            break;
        }
        lo = hi;
    }
    let first = buckets.iter().position(|b| b.2 > 0).unwrap_or(0);
    buckets.split_off(first)
}

/// A latency histogram in power-of-two buckets with bars.
pub fn histogram_table(h: &Histogram<u64>, unit: &str) -> String {
    let mut out = String::new();
    if h.is_empty() {
        return "  (no samples)\n".into();
    }
    let buckets = log2_buckets(h);
    let maxc = buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1);
    for (lo, hi, c) in &buckets {
        out.push_str(&format!(
            "  {:>9} .. {:<9} {:>9}  {:5.1}% {}\n",
            format!("{}{}", lo, unit),
            format!("{}{}", hi, unit),
            c,
            *c as f64 * 100.0 / h.len() as f64,
            bar(*c as f64 / maxc as f64, 40)
        ));
    }
    out
}

/// The appliance's burst-cycle summary (quantiles) as bars, in cycles and in µs.
pub fn burst_table(bc: &Value, tsc_hz: Option<f64>) -> String {
    let mut out = String::new();
    let keys = ["p50", "p90", "p99", "p99.9", "max"];
    let vals: Vec<(String, f64)> = keys
        .iter()
        .filter_map(|k| {
            bc.get(*k)
                .and_then(Value::as_f64)
                .map(|v| (k.to_string(), v))
        })
        .collect();
    if vals.is_empty() {
        return "  (no burst_cycles in the appliance report)\n".into();
    }
    if let Some(c) = bc.get("count") {
        out.push_str(&format!("  bursts: {}\n", c));
    }
    let maxv = vals.iter().map(|v| v.1).fold(1.0, f64::max);
    for (k, v) in vals {
        let us = tsc_hz
            .filter(|h| *h > 0.0)
            .map(|h| format!("{:9.2} µs", v / h * 1e6))
            .unwrap_or_default();
        // log scale bars: max is 40 columns
        let frac = if v <= 1.0 {
            0.0
        } else {
            v.ln() / maxv.ln().max(1.0)
        };
        out.push_str(&format!(
            "  {:>6} {:>12.0} cycles {} {}\n",
            k,
            v,
            us,
            bar(frac, 40)
        ));
    }
    out
}
