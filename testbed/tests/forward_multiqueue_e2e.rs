//! topologies/forward-multiqueue.toml with the real tapsplice binary: two RX queues per
//! TAP port polled by one worker. Every workload byte-exact, and both queues of each port
//! carried traffic (the per-queue counters of the appliance's report).

mod common;
use common::*;

#[test]
fn forward_with_two_rx_queues_per_port() {
    let (out, v) = run_topology_with_tapsplice("forward-multiqueue.toml");
    assert_eq!(v["errors"], 0, "{}", v);
    assert_eq!(v["passed"], true, "{}", v["failures"]);

    let ports = v["appliance"]["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("no ports: {}", v["appliance"]));
    for p in ports {
        let queues: Vec<u64> = p["rx_queue_packets"]
            .as_array()
            .unwrap_or_else(|| panic!("no per-queue counters: {p}"))
            .iter()
            .map(|q| q.as_u64().unwrap_or(0))
            .collect();
        assert_eq!(queues.len(), 2, "port {}: {p}", p["name"]);
        assert!(
            queues.iter().all(|&n| n > 0),
            "port {}: a queue carried nothing: {queues:?}",
            p["name"]
        );
        assert_eq!(
            queues.iter().sum::<u64>(),
            p["rx_packets"].as_u64().unwrap(),
            "{p}"
        );
    }
    assert!(out.status.success(), "{}", dump(&out));
    assert_cleaned(v["run_id"].as_str().unwrap());
}
