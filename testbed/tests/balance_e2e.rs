//! topologies/balance.toml end to end with the real tapsplice binary (role balance): two
//! client namespaces, three members holding the VIP behind the balancer, every byte
//! verified; each member's share of 4160 connections within ±10 % of its expected share
//! (weights 100/100/200); ≥ 200 connections open at once; killing m2's agent mid-run breaks
//! m2's connections and no other member's.
//!
//! If the appliance refuses the rack (role balance not runnable, a key rejected), the run
//! ends with `{"passed":false,"error":"appliance `lb1`: ..."}` and this test fails with
//! that message.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

fn workload<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no workload {}: {}", name, v["workloads"]))
}

fn server<'a>(w: &'a Value, name: &str) -> &'a Value {
    w["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no server {} in {}", name, w))
}

#[test]
fn balance_rack_config_checks() {
    let bin = tapsplice();
    let out = std::process::Command::new(&bin)
        .args(["check", "--config"])
        .arg(topology("balance-rack.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tapsplice check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn balance_through_tapsplice() {
    let (out, v) = run_topology_report("balance.toml", Duration::from_secs(500));

    // Checks: ARP and echo for the VIP answered by lb1, members reachable through it.
    for c in v["checks"].as_array().unwrap() {
        assert_eq!(c["passed"], true, "{}", c);
    }
    assert_eq!(v["checks"].as_array().unwrap().len(), 8);

    // Membership: the three members joined, and the only one that ever left is m2, once
    // (a live member flapping out of the table would move flows and reset connections).
    let events = v["appliances"]["lb1"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in lb1's report: {}", v["appliances"]["lb1"]));
    let of_kind = |k: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["kind"] == k)
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let left = of_kind("member_left");
    assert_eq!(left.len(), 1, "members that left the table: {:?}", left);
    assert!(left[0].contains("10.0.0.22"), "{:?}", left);
    assert_eq!(
        of_kind("member_joined").len(),
        3,
        "{:?}",
        of_kind("member_joined")
    );

    // spread: byte-exact, shares within ±10 % of 25/25/50 %, ≥ 200 open at once.
    let s = workload(&v, "spread");
    for k in ["bytes_verified", "bytes_sent", "bytes_received"] {
        assert_eq!(s[k], s["bytes_expected"], "{}: {}", k, s);
    }
    assert_eq!(s["bytes_expected"], 4160u64 * 65536, "{}", s);
    assert_eq!(s["errors"], 0, "{}", s);
    assert_eq!(s["mismatched_bytes"], 0);
    assert_eq!(s["tcp_connections"], 4160);
    assert!(s["max_concurrent"].as_u64().unwrap() >= 200, "{}", s);
    assert_eq!(s["unattributed_connections"], 0, "{}", s);
    for (m, want) in [("m1", 0.25), ("m2", 0.25), ("m3", 0.5)] {
        let x = server(s, m);
        let share = x["share"].as_f64().unwrap();
        eprintln!(
            "spread: {} {} connections, share {:.4} (expected {})",
            m, x["connections"], share, want
        );
        assert!((share - want).abs() <= 0.1 * want, "{}: {}", m, x);
        assert_eq!(x["share_ok"], true);
        assert_eq!(x["broken"], 0);
    }
    assert_eq!(s["passed"], true, "{}", s);

    // failover: m2's agent killed 3 s in; only m2's connections broke, all of them.
    let f = workload(&v, "failover");
    assert_eq!(f["mismatched_bytes"], 0, "{}", f);
    assert!(f["max_concurrent"].as_u64().unwrap() >= 200, "{}", f);
    for m in ["m1", "m2", "m3"] {
        let x = server(f, m);
        eprintln!(
            "failover: {} {} connections, {} broken, {} requests",
            m, x["connections"], x["broken"], x["requests"]
        );
    }
    let m2 = server(f, "m2");
    assert!(m2["connections"].as_u64().unwrap() > 0, "{}", f);
    assert_eq!(
        m2["broken"], m2["connections"],
        "every m2 connection breaks: {}",
        f
    );
    for m in ["m1", "m3"] {
        assert_eq!(server(f, m)["broken"], 0, "{} lost connections: {}", m, f);
    }
    // A connection no server had accepted yet when m2 left may break too (the workload's
    // judgement allows 1 + 2 % of the expected breaks: see `workload::attribute`).
    assert!(f["unattributed_broken"].as_u64().unwrap() <= 1 + m2["broken"].as_u64().unwrap() / 50, "{}", f);
    assert_eq!(f["passed"], true, "{}", f);
    let fault = &v["faults"][0];
    assert_eq!(fault["kind"], "kill_agent");
    assert!(fault["error"].is_null(), "{}", fault);
    let agents = v["agents"].as_array().unwrap();
    assert!(agents
        .iter()
        .any(|a| a["id"] == "m2" && a["killed_by_fault"] == true));

    // lb1 forwarded both ways and stopped cleanly.
    let app = &v["appliance"];
    for p in app["ports"].as_array().unwrap() {
        assert!(p["rx_packets"].as_u64().unwrap_or(0) > 0, "{}", p);
        assert!(p["tx_packets"].as_u64().unwrap_or(0) > 0, "{}", p);
    }
    assert_eq!(v["passed"], true, "{}", v["failures"]);
    assert!(out.status.success(), "{}", dump(&out));
    assert_cleaned(v["run_id"].as_str().unwrap());
}
