//! Gratuitous ARP (`control/src/garp.rs`) seen by a real Linux neighbour table: the
//! appliance runs a splice service on two TAP ports; the kernel side of the client port
//! holds stale entries with a wrong MAC for the appliance's address and for the VIP (as
//! after a replaced appliance). When that link comes up, the appliance's announcements
//! must move both entries to its port's MAC, without any traffic from the kernel side.
//!
//! Needs root (TAP ports, neighbour entries); the TAP interfaces stay in the root network
//! namespace and vanish with the appliance.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tapsplice");
const OWN: &str = "10.78.0.2";
const VIP: &str = "10.78.0.100";
const FAKE: &str = "02:de:ad:be:ef:01";

fn rack(dir: &Path) -> String {
    format!(
        r#"[node]
id = "garp"
roles = ["splice"]

[eal]
lcores = "0,1"
memory_mb = 256
hugepages = false
file_prefix = "tapsplice-garp"

[workers]
idle_backoff = true

[[port]]
name = "clients"
device = "net_tap0"
args = "iface=tsg-c0"
addresses = ["{OWN}/24"]

[[port]]
name = "backends"
device = "net_tap1"
args = "iface=tsg-b0"
addresses = ["10.78.1.2/24"]

[[pool]]
name = "web"
members = [{{ address = "10.78.1.21" }}]

[[service]]
name = "web"
vip = "{VIP}"
ports = [80]
mode = "splice"
pool = "web"
via = "clients"
fault_tolerance = "none"

[keys]
syn_cookie_secret = "{dir}/cookie.key"

[ctl]
socket = "{dir}/ctl.sock"

[metrics]
enabled = false
"#,
        dir = dir.display()
    )
}

struct Appliance(Child);

impl Drop for Appliance {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn neighbour(addr: &str) -> String {
    ip(&["neigh", "show", addr, "dev", "tsg-c0"])
}

#[test]
fn stale_neighbours_learn_the_appliance_mac_when_its_link_comes_up() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (TAP ports, neighbour entries)");
    let dir = std::env::temp_dir().join(format!("tsg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("cookie.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let cfg = dir.join("rack.toml");
    std::fs::write(&cfg, rack(&dir)).unwrap();

    let mut child = Command::new(BIN).args(["run", "--config"]).arg(&cfg).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    let err = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(err).read_to_string(&mut s);
        s
    });
    let app = Appliance(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut running = false;
    while !running && Instant::now() < deadline {
        running = rx.recv_timeout(Duration::from_millis(200)).is_ok_and(|l| l.contains("tapsplice: running"));
    }
    assert!(running, "the appliance did not start");

    // The client port's MAC, as the appliance reports it.
    // (The first statistics are published a moment after the start.)
    let mut v = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && v["ports"].as_array().is_none_or(|p| p.is_empty()) {
        std::thread::sleep(Duration::from_millis(100));
        let out = Command::new(BIN).args(["ctl", "--socket"]).arg(dir.join("ctl.sock")).args(["--json", "ports"]).output().unwrap();
        v = serde_json::from_slice(&out.stdout).unwrap_or_default();
    }
    let ports = v["ports"].as_array().unwrap_or_else(|| panic!("ctl ports: {v}"));
    let mac = ports.iter().find(|p| p["name"] == "clients").and_then(|p| p["mac"].as_str()).unwrap_or_else(|| panic!("no clients port MAC: {v}")).to_lowercase();

    // The kernel side comes up already holding wrong MACs for both addresses.
    ip(&["addr", "add", "10.78.0.1/24", "dev", "tsg-c0"]);
    ip(&["link", "set", "tsg-c0", "up"]);
    for a in [OWN, VIP] {
        ip(&["neigh", "replace", a, "lladdr", FAKE, "dev", "tsg-c0", "nud", "stale"]);
        assert!(neighbour(a).contains(FAKE), "{}", neighbour(a));
    }
    let deadline = Instant::now() + Duration::from_secs(6);
    let learned = |a: &str| neighbour(a).contains(&mac);
    while !(learned(OWN) && learned(VIP)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (own, vip) = (neighbour(OWN), neighbour(VIP));
    drop(app);
    let stderr = errs.join().unwrap_or_default();
    assert!(own.contains(&mac), "{OWN}: {own} (appliance MAC {mac}); appliance: {stderr}");
    assert!(vip.contains(&mac), "{VIP}: {vip} (appliance MAC {mac}); appliance: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
