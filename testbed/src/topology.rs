//! Topology files: what a run builds and drives. Every key is documented in docs/testbed.md.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Hard bound for the whole run in seconds (default: derived from the workloads).
    pub timeout_s: Option<f64>,
    #[serde(default, rename = "namespace")]
    pub namespaces: Vec<Namespace>,
    #[serde(default, rename = "bridge")]
    pub bridges: Vec<Bridge>,
    #[serde(default, rename = "link")]
    pub links: Vec<Link>,
    #[serde(default, rename = "appliance")]
    pub appliances: Vec<Appliance>,
    #[serde(default, rename = "check")]
    pub checks: Vec<Check>,
    #[serde(default, rename = "workload")]
    pub workloads: Vec<Workload>,
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Directory of the topology file (set by `load`), used to resolve relative paths.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    /// `ip route` arguments, added once the interfaces are up, e.g. "default via 10.0.0.254".
    #[serde(default)]
    pub routes: Vec<String>,
    /// net.ipv4.ip_forward in this namespace.
    #[serde(default)]
    pub forwarding: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
}

/// One end of a link or the placement of an appliance port: a namespace or a bridge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub ns: Option<String>,
    pub bridge: Option<String>,
    pub ifname: Option<String>,
    pub address: Option<String>,
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub name: Option<String>,
    pub a: Endpoint,
    pub b: Endpoint,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplianceKind {
    Tapsplice,
    Testpmd,
}

impl ApplianceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplianceKind::Tapsplice => "tapsplice",
            ApplianceKind::Testpmd => "testpmd",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    pub name: String,
    #[serde(default = "default_kind")]
    pub kind: ApplianceKind,
    /// Base rack config, relative to the topology file or to any of its parent directories
    /// (so `configs/forward.toml` finds the repository's configs).
    pub config: String,
    /// Dotted-key overrides applied to the rack config, e.g. { "workers.burst" = 64 }.
    #[serde(default)]
    pub set: BTreeMap<String, toml::Value>,
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout_s: f64,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_s: f64,
    #[serde(default, rename = "port")]
    pub ports: Vec<AppliancePort>,
}

fn default_kind() -> ApplianceKind {
    ApplianceKind::Tapsplice
}
fn default_ready_timeout() -> f64 {
    30.0
}
fn default_stop_timeout() -> f64 {
    15.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliancePort {
    /// `name` of a `[[port]]` in the rack config.
    pub port: String,
    pub ns: Option<String>,
    pub bridge: Option<String>,
    /// Interface name of the TAP inside the namespace (default: the port name).
    pub ifname: Option<String>,
    /// Address of the kernel side of the TAP (the peer's address, not the appliance's).
    pub address: Option<String>,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Ping,
    Arp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Success,
    Fail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub kind: CheckKind,
    pub ns: String,
    pub address: String,
    #[serde(default = "default_count")]
    pub count: u32,
    #[serde(default = "default_check_timeout")]
    pub timeout_s: f64,
    #[serde(default = "default_expect")]
    pub expect: Expect,
    /// Only run this check when every appliance is of this kind (e.g. the appliance's own
    /// ICMP/ARP answers exist with tapsplice, not with testpmd io-forward).
    pub needs: Option<ApplianceKind>,
}

fn default_count() -> u32 {
    3
}
fn default_check_timeout() -> f64 {
    5.0
}
fn default_expect() -> Expect {
    Expect::Success
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Echo,
    Interactive,
    Bulk,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Echo => "echo",
            WorkloadKind::Interactive => "interactive",
            WorkloadKind::Bulk => "bulk",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: Option<String>,
    pub kind: WorkloadKind,
    /// Client namespace(s); connections are spread over them round-robin.
    pub clients: Vec<String>,
    pub server: String,
    /// Address the clients connect to.
    pub address: String,
    /// Address the server listens on (default: `address`; "0.0.0.0" for a VIP setup).
    pub listen: Option<String>,
    pub port: u16,
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// Requests per connection; 0 = until `duration_s` (default: per kind).
    pub requests: Option<u64>,
    /// Reply bytes per request (interactive, bulk; default: per kind).
    pub bytes: Option<u64>,
    #[serde(default = "default_request_bytes")]
    pub request_bytes: u32,
    /// Stop starting new requests after this many seconds.
    pub duration_s: Option<f64>,
    /// Hard bound: requests still running then are errors.
    #[serde(default = "default_workload_timeout")]
    pub timeout_s: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Run at the same time as the previous workload instead of after it.
    #[serde(default)]
    pub with_previous: bool,
    /// Errors do not fail the run (fault experiments); mismatched bytes always do.
    #[serde(default)]
    pub allow_errors: bool,
}

fn default_connections() -> u32 {
    1
}
fn default_request_bytes() -> u32 {
    150
}
fn default_workload_timeout() -> f64 {
    60.0
}
fn default_seed() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Kill,
    LinkDown,
    LinkUp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    /// Seconds after the first workload starts.
    pub at_s: f64,
    /// kill: the appliance whose process is signalled.
    pub appliance: Option<String>,
    /// kill: signal name (default KILL).
    pub signal: Option<String>,
    /// link_down / link_up: a named [[link]] (both ends), or ns + ifname.
    pub link: Option<String>,
    pub ns: Option<String>,
    pub ifname: Option<String>,
    /// link_down: bring the link back up after this many seconds.
    pub duration_s: Option<f64>,
}

/// Load and validate a topology file. Errors are one line naming the file (and the line and
/// column for syntax and type errors).
pub fn load(path: &Path) -> Result<Topology> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("topology {}: cannot read: {}", path.display(), e))?;
    let mut t = parse(&text).map_err(|e| anyhow!("topology {}{}", path.display(), e))?;
    t.base_dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    t.path = path.to_path_buf();
    t.validate()
        .map_err(|e| anyhow!("topology {}: {}", path.display(), e))?;
    Ok(t)
}

/// Parse without validation; the error text starts with ":line:col: " when known.
pub fn parse(text: &str) -> std::result::Result<Topology, String> {
    toml::from_str::<Topology>(text).map_err(|e| {
        let msg = e.message().replace('\n', " ");
        match e.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!(":{}:{}: {}", line, col, msg)
            }
            None => format!(": {}", msg),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    (line, col)
}

pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 24
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

pub fn check_cidr(s: &str) -> Result<()> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("address `{}` needs a prefix length, e.g. 10.0.0.1/24", s))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| anyhow!("address `{}` is not an IP address", s))?;
    let len: u8 = len
        .parse()
        .map_err(|_| anyhow!("address `{}` has a bad prefix length", s))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        bail!("address `{}` has a prefix length above {}", s, max);
    }
    Ok(())
}

fn check_mac(s: &str) -> Result<()> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || u8::from_str_radix(p, 16).is_err())
    {
        bail!("mac `{}` is not of the form 02:00:00:00:00:01", s);
    }
    Ok(())
}

impl Topology {
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "topology".into())
        })
    }

    /// Resolve a path named in the topology: relative to the topology file's directory or
    /// any of its ancestors (the repository root), or absolute.
    pub fn resolve(&self, p: &str) -> Result<PathBuf> {
        let pb = PathBuf::from(p);
        if pb.is_absolute() {
            if pb.exists() {
                return Ok(pb);
            }
            bail!("file {} does not exist", p);
        }
        let start = std::fs::canonicalize(&self.base_dir).unwrap_or_else(|_| self.base_dir.clone());
        for dir in start.ancestors() {
            let c = dir.join(&pb);
            if c.exists() {
                return Ok(c);
            }
        }
        bail!(
            "file {} not found next to the topology file or in any parent directory",
            p
        )
    }

    pub fn workload_name(&self, i: usize) -> String {
        let w = &self.workloads[i];
        w.name
            .clone()
            .unwrap_or_else(|| format!("{}{}", w.kind.as_str(), i))
    }

    pub fn validate(&self) -> Result<()> {
        let mut ns_names = HashSet::new();
        for n in &self.namespaces {
            if !valid_name(&n.name) {
                bail!(
                    "namespace name `{}`: use 1-24 letters, digits, - or _",
                    n.name
                );
            }
            if n.name == crate::runid::FABRIC {
                bail!("namespace name `fabric` is reserved for the run's bridge namespace");
            }
            if !ns_names.insert(n.name.as_str()) {
                bail!("namespace `{}` is declared twice", n.name);
            }
            for r in &n.routes {
                if r.split_whitespace().next().is_none() {
                    bail!("namespace `{}`: empty route", n.name);
                }
            }
        }
        let mut br_names = HashSet::new();
        for b in &self.bridges {
            if !valid_ifname(&b.name) {
                bail!(
                    "bridge name `{}`: an interface name of 1-15 letters, digits, - _ .",
                    b.name
                );
            }
            if !br_names.insert(b.name.as_str()) {
                bail!("bridge `{}` is declared twice", b.name);
            }
        }
        // (namespace, ifname) pairs must be unique.
        let mut ifs: HashSet<(String, String)> = HashSet::new();
        let mut claim = |ns: &str, ifname: &str, what: &str| -> Result<()> {
            if !ifs.insert((ns.to_string(), ifname.to_string())) {
                bail!(
                    "{}: interface `{}` in namespace `{}` is used twice",
                    what,
                    ifname,
                    ns
                );
            }
            Ok(())
        };
        let check_ep = |ep: &Endpoint, what: &str| -> Result<()> {
            match (&ep.ns, &ep.bridge) {
                (Some(ns), None) => {
                    if !ns_names.contains(ns.as_str()) {
                        bail!(
                            "{}: namespace `{}` is not declared in a [[namespace]]",
                            what,
                            ns
                        );
                    }
                    match &ep.ifname {
                        Some(i) if valid_ifname(i) => {}
                        Some(i) => bail!(
                            "{}: ifname `{}` must be 1-15 letters, digits, - _ .",
                            what,
                            i
                        ),
                        None => bail!("{}: an end in a namespace needs `ifname`", what),
                    }
                }
                (None, Some(br)) => {
                    if !br_names.contains(br.as_str()) {
                        bail!("{}: bridge `{}` is not declared in a [[bridge]]", what, br);
                    }
                    if ep.address.is_some() {
                        bail!("{}: an end on a bridge has no address", what);
                    }
                }
                _ => bail!("{}: give exactly one of `ns` or `bridge`", what),
            }
            if let Some(a) = &ep.address {
                check_cidr(a).map_err(|e| anyhow!("{}: {}", what, e))?;
            }
            if let Some(m) = &ep.mac {
                check_mac(m).map_err(|e| anyhow!("{}: {}", what, e))?;
            }
            Ok(())
        };
        let mut link_names = HashSet::new();
        for (i, l) in self.links.iter().enumerate() {
            let what = format!(
                "link {}",
                l.name.clone().unwrap_or_else(|| format!("#{}", i + 1))
            );
            if let Some(n) = &l.name {
                if !link_names.insert(n.as_str()) {
                    bail!("link `{}` is declared twice", n);
                }
            }
            check_ep(&l.a, &format!("{} end a", what))?;
            check_ep(&l.b, &format!("{} end b", what))?;
            for ep in [&l.a, &l.b] {
                if let (Some(ns), Some(ifn)) = (&ep.ns, &ep.ifname) {
                    claim(ns, ifn, &what)?;
                }
            }
            if let Some(m) = l.mtu {
                if !(68..=65535).contains(&m) {
                    bail!("{}: mtu {} out of range 68..65535", what, m);
                }
            }
        }
        let mut app_names = HashSet::new();
        for a in &self.appliances {
            if !valid_name(&a.name) || a.name.len() > 16 {
                bail!(
                    "appliance name `{}`: use 1-16 letters, digits, - or _",
                    a.name
                );
            }
            if !app_names.insert(a.name.as_str()) {
                bail!("appliance `{}` is declared twice", a.name);
            }
            self.resolve(&a.config)
                .map_err(|e| anyhow!("appliance `{}`: config: {}", a.name, e))?;
            if !(a.ready_timeout_s > 0.0 && a.ready_timeout_s <= 600.0) {
                bail!(
                    "appliance `{}`: ready_timeout_s must be in (0, 600]",
                    a.name
                );
            }
            if !(a.stop_timeout_s > 0.0 && a.stop_timeout_s <= 600.0) {
                bail!("appliance `{}`: stop_timeout_s must be in (0, 600]", a.name);
            }
            let mut ports = HashSet::new();
            for p in &a.ports {
                let what = format!("appliance `{}` port `{}`", a.name, p.port);
                if !ports.insert(p.port.as_str()) {
                    bail!("{}: placed twice", what);
                }
                let ep = Endpoint {
                    ns: p.ns.clone(),
                    bridge: p.bridge.clone(),
                    ifname: Some(p.ifname.clone().unwrap_or_else(|| p.port.clone())),
                    address: p.address.clone(),
                    mac: p.mac.clone(),
                };
                check_ep(&ep, &what)?;
                if let (Some(ns), Some(ifn)) = (&ep.ns, &ep.ifname) {
                    claim(ns, ifn, &what)?;
                }
            }
        }
        for (i, c) in self.checks.iter().enumerate() {
            let what = format!("check #{}", i + 1);
            if !ns_names.contains(c.ns.as_str()) {
                bail!("{}: namespace `{}` is not declared", what, c.ns);
            }
            let ip: IpAddr = c
                .address
                .parse()
                .map_err(|_| anyhow!("{}: address `{}` is not an IP address", what, c.address))?;
            if !ip.is_ipv4() {
                bail!(
                    "{}: only IPv4 addresses are supported by ping/arp checks",
                    what
                );
            }
            if c.count == 0 || c.count > 1000 {
                bail!("{}: count must be 1..1000", what);
            }
            if !(c.timeout_s > 0.0 && c.timeout_s <= 300.0) {
                bail!("{}: timeout_s must be in (0, 300]", what);
            }
        }
        let mut wl_names = HashSet::new();
        for (i, w) in self.workloads.iter().enumerate() {
            let name = self.workload_name(i);
            let what = format!("workload `{}`", name);
            if !wl_names.insert(name.clone()) {
                bail!("{} is declared twice", what);
            }
            if w.clients.is_empty() {
                bail!("{}: `clients` needs at least one namespace", what);
            }
            for c in w.clients.iter().chain(std::iter::once(&w.server)) {
                if !ns_names.contains(c.as_str()) {
                    bail!("{}: namespace `{}` is not declared", what, c);
                }
            }
            w.address.parse::<IpAddr>().map_err(|_| {
                anyhow!(
                    "{}: address `{}` is not an IP address (no prefix length here)",
                    what,
                    w.address
                )
            })?;
            if let Some(l) = &w.listen {
                l.parse::<IpAddr>()
                    .map_err(|_| anyhow!("{}: listen `{}` is not an IP address", what, l))?;
            }
            if w.port == 0 {
                bail!("{}: port must not be 0", what);
            }
            if w.connections == 0 || w.connections > 1024 {
                bail!("{}: connections must be 1..1024", what);
            }
            if !(32..=65536).contains(&w.request_bytes) {
                bail!("{}: request_bytes must be 32..65536", what);
            }
            if w.requests == Some(0) && w.duration_s.is_none() {
                bail!("{}: requests = 0 (unlimited) needs duration_s", what);
            }
            if let Some(d) = w.duration_s {
                if !(d > 0.0 && d < w.timeout_s) {
                    bail!(
                        "{}: duration_s must be > 0 and below timeout_s ({})",
                        what,
                        w.timeout_s
                    );
                }
            }
            if !(w.timeout_s > 0.0 && w.timeout_s <= 3600.0) {
                bail!("{}: timeout_s must be in (0, 3600]", what);
            }
            if w.kind == WorkloadKind::Echo && w.bytes.is_some() {
                bail!(
                    "{}: echo replies echo the request; set request_bytes, not bytes",
                    what
                );
            }
            if let Some(b) = w.bytes {
                if b == 0 || b > (1u64 << 40) {
                    bail!("{}: bytes must be 1..2^40", what);
                }
            }
            if i == 0 && w.with_previous {
                bail!("{}: the first workload cannot run with_previous", what);
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let what = format!("fault #{} ({:?})", i + 1, f.kind);
            if !(f.at_s >= 0.0 && f.at_s <= 3600.0) {
                bail!("{}: at_s must be in [0, 3600]", what);
            }
            match f.kind {
                FaultKind::Kill => {
                    let a = f
                        .appliance
                        .as_deref()
                        .ok_or_else(|| anyhow!("{}: needs `appliance`", what))?;
                    if !app_names.contains(a) {
                        bail!("{}: appliance `{}` is not declared", what, a);
                    }
                    if let Some(s) = &f.signal {
                        crate::fault::parse_signal(s).map_err(|e| anyhow!("{}: {}", what, e))?;
                    }
                }
                FaultKind::LinkDown | FaultKind::LinkUp => match (&f.link, &f.ns, &f.ifname) {
                    (Some(l), None, None) => {
                        if !link_names.contains(l.as_str()) {
                            bail!("{}: link `{}` is not a named [[link]]", what, l);
                        }
                    }
                    (None, Some(ns), Some(_)) => {
                        if !ns_names.contains(ns.as_str()) {
                            bail!("{}: namespace `{}` is not declared", what, ns);
                        }
                    }
                    _ => bail!("{}: give `link`, or `ns` and `ifname`", what),
                },
            }
            if let Some(d) = f.duration_s {
                if f.kind != FaultKind::LinkDown || !(d > 0.0 && d <= 3600.0) {
                    bail!(
                        "{}: duration_s applies to link_down only and must be in (0, 3600]",
                        what
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
[[namespace]]
name = "a"
[[namespace]]
name = "b"
[[link]]
name = "ab"
a = { ns = "a", ifname = "eth0", address = "10.0.0.1/24" }
b = { ns = "b", ifname = "eth0", address = "10.0.0.2/24" }
[[workload]]
kind = "echo"
clients = ["a"]
server = "b"
address = "10.0.0.2"
port = 7000
connections = 4
[[fault]]
kind = "link_down"
at_s = 1.0
link = "ab"
duration_s = 0.5
"#;

    fn topo(text: &str) -> Result<Topology> {
        let mut t = parse(text).map_err(|e| anyhow!("{}", e))?;
        t.base_dir = PathBuf::from(".");
        t.validate()?;
        Ok(t)
    }

    #[test]
    fn good_topology_validates() {
        let t = topo(GOOD).unwrap();
        assert_eq!(t.workload_name(0), "echo0");
        assert_eq!(t.links.len(), 1);
    }

    #[test]
    fn typo_gives_line_and_column() {
        let e = parse("[[namespace]]\nname = \"a\"\nrouts = []\n")
            .err()
            .unwrap();
        assert!(e.starts_with(":3:1:"), "{}", e);
        assert!(e.contains("routs"), "{}", e);
        assert!(!e.contains('\n'));
    }

    #[test]
    fn bad_references_are_named() {
        let e = topo(&GOOD.replace("server = \"b\"", "server = \"c\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("namespace `c`"), "{}", e);
        let e = topo(&GOOD.replace("10.0.0.1/24", "10.0.0.1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix length"), "{}", e);
        let e = topo(&GOOD.replace(
            "ifname = \"eth0\", address = \"10.0.0.2/24\"",
            "ifname = \"averyveryverylongname\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("1-15"), "{}", e);
        let e = topo(&GOOD.replace("link = \"ab\"", "link = \"zz\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("zz"), "{}", e);
    }
}
