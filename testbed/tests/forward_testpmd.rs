//! topologies/forward.toml with dpdk-testpmd io-forward in the appliance's place: the TAP
//! placement, DPDK process handling and clean-up, independent of tapsplice.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn forward_through_testpmd() {
    require_root();
    let topo = topology("forward.toml");
    let out = run(
        &[
            "run",
            topo.to_str().unwrap(),
            "--json",
            "--appliance-kind",
            "testpmd",
        ],
        Duration::from_secs(400),
    );
    assert!(out.status.success(), "{}", dump(&out));
    let v = last_json(&out);
    assert_eq!(v["passed"], true, "{}", v);
    assert_workloads_exact(&v);
    // The checks for the appliance's own addresses need tapsplice: only the one through
    // the wire ran.
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1, "{}", v["checks"]);
    assert_eq!(checks[0]["address"], "10.99.0.2");
    let ports = v["appliance"]["ports"]
        .as_array()
        .expect("testpmd port counters");
    assert_eq!(ports.len(), 2);
    for p in ports {
        assert!(
            p["rx_packets"].as_u64().unwrap() > 0 && p["tx_packets"].as_u64().unwrap() > 0,
            "{}",
            p
        );
    }
    assert_cleaned(v["run_id"].as_str().unwrap());
}

#[test]
fn bench_testpmd_vs_direct() {
    require_root();
    let out = run(
        &[
            "bench",
            "forward",
            "--json",
            "--modes",
            "testpmd,direct",
            "--bytes",
            "5000000",
            "--connections",
            "2",
        ],
        Duration::from_secs(400),
    );
    assert!(out.status.success(), "{}", dump(&out));
    let v = last_json(&out);
    assert_eq!(v["passed"], true, "{}", v);
    assert!(v["testpmd_mbps"].as_f64().unwrap() > 0.0);
    assert!(v["direct_mbps"].as_f64().unwrap() > 0.0);
    assert!(v["tapsplice_mbps"].is_null() && v["ratio"].is_null());
    assert_cleaned(v["run_id"].as_str().unwrap());
}
