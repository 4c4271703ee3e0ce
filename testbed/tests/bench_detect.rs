//! `testbed bench detect` runs its 50 trials against the real appliance and agent, with
//! each kind of death (SIGKILL of the agent, power-off through the simulated switch), and
//! reports the distribution. The timing target (p99 ≤ K + 1 intervals) is a benchmark
//! figure, not asserted here; what is asserted is that every trial was detected, never
//! before K intervals of silence, and that the report carries its fields.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn bench_detect_reports_every_killed_agent() {
    detects_every_trial("kill");
}

#[test]
fn bench_detect_reports_every_node_powered_off() {
    detects_every_trial("power-off");
}

fn detects_every_trial(fault: &str) {
    require_root();
    let bin = tapsplice();
    let out = run(
        &["bench", "detect", "--json", "--fault", fault, "--tapsplice", bin.to_str().unwrap()],
        Duration::from_secs(300),
    );
    let v = last_json(&out);
    assert!(v.get("error").is_none(), "{}", dump(&out));
    assert_eq!(v["trials"], 50, "{v}");
    assert_eq!(v["fault"], fault, "{v}");
    // From the fault to the decision is never longer than the silence since the last
    // heartbeat (the node died after it) — give or take the time the fault took to act
    // (power-off runs the switch's fence agent, during which one more heartbeat may go).
    let latency = v["fault_latency_max_ms"].as_f64().unwrap() / v["interval_ms"].as_f64().unwrap();
    assert!(v["from_fault_max_intervals"].as_f64().unwrap() <= v["max_intervals"].as_f64().unwrap() + 0.2 + latency, "{v}");
    let k = v["k"].as_f64().unwrap();
    let min = v["min_intervals"].as_f64().unwrap();
    let (p50, p99, max) = (
        v["p50_intervals"].as_f64().unwrap(),
        v["p99_intervals"].as_f64().unwrap(),
        v["max_intervals"].as_f64().unwrap(),
    );
    assert!(
        min >= k,
        "a peer was declared down before K intervals of silence: {v}"
    );
    assert!(min <= p50 && p50 <= p99 && p99 <= max, "{v}");
    println!("detect ({fault}): p50 {p50} p99 {p99} max {max} intervals");
}
