//! topologies/balance-standin.toml: the balance experiment's hosts (clients, members with
//! the VIP on lo) with an nftables rule on a bridge in the balancer's place — the testbed's
//! side of it (servers in several namespaces, per-member attribution, the share check, the
//! concurrency bound) without DPDK.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn standin_balancer_shares_follow_the_weights() {
    require_root();
    let topo = topology("balance-standin.toml");
    let out = run(
        &["run", topo.to_str().unwrap(), "--json"],
        Duration::from_secs(300),
    );
    let v = last_json(&out);
    assert!(v.get("error").is_none(), "{}", dump(&out));
    assert_workloads_exact(&v);
    assert_eq!(v["passed"], true, "{}", v["failures"]);
    let w = &v["workloads"][0];
    assert_eq!(w["tcp_connections"], 4096, "{}", w);
    assert!(w["max_concurrent"].as_u64().unwrap() >= 200, "{}", w);
    assert_eq!(w["unattributed_connections"], 0, "{}", w);
    let servers = w["servers"].as_array().unwrap();
    let names: Vec<&str> = servers
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["m1", "m2", "m3"]);
    let total: u64 = servers
        .iter()
        .map(|s| s["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 4096);
    for (s, want) in servers.iter().zip([0.25, 0.25, 0.5]) {
        assert_eq!(s["expected_share"], want, "{}", s);
        assert_eq!(s["share_ok"], true, "{}", s);
        let share = s["share"].as_f64().unwrap();
        assert!((share - want).abs() <= 0.1 * want, "{}", s);
        assert_eq!(s["accepted"], s["connections"], "{}", s);
        assert_eq!(s["broken"], 0, "{}", s);
        assert_eq!(
            s["requests"], s["connections"],
            "one request per connection: {}",
            s
        );
        assert_eq!(
            s["bytes_verified"].as_u64().unwrap(),
            s["connections"].as_u64().unwrap() * 65536
        );
    }
    assert!(out.status.success(), "{}", dump(&out));
    assert_cleaned(v["run_id"].as_str().unwrap());
}

/// A share outside the tolerance fails the run (exit 1) and names the server.
#[test]
fn share_out_of_tolerance_fails_the_run() {
    require_root();
    let text = std::fs::read_to_string(topology("balance-standin.toml"))
        .unwrap()
        .replace(
            "weights = { m1 = 1, m2 = 1, m3 = 2 }",
            "weights = { m1 = 1, m2 = 1, m3 = 1 }",
        )
        .replace("requests = 16", "requests = 4");
    let t = write_topology("standin-skewed", &text);
    let out = run(&["run", t.path_str(), "--json"], Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let v = last_json(&out);
    assert_eq!(v["passed"], false);
    let f: Vec<String> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert!(
        f.iter()
            .any(|x| x.contains("server m3") && x.contains("expected 33.3 %")),
        "{:?}",
        f
    );
    assert_eq!(v["mismatched_bytes"], 0);
    let id = v["run_id"].as_str().unwrap();
    assert_cleaned(id);
    // A failed run keeps its directory for inspection; this failure was the point.
    let _ = std::fs::remove_dir_all(format!("/tmp/testbed-{}", id));
}
