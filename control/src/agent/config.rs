//! `tapsplice agent` configuration: a small TOML file per server (or peer host), separate
//! from the rack file because agents run on machines without DPDK and know only where to
//! send heartbeats. Errors name file, line, column and key like `tapsplice check`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub agent: AgentConfig,
    #[serde(default)]
    pub probe: ProbeConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This machine's node id: a `[[peer]]` id in the appliances' rack files.
    pub id: String,
    /// `server`, `proxy` or `appliance` (the peer class the appliances know it as).
    #[serde(default = "default_class")]
    pub class: String,
    /// The rack key file (root-only readable), the same as the appliances' `keys.rack_key`.
    pub rack_key: PathBuf,
    /// Local UDP address heartbeats are sent from.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// Where heartbeats go: every appliance's `node.mgmt`.
    pub appliances: Vec<SocketAddr>,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Connections at which this machine counts as full (for the workload factor).
    #[serde(default)]
    pub max_connections: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// `tcp`, `command` or `none`.
    #[serde(default = "default_probe_kind")]
    pub kind: String,
    /// For `tcp`: the application's address (usually on loopback).
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// For `command`: argv, run without a shell; exit 0 = alive.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default = "default_probe_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_probe_timeout")]
    pub timeout_ms: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            kind: default_probe_kind(),
            address: None,
            command: Vec::new(),
            interval_ms: default_probe_interval(),
            timeout_ms: default_probe_timeout(),
        }
    }
}

fn default_class() -> String {
    "server".into()
}
fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}
fn default_interval() -> u64 {
    10
}
fn default_probe_kind() -> String {
    "none".into()
}
fn default_probe_interval() -> u64 {
    100
}
fn default_probe_timeout() -> u64 {
    50
}

/// Reads and validates an agent file; every problem as `file:line:col: key: message`.
pub fn load(path: &Path) -> Result<AgentFile, Vec<String>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: cannot read: {e}")])?;
    parse(&text, &name)
}

pub fn parse(text: &str, name: &str) -> Result<AgentFile, Vec<String>> {
    let at = |offset: usize| -> (usize, usize) {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    };
    let file: AgentFile = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map(|s| at(s.start)).unwrap_or((1, 1));
        vec![format!("{name}:{line}:{col}: {}", e.message().trim())]
    })?;
    let doc: toml_edit::ImDocument<&str> = toml_edit::ImDocument::parse(text).map_err(|e| vec![format!("{name}: {e}")])?;
    let locate = |table: &str, key: &str| -> (usize, usize) {
        doc.get(table)
            .and_then(|t| t.get(key).or(Some(t)))
            .and_then(|i| i.span())
            .map(|s| at(s.start))
            .unwrap_or((1, 1))
    };
    let mut errs = Vec::new();
    let mut err = |table: &str, key: &str, msg: String| {
        let (l, c) = locate(table, key);
        errs.push(format!("{name}:{l}:{c}: {table}.{key}: {msg}"));
    };
    let a = &file.agent;
    if a.id.is_empty() || a.id.len() > 32 || !a.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        err("agent", "id", "must be 1..=32 letters, digits, '-', '_' or '.'".into());
    }
    if !["server", "proxy", "appliance"].contains(&a.class.as_str()) {
        err("agent", "class", format!("must be \"server\", \"proxy\" or \"appliance\" (got {:?})", a.class));
    }
    if !a.rack_key.is_absolute() {
        err("agent", "rack_key", "must be an absolute path".into());
    }
    if a.appliances.is_empty() {
        err("agent", "appliances", "name at least one appliance address (IP:port)".into());
    }
    if !(5..=60_000).contains(&a.interval_ms) {
        err("agent", "interval_ms", format!("must be between 5 and 60000 (got {})", a.interval_ms));
    }
    if a.max_connections == Some(0) {
        err("agent", "max_connections", "must be at least 1 when given".into());
    }
    let p = &file.probe;
    match p.kind.as_str() {
        "none" => {}
        "tcp" if p.address.is_none() => err("probe", "address", "required with kind = \"tcp\"".into()),
        "tcp" => {}
        "command" if p.command.is_empty() => err("probe", "command", "required with kind = \"command\"".into()),
        "command" => {}
        other => err("probe", "kind", format!("must be \"tcp\", \"command\" or \"none\" (got {other:?})")),
    }
    if !(1..=60_000).contains(&p.timeout_ms) || p.timeout_ms > p.interval_ms.max(1) {
        err("probe", "timeout_ms", format!("must be 1..=60000 and at most probe.interval_ms (got {})", p.timeout_ms));
    }
    if errs.is_empty() {
        Ok(file)
    } else {
        Err(errs)
    }
}

impl ProbeConfig {
    pub fn probe(&self) -> super::probe::Probe {
        use super::probe::Probe;
        match (self.kind.as_str(), self.address) {
            ("tcp", Some(address)) => Probe::Tcp { address },
            ("command", _) => Probe::Command { argv: self.command.clone() },
            _ => Probe::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../configs/agent.toml");

    #[test]
    fn the_example_is_valid() {
        let f = parse(EXAMPLE, "agent.toml").unwrap();
        assert_eq!(f.agent.class, "server");
        assert!(matches!(f.probe.probe(), super::super::probe::Probe::Tcp { .. }));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_located() {
        let e = parse("[agent]\nid = \"a\"\nrack_key = \"/k\"\nappliances = [\"127.0.0.1:7400\"]\nspeed = 3\n", "f.toml").unwrap_err();
        assert!(e[0].starts_with("f.toml:5:1:") && e[0].contains("speed"), "{e:?}");
        let e = parse("[agent]\nid = \"a\"\nrack_key = \"k\"\nappliances = []\ninterval_ms = 1\n", "f.toml").unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().any(|l| l.starts_with("f.toml:3:12: agent.rack_key:")), "{e:?}");
        assert!(e.iter().any(|l| l.starts_with("f.toml:5:15: agent.interval_ms:")), "{e:?}");
        let e = parse("[agent]\nid = \"a\"\nrack_key = \"/k\"\nappliances = [\"127.0.0.1:1\"]\n[probe]\nkind = \"tcp\"\n", "f.toml").unwrap_err();
        assert!(e[0].contains("probe.address") && e[0].contains("required"), "{e:?}");
    }
}
