//! Workloads over plain veth links and a bridge, without any appliance: the namespace,
//! workload, report and clean-up machinery.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn veth_echo_interactive_bulk_are_byte_exact() {
    require_root();
    let topo = topology("veth.toml");
    let out = run(
        &["run", topo.to_str().unwrap(), "--json"],
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", dump(&out));
    let v = last_json(&out);
    assert_eq!(v["passed"], true, "{}", v);
    assert_workloads_exact(&v);
    let w = v["workloads"].as_array().unwrap();
    let by = |n: &str| {
        w.iter()
            .find(|x| x["name"] == n)
            .unwrap_or_else(|| panic!("no workload {}", n))
            .clone()
    };
    assert_eq!(by("echo")["requests"], 16 * 200);
    assert_eq!(by("echo")["bytes_verified"], 16 * 200 * 150);
    assert_eq!(by("interactive")["requests"], 8 * 100);
    assert_eq!(by("interactive")["bytes_verified"], 8 * 100 * 10240);
    assert_eq!(by("bulk")["requests"], 4);
    assert_eq!(by("bulk")["bytes_verified"], 4 * 20_000_000);
    // Totals and top-level keys of the report.
    assert_eq!(v["errors"], 0);
    assert_eq!(v["requests"], 16 * 200 + 8 * 100 + 4);
    assert!(v["goodput_mbps"].as_f64().unwrap() > 0.0);
    assert!(v["latency_us"]["p99.9"].as_u64().is_some());
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert!(
        checks.iter().all(|c| c["passed"] == true),
        "{}",
        v["checks"]
    );
    assert_cleaned(v["run_id"].as_str().unwrap());
}

#[test]
fn bridge_concurrent_workloads_and_link_fault() {
    require_root();
    let topo = topology("bridge.toml");
    let out = run(
        &["run", topo.to_str().unwrap(), "--json"],
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", dump(&out));
    let v = last_json(&out);
    assert_eq!(v["passed"], true, "{}", v);
    assert_workloads_exact(&v);
    let faults = v["faults"].as_array().unwrap();
    assert_eq!(
        faults.len(),
        2,
        "link_down and its link_up: {}",
        v["faults"]
    );
    assert!(
        faults.iter().all(|f| f["error"].is_null()),
        "{}",
        v["faults"]
    );
    assert_cleaned(v["run_id"].as_str().unwrap());
}

#[test]
fn human_report_is_the_default() {
    require_root();
    let topo = topology("veth.toml");
    let out = run(&["run", topo.to_str().unwrap()], Duration::from_secs(300));
    assert!(out.status.success(), "{}", dump(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("workload bulk"), "{}", s);
    assert!(s.lines().last().unwrap_or("").contains("PASS"), "{}", s);
}

#[test]
fn bad_topology_gives_one_clear_line() {
    let p = write_topology("bad", "[[namespace]]\nname = \"a\"\n[[workload]]\nkind = \"echo\"\nclients = [\"a\"]\nserver = \"zz\"\naddress = \"10.0.0.1\"\nport = 1\n");
    let out = run(&["run", p.path_str(), "--json"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", dump(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{}", err);
    assert!(lines[0].contains("namespace `zz`"), "{}", err);
    let v = last_json(&out);
    assert_eq!(v["passed"], false);

    let p = write_topology("typo", "[[namespace]]\nname = \"a\"\nroutez = []\n");
    let out = run(&["run", p.path_str()], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2), "{}", dump(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{}", err);
    assert!(err.contains(":3:1:") && err.contains("routez"), "{}", err);

    let out = run(
        &["run", "/nonexistent/topology.toml"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

#[test]
fn failing_workload_fails_the_run_and_cleans_up() {
    require_root();
    // Nothing listens where the clients connect: connection refused.
    let p = write_topology(
        "refused",
        r#"
[[namespace]]
name = "a"
[[namespace]]
name = "b"
[[link]]
a = { ns = "a", ifname = "eth0", address = "10.95.0.1/24" }
b = { ns = "b", ifname = "eth0", address = "10.95.0.2/24" }
[[workload]]
kind = "echo"
clients = ["a"]
server = "b"
address = "10.95.0.3"
listen = "10.95.0.2"
port = 7000
timeout_s = 10
"#,
    );
    let out = run(&["run", p.path_str(), "--json"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", dump(&out));
    let v = last_json(&out);
    assert_eq!(v["passed"], false);
    assert!(v["errors"].as_u64().unwrap() > 0);
    assert!(!v["failures"].as_array().unwrap().is_empty());
    let id = v["run_id"].as_str().unwrap();
    assert_cleaned(id);
    // Logs are kept for a failed run.
    let _ = std::fs::remove_dir_all(format!("/tmp/testbed-{}", id));
}

#[test]
fn interrupt_stops_and_cleans_up() {
    require_root();
    let p = write_topology(
        "long",
        r#"
[[namespace]]
name = "a"
[[namespace]]
name = "b"
[[bridge]]
name = "sw"
[[link]]
a = { ns = "a", ifname = "eth0", address = "10.94.0.1/24" }
b = { bridge = "sw" }
[[link]]
a = { ns = "b", ifname = "eth0", address = "10.94.0.2/24" }
b = { bridge = "sw" }
[[workload]]
kind = "interactive"
clients = ["a"]
server = "b"
address = "10.94.0.2"
port = 7000
connections = 4
duration_s = 100
timeout_s = 120
"#,
    );
    let child = std::process::Command::new(testbed())
        .args(["run", p.path_str(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let t0 = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?} to stop",
        t0.elapsed()
    );
    assert_ne!(out.status.code(), Some(0), "{}", dump(&out));
    let v = last_json(&out);
    let id = v["run_id"].as_str().map(str::to_string).unwrap_or_else(|| {
        // Interrupted before the report: take the id from stderr.
        let e = String::from_utf8_lossy(&out.stderr);
        e.split("run ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("")
            .to_string()
    });
    assert!(id.starts_with('t') && id.len() == 7, "{}", dump(&out));
    assert_cleaned(&id);
    let _ = std::fs::remove_dir_all(format!("/tmp/testbed-{}", id));
}

#[test]
fn cleanup_command_runs() {
    require_root();
    let out = run(&["cleanup", "--dry-run"], Duration::from_secs(60));
    assert!(out.status.success(), "{}", dump(&out));
}
