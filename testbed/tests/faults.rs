//! Fault injection: killing an appliance's process in the middle of a workload (run with
//! dpdk-testpmd in the appliance's place, so it tests the testbed, not tapsplice).

mod common;
use common::*;
use std::time::Duration;

#[test]
fn kill_appliance_during_workload() {
    require_root();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/forward.toml");
    let t = write_topology(
        "kill",
        &format!(
            r#"
[[namespace]]
name = "client"
[[namespace]]
name = "server"
[[appliance]]
name = "fw1"
kind = "testpmd"
config = "{config}"
[[appliance.port]]
port = "west"
ns = "client"
ifname = "eth0"
address = "10.93.0.1/24"
[[appliance.port]]
port = "east"
ns = "server"
ifname = "eth0"
address = "10.93.0.2/24"
[[workload]]
kind = "echo"
clients = ["client"]
server = "server"
address = "10.93.0.2"
port = 7000
connections = 4
duration_s = 4
timeout_s = 8
allow_errors = true
[[fault]]
kind = "kill"
appliance = "fw1"
at_s = 1.0
"#
        ),
    );
    let out = run(&["run", t.path_str(), "--json"], Duration::from_secs(120));
    let v = last_json(&out);
    assert_eq!(v["passed"], true, "{}", dump(&out));
    let f = &v["faults"][0];
    assert_eq!(f["kind"], "kill");
    assert!(f["error"].is_null(), "{}", f);
    let a = &v["appliances"]["fw1"];
    assert_eq!(a["killed_by_fault"], true, "{}", a);
    assert!(a["error"].is_null(), "{}", a);
    // Requests before the kill succeeded; the connections then broke (allowed here).
    let w = &v["workloads"][0];
    assert!(w["requests"].as_u64().unwrap() > 0, "{}", w);
    assert!(w["errors"].as_u64().unwrap() > 0, "{}", w);
    assert_eq!(w["mismatched_bytes"], 0);
    assert_cleaned(v["run_id"].as_str().unwrap());
}
