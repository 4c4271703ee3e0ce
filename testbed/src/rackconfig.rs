//! Editing a base rack config (`configs/*.toml`) into the config of one run, generically
//! through `toml::Table` (the testbed does not depend on the control crate).

use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use toml::{Table, Value};

/// A port of the rack config as the testbed sees it.
#[derive(Debug, Clone)]
pub struct RackPort {
    pub name: String,
    pub device: String,
    pub args: String,
    /// For net_tap ports: the run's unique interface name (in the root namespace at first).
    /// For net_af_packet and net_af_xdp ports: the same, the root end of a veth pair the testbed creates
    /// before the appliance starts (its other end is what gets placed).
    pub tap_ifname: Option<String>,
    /// For net_vhost / net_virtio_user ports: the vhost-user socket path (after the
    /// placeholders are substituted).
    pub socket: Option<String>,
}

pub fn load(path: &std::path::Path) -> Result<Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("rack config {}: cannot read: {}", path.display(), e))?;
    text.parse::<Table>().map_err(|e| {
        anyhow!(
            "rack config {}: {}",
            path.display(),
            e.message().replace('\n', " ")
        )
    })
}

pub fn is_tap(device: &str) -> bool {
    device.starts_with("net_tap")
}

/// A port that reads a kernel interface through a socket (AF_PACKET or AF_XDP): the
/// testbed gives it a veth pair, whose root end it reads and whose other end is placed.
pub fn is_veth_port(device: &str) -> bool {
    device.starts_with("net_af_packet") || device.starts_with("net_af_xdp")
}

/// The argument naming the vhost-user socket of a port's device, if it has one:
/// `iface=` for net_vhost (the server side), `path=` for net_virtio_user (the client).
pub fn socket_key(device: &str) -> Option<&'static str> {
    if device.starts_with("net_vhost") {
        Some("iface")
    } else if device.starts_with("net_virtio_user") {
        Some("path")
    } else {
        None
    }
}

/// The value of `key` in a DPDK vdev argument string (`a=1,b=2`).
pub fn get_kv<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split(',')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v)
}

/// Placeholders the testbed substitutes in every string of a rack config (ports' `args`,
/// `node.mgmt`, `keys.rack_key`, ...).
pub const PLACEHOLDERS: &[&str] = &["{run_dir}", "{run_id}", "{mgmt_port}"];

/// Substitute `{run_dir}` (the run's directory, `/tmp/testbed-<id>`) and `{run_id}`
/// (`<id>`) in `args`. Any other `{...}` is an error (a typo would otherwise reach DPDK).
#[cfg(test)]
pub fn substitute(args: &str, run_dir: &str, run_id: &str) -> Result<String> {
    substitute_all(args, &[("{run_dir}", run_dir), ("{run_id}", run_id)])
}

/// Substitute the given `(placeholder, value)` pairs; any other `{...}` is an error.
pub fn substitute_all(args: &str, values: &[(&str, &str)]) -> Result<String> {
    let mut out = String::with_capacity(args.len() + 32);
    let mut rest = args;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find('}').ok_or_else(|| {
            anyhow!(
                "unterminated placeholder `{}` (known: {})",
                tail,
                PLACEHOLDERS.join(", ")
            )
        })?;
        let ph = &tail[..=end];
        match values.iter().find(|(k, _)| *k == ph) {
            Some((_, v)) => out.push_str(v),
            None => bail!(
                "unknown placeholder `{}` (known: {})",
                ph,
                PLACEHOLDERS.join(", ")
            ),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Substitute placeholders in every string of `v` (recursively), naming the key on error.
fn substitute_value(v: &mut Value, path: &str, values: &[(&str, &str)]) -> Result<()> {
    match v {
        Value::String(s) if s.contains('{') => {
            *s = substitute_all(s, values).map_err(|e| anyhow!("`{}`: {}", path, e))?;
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                substitute_value(x, &format!("{}[{}]", path, i), values)?;
            }
        }
        Value::Table(t) => {
            for (k, x) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{}.{}", path, k)
                };
                substitute_value(x, &p, values)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A UDP port free on this host right now (for `{mgmt_port}`).
pub fn free_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")
        .map_err(|e| anyhow!("cannot find a free UDP port: {}", e))?;
    Ok(s.local_addr()?.port())
}

/// Replace (or add) `key=value` in a DPDK vdev argument string (`a=1,b=2`).
pub fn set_kv(args: &str, key: &str, value: &str) -> String {
    let mut parts: Vec<String> = args
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .filter(|p| p.split('=').next().map(str::trim) != Some(key))
        .map(|p| p.to_string())
        .collect();
    parts.insert(0, format!("{}={}", key, value));
    parts.join(",")
}

/// The ports of the config, in order.
pub fn ports(t: &Table) -> Result<Vec<RackPort>> {
    let Some(arr) = t.get("port") else {
        return Ok(Vec::new());
    };
    let arr = arr
        .as_array()
        .ok_or_else(|| anyhow!("`port` must be an array of tables ([[port]])"))?;
    let mut out = Vec::new();
    for (i, p) in arr.iter().enumerate() {
        let p = p
            .as_table()
            .ok_or_else(|| anyhow!("port #{} is not a table", i + 1))?;
        let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
        out.push(RackPort {
            name: s("name").ok_or_else(|| anyhow!("port #{} has no `name`", i + 1))?,
            device: s("device").ok_or_else(|| anyhow!("port #{} has no `device`", i + 1))?,
            args: s("args").unwrap_or_default(),
            tap_ifname: None,
            socket: None,
        });
    }
    Ok(out)
}

/// Set `value` at a dotted `path` (e.g. `workers.idle_backoff`), creating tables; a
/// number after an array of tables picks its element (`service.0.nat`).
pub fn set_path(t: &mut Table, path: &str, value: Value) -> Result<()> {
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        bail!("bad key path `{}`", path);
    }
    let mut cur = t;
    let mut i = 0;
    while i < keys.len() - 1 {
        let k = keys[i];
        if keys[i + 1].parse::<usize>().is_ok() && !matches!(cur.get(k), Some(Value::Array(_))) {
            bail!("`{}`: `{}` is not an array of tables (no element to index)", path, k);
        }
        let entry = cur.entry(k.to_string()).or_insert_with(|| Value::Table(Table::new()));
        let next = match entry {
            Value::Array(items) => {
                let index: usize = keys
                    .get(i + 1)
                    .filter(|_| i + 1 < keys.len() - 1)
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| anyhow!("`{}`: `{}` is an array: give an element's index after it", path, k))?;
                let len = items.len();
                i += 1;
                items.get_mut(index).ok_or_else(|| anyhow!("`{}`: `{}` has {} elements", path, k, len))?
            }
            other => other,
        };
        cur = next.as_table_mut().ok_or_else(|| anyhow!("`{}`: `{}` is not a table", path, keys[i]))?;
        i += 1;
    }
    cur.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

/// Parse `KEY=VALUE` from the command line; VALUE is a TOML value, or else a string.
pub fn parse_set(s: &str) -> Result<(String, Value)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--set `{}`: expected KEY=VALUE", s))?;
    let value = format!("v = {}", v)
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(v.to_string()));
    Ok((k.trim().to_string(), value))
}

pub struct RunSettings<'a> {
    /// The run's id and directory, substituted for `{run_id}` and `{run_dir}` in ports' args.
    pub run_id: &'a str,
    pub run_dir: &'a str,
    pub file_prefix: &'a str,
    pub ctl_socket: &'a str,
    /// Substituted for `{mgmt_port}`: a UDP port for the appliance's heartbeats.
    pub mgmt_port: u16,
    /// TAP interface name for the i-th net_tap port of this appliance.
    pub tap_name: &'a dyn Fn(usize) -> String,
    pub sets: &'a BTreeMap<String, Value>,
}

/// Rewrite the base config for one run. Returns the new config and its ports (with
/// their TAP interface names and vhost-user socket paths).
///
/// Every port's `args` gets its placeholders substituted; net_tap, net_af_packet and net_af_xdp ports get a run-unique
/// `iface=`; a vhost-user socket (net_vhost `iface=`, net_virtio_user `path=`) must be
/// unique per run, i.e. contain the run id after substitution (`{run_dir}/vhost0.sock`).
pub fn for_run(base: &Table, s: &RunSettings) -> Result<(Table, Vec<RackPort>)> {
    let mut t = base.clone();
    for (k, v) in s.sets {
        set_path(&mut t, k, v.clone())?;
    }
    set_path(
        &mut t,
        "eal.file_prefix",
        Value::String(s.file_prefix.to_string()),
    )?;
    set_path(
        &mut t,
        "ctl.socket",
        Value::String(s.ctl_socket.to_string()),
    )?;
    set_path(
        &mut t,
        "metrics.listen",
        Value::String("127.0.0.1:0".into()),
    )?;
    let mgmt_port = s.mgmt_port.to_string();
    let values = [
        ("{run_dir}", s.run_dir),
        ("{run_id}", s.run_id),
        ("{mgmt_port}", mgmt_port.as_str()),
    ];
    // Every string outside the ports (their args are done below, naming the port).
    for (k, v) in t.iter_mut() {
        if k != "port" {
            substitute_value(v, k, &values)?;
        }
    }
    let mut ports = ports(&t)?;
    let mut k = 0;
    if let Some(Value::Array(arr)) = t.get_mut("port") {
        for (p, rp) in arr.iter_mut().zip(ports.iter_mut()) {
            let args = substitute_all(&rp.args, &values)
                .map_err(|e| anyhow!("port `{}` args: {}", rp.name, e))?;
            // Other strings of the port (none are expected to hold placeholders).
            if let Some(pt) = p.as_table_mut() {
                for (key, v) in pt.iter_mut() {
                    if key != "args" {
                        substitute_value(v, &format!("port `{}` {}", rp.name, key), &values)?;
                    }
                }
            }
            let changed = args != rp.args;
            rp.args = args;
            if is_tap(&rp.device) || is_veth_port(&rp.device) {
                let ifname = (s.tap_name)(k);
                k += 1;
                rp.args = set_kv(&rp.args, "iface", &ifname);
                rp.tap_ifname = Some(ifname);
            }
            if let Some(key) = socket_key(&rp.device) {
                let path = get_kv(&rp.args, key).unwrap_or("").trim().to_string();
                if path.is_empty() {
                    bail!(
                        "port `{}` ({}) needs `{}=<vhost-user socket>` in args, e.g. {}={{run_dir}}/vhost0.sock",
                        rp.name,
                        rp.device,
                        key,
                        key
                    );
                }
                if !path.contains(s.run_id) {
                    bail!(
                        "port `{}` ({}): vhost-user socket `{}` is not unique per run; put it in the run directory with the placeholder, e.g. {}={{run_dir}}/vhost0.sock",
                        rp.name,
                        rp.device,
                        path,
                        key
                    );
                }
                rp.socket = Some(path);
            }
            if changed || rp.tap_ifname.is_some() {
                if let Some(pt) = p.as_table_mut() {
                    pt.insert("args".into(), Value::String(rp.args.clone()));
                }
            }
        }
    }
    Ok((t, ports))
}

pub fn get_str<'a>(t: &'a Table, path: &str) -> Option<&'a str> {
    get(t, path).and_then(Value::as_str)
}

pub fn get_int(t: &Table, path: &str) -> Option<i64> {
    get(t, path).and_then(Value::as_integer)
}

pub fn get_bool(t: &Table, path: &str) -> Option<bool> {
    get(t, path).and_then(Value::as_bool)
}

pub fn get<'a>(t: &'a Table, path: &str) -> Option<&'a Value> {
    let mut cur = t;
    let keys: Vec<&str> = path.split('.').collect();
    for k in &keys[..keys.len() - 1] {
        cur = cur.get(*k)?.as_table()?;
    }
    cur.get(keys[keys.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_taps_prefix_and_sets() {
        let base: Table = r#"
[eal]
file_prefix = "x"
[[port]]
name = "west"
device = "net_tap0"
args = "iface=tsw0,mac=02:00:00:00:00:01"
[[port]]
name = "east"
device = "net_tap1"
args = "iface=tse0"
[[port]]
name = "pci"
device = "0000:03:00.0"
"#
        .parse()
        .unwrap();
        let mut sets = BTreeMap::new();
        sets.insert("workers.burst".to_string(), Value::Integer(64));
        let f = |k: usize| format!("t000000{}", k);
        let (t, ports) = for_run(
            &base,
            &RunSettings {
                run_id: "t000000",
                run_dir: "/tmp/testbed-t000000",
                file_prefix: "t000000-fw",
                ctl_socket: "/tmp/x.sock",
                mgmt_port: 7400,
                tap_name: &f,
                sets: &sets,
            },
        )
        .unwrap();
        assert_eq!(get_str(&t, "eal.file_prefix"), Some("t000000-fw"));
        assert_eq!(get_int(&t, "workers.burst"), Some(64));
        assert_eq!(get_str(&t, "metrics.listen"), Some("127.0.0.1:0"));
        assert_eq!(ports[0].args, "iface=t0000000,mac=02:00:00:00:00:01");
        assert_eq!(ports[1].tap_ifname.as_deref(), Some("t0000001"));
        assert_eq!(ports[2].tap_ifname, None);
        let text = toml::to_string(&t).unwrap();
        assert!(text.contains("iface=t0000001"));
    }

    #[test]
    fn set_path_reaches_into_arrays_of_tables() {
        let mut t: Table = "[[service]]\nname = \"a\"\n[[service]]\nname = \"b\"\n".parse().unwrap();
        set_path(&mut t, "service.1.nat", Value::String("transparent".into())).unwrap();
        set_path(&mut t, "service.0.timeouts.connect_ms", Value::Integer(5)).unwrap();
        let svc = t["service"].as_array().unwrap();
        assert_eq!(svc[1]["nat"].as_str(), Some("transparent"));
        assert_eq!(svc[0]["timeouts"]["connect_ms"].as_integer(), Some(5));
        assert!(svc[0].get("nat").is_none());
        let e = set_path(&mut t, "service.2.nat", Value::Integer(1)).unwrap_err().to_string();
        assert!(e.contains("has 2 elements"), "{e}");
        let e = set_path(&mut t, "service.nat", Value::Integer(1)).unwrap_err().to_string();
        assert!(e.contains("is an array"), "{e}");
        let e = set_path(&mut t, "pool.0.name", Value::Integer(1)).unwrap_err().to_string();
        assert!(e.contains("not an array of tables"), "{e}");
        assert!(t.get("pool").is_none(), "nothing created");
    }

    fn settings_for<'a>(
        sets: &'a BTreeMap<String, Value>,
        f: &'a dyn Fn(usize) -> String,
    ) -> RunSettings<'a> {
        RunSettings {
            run_id: "t0a1b2c",
            run_dir: "/tmp/testbed-t0a1b2c",
            file_prefix: "t0a1b2c-fwa",
            ctl_socket: "/tmp/testbed-t0a1b2c/fwa.sock",
            mgmt_port: 47123,
            tap_name: f,
            sets,
        }
    }

    #[test]
    fn substitutes_placeholders_in_every_port() {
        let base: Table = r#"
[[port]]
name = "west"
device = "net_tap0"
args = "iface=tsw0"
[[port]]
name = "east"
device = "net_vhost0"
args = "iface={run_dir}/vhost0.sock,queues=1"
[[port]]
name = "peer"
device = "net_virtio_user0"
args = "path=/run/x-{run_id}.sock,queues=1"
"#
        .parse()
        .unwrap();
        let sets = BTreeMap::new();
        let f = |k: usize| format!("t0a1b2c{}", k);
        let (t, ports) = for_run(&base, &settings_for(&sets, &f)).unwrap();
        assert_eq!(ports[0].args, "iface=t0a1b2c0");
        assert_eq!(ports[0].socket, None);
        assert_eq!(
            ports[1].args,
            "iface=/tmp/testbed-t0a1b2c/vhost0.sock,queues=1"
        );
        assert_eq!(
            ports[1].socket.as_deref(),
            Some("/tmp/testbed-t0a1b2c/vhost0.sock")
        );
        assert_eq!(ports[1].tap_ifname, None);
        assert_eq!(ports[2].socket.as_deref(), Some("/run/x-t0a1b2c.sock"));
        let text = toml::to_string(&t).unwrap();
        assert!(
            text.contains("iface=/tmp/testbed-t0a1b2c/vhost0.sock,queues=1"),
            "{}",
            text
        );
        assert!(!text.contains('{'), "{}", text);
    }

    #[test]
    fn sockets_must_be_unique_per_run_and_placeholders_known() {
        let sets = BTreeMap::new();
        let f = |k: usize| format!("t0a1b2c{}", k);
        let cfg = |args: &str| -> Table {
            format!(
                "[[port]]\nname = \"east\"\ndevice = \"net_vhost0\"\nargs = \"{}\"\n",
                args
            )
            .parse()
            .unwrap()
        };
        let e = for_run(&cfg("iface=/run/vhost0.sock"), &settings_for(&sets, &f))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not unique per run") && e.contains("{run_dir}"),
            "{}",
            e
        );
        let e = for_run(&cfg("queues=1"), &settings_for(&sets, &f))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs `iface="), "{}", e);
        let e = for_run(&cfg("iface={rundir}/v.sock"), &settings_for(&sets, &f))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown placeholder `{rundir}`"), "{}", e);
        let e = for_run(&cfg("iface={run_dir/v.sock"), &settings_for(&sets, &f))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown placeholder") || e.contains("unterminated"),
            "{}",
            e
        );
        assert_eq!(substitute("a=1", "/d", "t1").unwrap(), "a=1");
        assert_eq!(get_kv("a=1,path=/x,b=2", "path"), Some("/x"));
        assert_eq!(socket_key("net_virtio_user0"), Some("path"));
        assert_eq!(socket_key("net_vhost1"), Some("iface"));
        assert_eq!(socket_key("net_tap0"), None);
    }

    #[test]
    fn substitutes_placeholders_in_every_string() {
        let base: Table = r#"
[node]
id = "lb1"
mgmt = "127.0.0.1:{mgmt_port}"
[keys]
rack_key = "{run_dir}/rack.key"
[[peer]]
id = "m1"
inband_address = "10.0.0.21"
[[port]]
name = "west"
device = "net_tap0"
args = "iface=tsw0"
"#
        .parse()
        .unwrap();
        let sets = BTreeMap::new();
        let f = |k: usize| format!("t0a1b2c{}", k);
        let (t, _) = for_run(&base, &settings_for(&sets, &f)).unwrap();
        assert_eq!(get_str(&t, "node.mgmt"), Some("127.0.0.1:47123"));
        assert_eq!(
            get_str(&t, "keys.rack_key"),
            Some("/tmp/testbed-t0a1b2c/rack.key")
        );
        let bad: Table = "[keys]\nrack_key = \"{rundir}/k\"\n".parse().unwrap();
        let e = for_run(&bad, &settings_for(&sets, &f))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("keys.rack_key") && e.contains("unknown placeholder `{rundir}`"),
            "{}",
            e
        );
    }

    #[test]
    fn parse_set_values() {
        assert_eq!(parse_set("a.b=false").unwrap().1, Value::Boolean(false));
        assert_eq!(parse_set("a=32").unwrap().1, Value::Integer(32));
        assert_eq!(
            parse_set("a=hello").unwrap().1,
            Value::String("hello".into())
        );
        assert!(parse_set("nokey").is_err());
    }
}
