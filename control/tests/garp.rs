//! Gratuitous ARP (`control/src/garp.rs`) seen by a real Linux neighbour table: the
//! appliance runs a splice service on two TAP ports; the kernel side of the client port
//! holds stale entries with a wrong MAC for the appliance's address and for the VIP (as
//! after a replaced appliance). When that link comes up, the appliance's announcements
//! must move both entries to its port's MAC, without any traffic from the kernel side.
//!
//! Needs root (TAP ports, neighbour entries); the TAP interfaces stay in the root network
//! namespace and vanish with the appliance.

mod common;
use common::{cookie_key, ctl_json, splice_rack, wait_for, Appliance};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const OWN: &str = "10.78.0.2";
const VIP: &str = "10.78.0.100";
const FAKE: &str = "02:de:ad:be:ef:01";

fn rack(dir: &Path) -> String {
    let ports = [("clients", "tsg-c0", &*format!("{OWN}/24")), ("backends", "tsg-b0", "10.78.1.2/24")];
    let services = format!(
        r#"[[pool]]
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
"#
    );
    splice_rack("garp", &ports, &services, dir)
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
    cookie_key(&dir);
    let cfg = dir.join("rack.toml");
    std::fs::write(&cfg, rack(&dir)).unwrap();
    let app = Appliance::start::<&str>(&cfg, &[]);

    // The client port's MAC, as the appliance reports it (the first statistics are
    // published a moment after the start).
    let sock = dir.join("ctl.sock");
    let mut v = serde_json::Value::Null;
    wait_for(Duration::from_secs(5), || {
        v = ctl_json(&sock, "ports");
        v["ports"].as_array().is_some_and(|p| !p.is_empty())
    });
    let ports = v["ports"].as_array().unwrap_or_else(|| panic!("ctl ports: {v}"));
    let mac = ports.iter().find(|p| p["name"] == "clients").and_then(|p| p["mac"].as_str()).unwrap_or_else(|| panic!("no clients port MAC: {v}")).to_lowercase();

    // The kernel side comes up already holding wrong MACs for both addresses.
    ip(&["addr", "add", "10.78.0.1/24", "dev", "tsg-c0"]);
    ip(&["link", "set", "tsg-c0", "up"]);
    for a in [OWN, VIP] {
        ip(&["neigh", "replace", a, "lladdr", FAKE, "dev", "tsg-c0", "nud", "stale"]);
        assert!(neighbour(a).contains(FAKE), "{}", neighbour(a));
    }
    let learned = |a: &str| neighbour(a).contains(&mac);
    wait_for(Duration::from_secs(6), || learned(OWN) && learned(VIP));
    let (own, vip) = (neighbour(OWN), neighbour(VIP));
    let (_, stderr) = app.stop();
    assert!(own.contains(&mac), "{OWN}: {own} (appliance MAC {mac}); appliance: {stderr}");
    assert!(vip.contains(&mac), "{VIP}: {vip} (appliance MAC {mac}); appliance: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
