//! topologies/forward.toml end to end with the real tapsplice binary: client — tapsplice
//! forward role — server, every workload byte-exact, the appliance's counters, and its own
//! ARP and ICMP answers.

mod common;
use common::*;
use serde_json::Value;

#[test]
fn forward_through_tapsplice() {
    let (out, v) = run_topology_with_tapsplice("forward.toml");
    assert_eq!(v["errors"], 0, "{}", v);
    assert!(v["goodput_mbps"].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(v["bytes_verified"], v["bytes_sent"]);

    // The appliance's report: packets both ways on both ports.
    let app = &v["appliance"];
    let ports = app["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("no ports in the appliance report: {}", app));
    for name in ["west", "east"] {
        let p = ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {} in {}", name, app));
        assert!(
            p["rx_packets"].as_u64().unwrap_or(0) > 0,
            "port {}: {}",
            name,
            p
        );
        assert!(
            p["tx_packets"].as_u64().unwrap_or(0) > 0,
            "port {}: {}",
            name,
            p
        );
    }
    assert!(app["burst_cycles"].is_object(), "burst_cycles: {}", app);

    // ARP and ICMP echo for the appliance's own addresses (answered by tapsplice).
    let checks = v["checks"].as_array().unwrap();
    let find = |kind: &str, addr: &str| -> Value {
        checks
            .iter()
            .find(|c| c["kind"] == kind && c["address"] == addr)
            .unwrap_or_else(|| panic!("no {} check for {}: {}", kind, addr, v["checks"]))
            .clone()
    };
    let arp = find("arp", "10.99.0.254");
    assert_eq!(arp["passed"], true, "{}", arp);
    assert!(
        arp["lladdr"]
            .as_str()
            .map(|m| m.len() == 17)
            .unwrap_or(false),
        "{}",
        arp
    );
    for addr in ["10.99.0.254", "10.99.0.253", "10.99.0.2"] {
        let c = find("ping", addr);
        assert_eq!(c["passed"], true, "{}", c);
    }
    assert_eq!(v["passed"], true, "{}", v["failures"]);
    assert!(out.status.success(), "{}", dump(&out));
    assert_cleaned(v["run_id"].as_str().unwrap());
}
