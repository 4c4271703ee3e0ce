//! [[agent]]s and the kill_agent / start_agent faults with a running appliance: three
//! `tapsplice agent`s in member namespaces heartbeat in-band to tapsplice on its `mgmt`
//! port (the balance rack of topologies/balance.toml run with role forward, which carries
//! the in-band heartbeats too), the run waits until the appliance reports them up, and one
//! is killed and restarted at times counted from a workload's start; the appliance's
//! events show it going down and coming back.

mod common;
use common::*;
use serde_json::Value;
use std::time::Duration;

#[test]
fn agents_heartbeat_in_band_and_faults_kill_and_restart_them() {
    require_root();
    let bin = tapsplice();
    let rack = topology("balance-rack.toml");
    let t = write_topology(
        "agents",
        &format!(
            r#"
[[namespace]]
name = "c1"
[[namespace]]
name = "m1"
[[namespace]]
name = "m2"
[[namespace]]
name = "m3"
[[bridge]]
name = "cl"
[[bridge]]
name = "mb"
[[bridge]]
name = "mg"
[[link]]
a = {{ ns = "c1", ifname = "eth0", address = "10.0.0.11/24" }}
b = {{ bridge = "cl" }}
[[link]]
a = {{ ns = "m1", ifname = "eth0", address = "10.0.0.21/24" }}
b = {{ bridge = "mb" }}
[[link]]
a = {{ ns = "m2", ifname = "eth0", address = "10.0.0.22/24" }}
b = {{ bridge = "mb" }}
[[link]]
a = {{ ns = "m3", ifname = "eth0", address = "10.0.0.23/24" }}
b = {{ bridge = "mb" }}
[[link]]
a = {{ ns = "m1", ifname = "mgmt0", address = "192.168.100.21/24" }}
b = {{ bridge = "mg" }}
[[link]]
a = {{ ns = "m2", ifname = "mgmt0", address = "192.168.100.22/24" }}
b = {{ bridge = "mg" }}
[[link]]
a = {{ ns = "m3", ifname = "mgmt0", address = "192.168.100.23/24" }}
b = {{ bridge = "mg" }}
[[appliance]]
name = "lb1"
config = "{rack}"
set = {{ "node.roles" = ["forward"], "node.mgmt" = "127.0.0.1:{{mgmt_port}}", "keys.rack_key" = "{{run_dir}}/rack.key" }}
[[appliance.port]]
port = "clients"
bridge = "cl"
[[appliance.port]]
port = "members"
bridge = "mb"
[[appliance.port]]
port = "mgmt"
bridge = "mg"
[[agent]]
id = "m1"
ns = "m1"
appliance = "lb1"
address = "192.168.100.3"
[[agent]]
id = "m2"
ns = "m2"
appliance = "lb1"
address = "192.168.100.3"
loadavg = 0.5
[[agent]]
id = "m3"
ns = "m3"
appliance = "lb1"
address = "192.168.100.3"
[[check]]
kind = "ping"
ns = "c1"
address = "10.0.0.22"
[[workload]]
name = "warmup"
kind = "echo"
clients = ["c1"]
server = "m1"
address = "10.0.0.21"
port = 7000
connections = 2
requests = 20
[[workload]]
name = "steady"
kind = "echo"
clients = ["c1"]
server = "m1"
address = "10.0.0.21"
port = 7001
connections = 4
duration_s = 4.0
timeout_s = 20
[[fault]]
kind = "kill_agent"
agent = "m2"
workload = "steady"
at_s = 1.0
[[fault]]
kind = "start_agent"
agent = "m2"
workload = "steady"
at_s = 2.0
"#,
            rack = rack.display()
        ),
    );
    let out = run(
        &[
            "run",
            t.path_str(),
            "--json",
            "--tapsplice",
            bin.to_str().unwrap(),
        ],
        Duration::from_secs(180),
    );
    let v = last_json(&out);
    assert!(v.get("error").is_none(), "{}", dump(&out));
    assert_eq!(v["passed"], true, "{}\n{}", v["failures"], dump(&out));
    assert_workloads_exact(&v);
    let faults = v["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2, "{}", v["faults"]);
    for (f, kind, at) in [
        (&faults[0], "kill_agent", 1.0),
        (&faults[1], "start_agent", 2.0),
    ] {
        assert_eq!(f["kind"], kind, "{}", f);
        assert_eq!(f["target"], "m2");
        assert_eq!(f["workload"], "steady");
        assert!(f["error"].is_null(), "{}", f);
        // Counted from the start of "steady", not of "warmup".
        let done = f["done_at_s"].as_f64().unwrap();
        assert!(done >= at && done < at + 1.0, "{}", f);
    }
    let agents = v["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    let m2 = agents.iter().find(|a| a["id"] == "m2").unwrap();
    assert_eq!(m2["starts"], 2, "{}", m2);
    assert_eq!(m2["killed_by_fault"], true);
    for a in agents {
        assert!(a["error"].is_null(), "{}", a);
        assert_eq!(a["ns"], a["id"]);
    }
    // The appliance saw m2 go down (no heartbeat) and come back.
    let events = v["appliances"]["lb1"]["events"]
        .as_array()
        .expect("lb1 events");
    let m2: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("peer m2")))
        .collect();
    let kinds: Vec<&str> = m2
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect();
    assert!(
        kinds.first() == Some(&"peer_up")
            && kinds.last() == Some(&"peer_up")
            && kinds.contains(&"peer_down"),
        "m2's peer events: {:?}",
        m2
    );
    // The control loop's punctuality is in the appliance's report (ctl status, metrics).
    let lp = &v["appliances"]["lb1"]["report"]["control_loop"];
    assert!(lp["iterations"].as_u64().is_some_and(|n| n > 20), "{lp}");
    // Before net_tap's signals were kept off the control thread, its rounds came up to
    // 4.2 s apart in this test; 2 s leaves room for a loaded machine.
    assert!(lp["max_gap_ms"].as_f64().is_some_and(|g| g < 2000.0), "{lp}");
    assert!(out.status.success(), "{}", dump(&out));
    assert_cleaned(v["run_id"].as_str().unwrap());
}
