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
    pub tap_ifname: Option<String>,
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
        });
    }
    Ok(out)
}

/// Set `value` at a dotted `path` (e.g. `workers.idle_backoff`), creating tables.
pub fn set_path(t: &mut Table, path: &str, value: Value) -> Result<()> {
    let keys: Vec<&str> = path.split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        bail!("bad key path `{}`", path);
    }
    let mut cur = t;
    for k in &keys[..keys.len() - 1] {
        let entry = cur
            .entry(k.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| anyhow!("`{}`: `{}` is not a table", path, k))?;
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
    pub file_prefix: &'a str,
    pub ctl_socket: &'a str,
    /// TAP interface name for the i-th net_tap port of this appliance.
    pub tap_name: &'a dyn Fn(usize) -> String,
    pub sets: &'a BTreeMap<String, Value>,
}

/// Rewrite the base config for one run. Returns the new config and its ports (with
/// their TAP interface names).
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
    let mut ports = ports(&t)?;
    let mut k = 0;
    if let Some(Value::Array(arr)) = t.get_mut("port") {
        for (p, rp) in arr.iter_mut().zip(ports.iter_mut()) {
            if is_tap(&rp.device) {
                let ifname = (s.tap_name)(k);
                k += 1;
                rp.args = set_kv(&rp.args, "iface", &ifname);
                rp.tap_ifname = Some(ifname);
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
                file_prefix: "t000000-fw",
                ctl_socket: "/tmp/x.sock",
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
