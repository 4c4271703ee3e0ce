//! Shared helpers of the testbed's integration tests (they drive the `testbed` binary).
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn testbed() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_testbed"))
}

/// Tests that need root fail (not skip) without it.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, TAP devices, DPDK): run `sudo -E cargo test -p testbed`"
    );
}

/// The tapsplice binary, located like the CLI does: $TAPSPLICE_BIN, else next to testbed.
pub fn tapsplice() -> PathBuf {
    if let Some(p) = std::env::var_os("TAPSPLICE_BIN").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "TAPSPLICE_BIN={} does not exist", p.display());
        return p;
    }
    let p = testbed()
        .parent()
        .unwrap_or(Path::new("."))
        .join("tapsplice");
    assert!(
        p.is_file(),
        "tapsplice binary not found at {}: build it first with `cargo build -p tapsplice` (same profile and CARGO_TARGET_DIR), or set TAPSPLICE_BIN",
        p.display()
    );
    p
}

pub fn topology(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name)
}

/// Run testbed with `args`, bounded by `limit`; returns the output.
pub fn run(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(testbed())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start testbed");
    let t0 = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if t0.elapsed() > limit {
            // SIGINT first so that it cleans up.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            std::thread::sleep(Duration::from_secs(25));
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "testbed {:?} did not finish within {:?}\nstdout:\n{}\nstderr:\n{}",
                args,
                limit,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// The JSON object on the last line of stdout.
pub fn last_json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "last stdout line is not JSON ({}): {:?}\nstderr:\n{}",
            e,
            last,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn dump(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Nothing of run `id` is left: namespaces, run directory, liveness file, DPDK dirs.
pub fn assert_cleaned(id: &str) {
    let prefix = format!("{}-", id);
    let ns: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(ns.is_empty(), "namespaces left behind: {:?}", ns);
    let dpdk: Vec<String> = std::fs::read_dir("/var/run/dpdk")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(dpdk.is_empty(), "DPDK runtime dirs left behind: {:?}", dpdk);
    let ifs: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(id))
                .collect()
        })
        .unwrap_or_default();
    assert!(ifs.is_empty(), "interfaces left behind: {:?}", ifs);
    assert!(
        !Path::new(&format!("/run/testbed/{}.pid", id)).exists(),
        "liveness file left behind"
    );
}

/// Every workload verified every byte that was sent, with no error.
pub fn assert_workloads_exact(v: &Value) {
    let wls = v["workloads"].as_array().expect("workloads array");
    assert!(!wls.is_empty());
    for w in wls {
        let name = w["name"].as_str().unwrap_or("?");
        let u = |k: &str| {
            w[k].as_u64()
                .unwrap_or_else(|| panic!("workload {}: no {}", name, k))
        };
        assert!(
            u("bytes_expected") > 0,
            "workload {}: nothing requested",
            name
        );
        assert_eq!(
            u("bytes_verified"),
            u("bytes_expected"),
            "workload {}: {}",
            name,
            w
        );
        assert_eq!(
            u("bytes_verified"),
            u("bytes_sent"),
            "workload {}: {}",
            name,
            w
        );
        assert_eq!(
            u("bytes_received"),
            u("bytes_verified"),
            "workload {}: {}",
            name,
            w
        );
        assert_eq!(u("errors"), 0, "workload {}: {}", name, w);
        assert_eq!(u("mismatched_bytes"), 0, "workload {}: {}", name, w);
        assert!(
            w["goodput_mbps"].as_f64().unwrap_or(0.0) > 0.0,
            "workload {}: no goodput",
            name
        );
        let lat = &w["latency_us"];
        for k in ["p50", "p90", "p99", "p99.9", "max"] {
            assert!(
                lat[k].as_u64().is_some(),
                "workload {}: latency_us.{} missing",
                name,
                k
            );
        }
        assert_eq!(
            lat["count"].as_u64(),
            Some(u("requests")),
            "workload {}",
            name
        );
        assert_eq!(w["passed"], true, "workload {}", name);
    }
}

/// A topology file written by a test (removed when the value is dropped).
pub struct TempTopology {
    dir: PathBuf,
    pub path: PathBuf,
}

impl TempTopology {
    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for TempTopology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn write_topology(name: &str, text: &str) -> TempTopology {
    let dir = std::env::temp_dir().join(format!("testbed-test-{}-{}", std::process::id(), name));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", name));
    std::fs::write(&path, text).unwrap();
    TempTopology { dir, path }
}

/// `testbed run topologies/NAME --json` with the real tapsplice binary (as root): the
/// process output and its JSON report, which must not be an error and whose workloads
/// must all be byte-exact.
#[allow(dead_code)]
pub fn run_topology_with_tapsplice(name: &str) -> (Output, Value) {
    let (out, v) = run_topology_report(name, Duration::from_secs(400));
    assert_workloads_exact(&v);
    (out, v)
}

/// `testbed run topologies/NAME --json` with the freshly built appliance, within `limit`;
/// the run must have started (no top-level `error`), its verdicts are the caller's.
#[allow(dead_code)]
pub fn run_topology_report(name: &str, limit: Duration) -> (Output, Value) {
    require_root();
    let bin = tapsplice();
    let topo = topology(name);
    let out = run(&["run", topo.to_str().unwrap(), "--json", "--tapsplice", bin.to_str().unwrap()], limit);
    let v = last_json(&out);
    assert!(v.get("error").is_none(), "the run did not start (the appliance refused the rack?): {}\n{}", v["error"], dump(&out));
    (out, v)
}
