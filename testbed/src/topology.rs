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
    /// `tapsplice agent` processes run inside namespaces (heartbeats to an appliance).
    #[serde(default, rename = "agent")]
    pub agents: Vec<Agent>,
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
    /// Addresses (CIDR) added to the namespace's loopback, e.g. a VIP held by a balance
    /// member: `["10.0.0.100/32"]`.
    #[serde(default)]
    pub loopback: Vec<String>,
    /// Sysctls of this namespace (`net.*` keys, dotted), set before any interface is up,
    /// e.g. `{ "net.ipv4.conf.all.arp_ignore" = 1 }`.
    #[serde(default)]
    pub sysctl: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    /// An nftables ruleset loaded into the run's fabric namespace (where the bridges are)
    /// once the links are up, e.g. a `table bridge` that rewrites destination MACs.
    pub nft: Option<String>,
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
    /// `false`: TSO, GSO and checksum offload off on both ends, so that a kernel sending
    /// on this link emits MTU-sized frames with their checksums, as onto a cable (veths
    /// otherwise carry 64 KB super-segments that a DPDK port could not take).
    #[serde(default = "default_true")]
    pub offloads: bool,
}

fn default_true() -> bool {
    true
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
    /// Scheduling niceness of the appliance process and its threads (-20..=19, default 0):
    /// a real appliance has its cores to itself, here it shares them with the workloads.
    #[serde(default)]
    pub nice: i32,
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

impl Workload {
    /// The server namespaces (logical names): `servers`, or the single `server`.
    pub fn server_names(&self) -> Vec<String> {
        match &self.server {
            Some(s) => vec![s.clone()],
            None => self.servers.clone(),
        }
    }
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
    /// The server namespace (or `servers`).
    pub server: Option<String>,
    /// Several server namespaces listening on the same address (balance members holding a
    /// VIP); every TCP connection is attributed to the one that accepted it.
    #[serde(default)]
    pub servers: Vec<String>,
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
    /// Requests per TCP connection: a client thread closes its connection after this many
    /// and opens a new one (default: every request on one connection).
    pub requests_per_connection: Option<u64>,
    /// Expected share of TCP connections per server, as weights (every server named):
    /// e.g. `{ m1 = 100, m2 = 100, m3 = 200 }` expects 25 % / 25 % / 50 %.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Allowed deviation of each server's share from its expected share, relative to the
    /// expected share (0.1 = ±10 % of it: 25 % may be 22.5 %..27.5 %).
    pub share_tolerance: Option<f64>,
    /// With `allow_errors`: connections may break only on these servers, and each of them
    /// must have at least one broken connection (a fault that moves only their flows).
    pub expect_broken: Option<Vec<String>>,
    /// At least this many client connections must have been open at the same moment.
    pub min_concurrent: Option<u32>,
    /// The servers wait this long before each reply (interactive, bulk): the connection
    /// is silent meanwhile, as behind a slow backend.
    #[serde(default)]
    pub reply_delay_ms: u64,
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
    /// Signal (default KILL) a `tapsplice agent` of an [[agent]]: the member it heartbeats
    /// for goes silent.
    KillAgent,
    /// Start an [[agent]] again (after `kill_agent`).
    StartAgent,
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
    /// kill_agent / start_agent: the [[agent]]'s id.
    pub agent: Option<String>,
    /// `at_s` counts from the start of this workload instead of the first one.
    pub workload: Option<String>,
}

/// A `tapsplice agent` run inside a namespace, heartbeating to an appliance's in-band
/// address; the testbed writes its config (rack key of the run, the appliance's
/// heartbeat port) and waits until the appliance reports it up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// The node id: a `[[peer]]` id of the appliance's rack config.
    pub id: String,
    pub ns: String,
    /// The appliance it heartbeats to (its `node.mgmt` port is used).
    pub appliance: String,
    /// The appliance's address as seen from `ns` (in-band: its port address there).
    pub address: String,
    #[serde(default = "default_agent_class")]
    pub class: String,
    #[serde(default = "default_agent_interval")]
    pub interval_ms: u32,
    /// Seconds to wait until the appliance reports the agent's peer up (tapsplice only).
    #[serde(default = "default_agent_ready")]
    pub ready_timeout_s: f64,
    /// Run the agent with this 1-minute load average in its `/proc/loadavg` (a private
    /// mount namespace): the namespaces of a run share one machine's load, while the
    /// members they simulate are separate machines whose workload factor W = 1 − load/CPUs
    /// scales their weight. Default: the host's real load.
    pub loadavg: Option<f64>,
    /// Scheduling niceness of the agent (-20..=19, default 0): the testbed's own threads
    /// share the CPUs with it, while a real member's agent has its machine to itself.
    #[serde(default)]
    pub nice: i32,
}

fn default_agent_class() -> String {
    "server".into()
}
fn default_agent_interval() -> u32 {
    10
}
fn default_agent_ready() -> f64 {
    15.0
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

/// A sysctl value as written to /proc/sys: an integer or a string.
pub fn sysctl_value(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::String(s) if !s.contains('\n') => Some(s.clone()),
        _ => None,
    }
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
            for a in &n.loopback {
                check_cidr(a).map_err(|e| anyhow!("namespace `{}`: loopback: {}", n.name, e))?;
            }
            for (k, v) in &n.sysctl {
                if !k.starts_with("net.")
                    || k.split('.').any(|p| p.is_empty())
                    || !k
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
                {
                    bail!(
                        "namespace `{}`: sysctl `{}`: only per-namespace `net.*` keys (dotted) are supported",
                        n.name,
                        k
                    );
                }
                if sysctl_value(v).is_none() {
                    bail!(
                        "namespace `{}`: sysctl `{}`: the value must be an integer or a string",
                        n.name,
                        k
                    );
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
            if b.nft.as_deref().is_some_and(|r| r.trim().is_empty()) {
                bail!("bridge `{}`: nft is empty", b.name);
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
            if !(-20..=19).contains(&a.nice) {
                bail!("appliance `{}`: nice must be in -20..=19", a.name);
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
            let servers = w.server_names();
            match (&w.server, w.servers.is_empty()) {
                (Some(_), false) => bail!("{}: give `server` or `servers`, not both", what),
                (None, true) => bail!("{}: needs `server` (or `servers`)", what),
                _ => {}
            }
            let mut seen = HashSet::new();
            for s in &servers {
                if !seen.insert(s.as_str()) {
                    bail!("{}: server `{}` is listed twice", what, s);
                }
            }
            for c in w.clients.iter().chain(servers.iter()) {
                if !ns_names.contains(c.as_str()) {
                    bail!("{}: namespace `{}` is not declared", what, c);
                }
            }
            if w.requests_per_connection == Some(0) {
                bail!("{}: requests_per_connection must be at least 1", what);
            }
            if !w.weights.is_empty() {
                for k in w.weights.keys() {
                    if !servers.contains(k) {
                        bail!("{}: weights: `{}` is not one of its servers", what, k);
                    }
                }
                if let Some(s) = servers.iter().find(|s| !w.weights.contains_key(*s)) {
                    bail!(
                        "{}: weights: server `{}` has no weight (name every server)",
                        what,
                        s
                    );
                }
                if w.weights.values().all(|v| *v == 0) {
                    bail!("{}: weights: at least one must be above 0", what);
                }
            }
            if let Some(t) = w.share_tolerance {
                if w.weights.is_empty() {
                    bail!("{}: share_tolerance needs weights", what);
                }
                if !(t > 0.0 && t <= 1.0) {
                    bail!(
                        "{}: share_tolerance must be in (0, 1] (relative to the expected share)",
                        what
                    );
                }
            }
            if let Some(b) = &w.expect_broken {
                if !w.allow_errors {
                    bail!("{}: expect_broken needs allow_errors = true", what);
                }
                for k in b {
                    if !servers.contains(k) {
                        bail!("{}: expect_broken: `{}` is not one of its servers", what, k);
                    }
                }
            }
            if let Some(m) = w.min_concurrent {
                if m == 0 || m > w.connections {
                    bail!(
                        "{}: min_concurrent must be 1..=connections ({})",
                        what,
                        w.connections
                    );
                }
            }
            if w.reply_delay_ms > 0 && w.kind == WorkloadKind::Echo {
                bail!("{}: reply_delay_ms is for interactive and bulk workloads (echo replies at once)", what);
            }
            if w.reply_delay_ms as f64 >= w.timeout_s * 1000.0 {
                bail!("{}: reply_delay_ms ({}) must be shorter than timeout_s ({})", what, w.reply_delay_ms, w.timeout_s);
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
        let mut agent_ids = HashSet::new();
        for a in &self.agents {
            let what = format!("agent `{}`", a.id);
            if a.id.is_empty()
                || a.id.len() > 32
                || !a
                    .id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
            {
                bail!("{}: id must be 1-32 letters, digits, - _ .", what);
            }
            if !agent_ids.insert(a.id.as_str()) {
                bail!("{} is declared twice", what);
            }
            if !ns_names.contains(a.ns.as_str()) {
                bail!("{}: namespace `{}` is not declared", what, a.ns);
            }
            if !app_names.contains(a.appliance.as_str()) {
                bail!("{}: appliance `{}` is not declared", what, a.appliance);
            }
            a.address
                .parse::<IpAddr>()
                .map_err(|_| anyhow!("{}: address `{}` is not an IP address", what, a.address))?;
            if !["server", "proxy", "appliance"].contains(&a.class.as_str()) {
                bail!("{}: class must be server, proxy or appliance", what);
            }
            if !(5..=60_000).contains(&a.interval_ms) {
                bail!("{}: interval_ms must be 5..=60000", what);
            }
            if !(a.ready_timeout_s > 0.0 && a.ready_timeout_s <= 600.0) {
                bail!("{}: ready_timeout_s must be in (0, 600]", what);
            }
            if !(-20..=19).contains(&a.nice) {
                bail!("{}: nice must be in -20..=19", what);
            }
            if let Some(l) = a.loadavg {
                if !(0.0..=1000.0).contains(&l) {
                    bail!("{}: loadavg must be in [0, 1000]", what);
                }
            }
        }
        for (i, f) in self.faults.iter().enumerate() {
            let what = format!("fault #{} ({:?})", i + 1, f.kind);
            if !(f.at_s >= 0.0 && f.at_s <= 3600.0) {
                bail!("{}: at_s must be in [0, 3600]", what);
            }
            if let Some(w) = &f.workload {
                if !wl_names.contains(w) {
                    bail!("{}: workload `{}` is not declared", what, w);
                }
            }
            if f.agent.is_some() && !matches!(f.kind, FaultKind::KillAgent | FaultKind::StartAgent)
            {
                bail!(
                    "{}: `agent` applies to kill_agent and start_agent only",
                    what
                );
            }
            match f.kind {
                FaultKind::KillAgent | FaultKind::StartAgent => {
                    let a = f
                        .agent
                        .as_deref()
                        .ok_or_else(|| anyhow!("{}: needs `agent` (an [[agent]] id)", what))?;
                    if !agent_ids.contains(a) {
                        bail!("{}: agent `{}` is not declared", what, a);
                    }
                    if f.kind == FaultKind::StartAgent && f.signal.is_some() {
                        bail!("{}: start_agent takes no signal", what);
                    }
                    if let Some(s) = &f.signal {
                        crate::fault::parse_signal(s).map_err(|e| anyhow!("{}: {}", what, e))?;
                    }
                    if f.appliance.is_some()
                        || f.link.is_some()
                        || f.ns.is_some()
                        || f.ifname.is_some()
                    {
                        bail!("{}: give only `agent`", what);
                    }
                }
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
    fn link_offloads_are_on_unless_turned_off() {
        let t = topo(GOOD).unwrap();
        assert!(t.links[0].offloads);
        let t = topo(&GOOD.replace("name = \"ab\"\n", "name = \"ab\"\noffloads = false\n")).unwrap();
        assert!(!t.links[0].offloads);
    }

    #[test]
    fn good_topology_validates() {
        let t = topo(GOOD).unwrap();
        assert_eq!(t.workload_name(0), "echo0");
        assert_eq!(t.links.len(), 1);
    }

    const BALANCE: &str = r#"
[[namespace]]
name = "c1"
[[namespace]]
name = "m1"
loopback = ["10.0.0.100/32"]
sysctl = { "net.ipv4.conf.all.arp_ignore" = 1 }
[[namespace]]
name = "m2"
loopback = ["10.0.0.100/32"]
[[workload]]
name = "spread"
kind = "interactive"
clients = ["c1"]
servers = ["m1", "m2"]
address = "10.0.0.100"
port = 80
connections = 8
requests_per_connection = 1
weights = { m1 = 1, m2 = 3 }
share_tolerance = 0.1
min_concurrent = 4
[[workload]]
name = "failover"
kind = "echo"
clients = ["c1"]
servers = ["m1", "m2"]
address = "10.0.0.100"
port = 81
connections = 8
duration_s = 2
allow_errors = true
expect_broken = ["m2"]
"#;

    #[test]
    fn balance_keys_validate() {
        let t = topo(BALANCE).unwrap();
        assert_eq!(t.workloads[0].server_names(), vec!["m1", "m2"]);
        assert_eq!(t.namespaces[1].loopback, vec!["10.0.0.100/32"]);
        let e = |from: &str, to: &str| {
            topo(&BALANCE.replacen(from, to, 1))
                .unwrap_err()
                .to_string()
        };
        assert!(e("servers = [\"m1\", \"m2\"]", "servers = [\"m1\", \"m1\"]").contains("twice"));
        assert!(e(
            "servers = [\"m1\", \"m2\"]",
            "server = \"m1\"\nservers = [\"m2\"]"
        )
        .contains("not both"));
        assert!(e("weights = { m1 = 1, m2 = 3 }", "weights = { m1 = 1 }").contains("m2"));
        assert!(e(
            "weights = { m1 = 1, m2 = 3 }",
            "weights = { m1 = 1, m2 = 3, m3 = 1 }"
        )
        .contains("m3"));
        assert!(e("share_tolerance = 0.1", "share_tolerance = 0").contains("share_tolerance"));
        assert!(e("min_concurrent = 4", "min_concurrent = 9").contains("min_concurrent"));
        assert!(e("min_concurrent = 4", "min_concurrent = 4\nreply_delay_ms = 999999999").contains("reply_delay_ms"));
        assert!(e("duration_s = 2", "duration_s = 2\nreply_delay_ms = 5").contains("echo replies at once"));
        assert!(
            e("requests_per_connection = 1", "requests_per_connection = 0")
                .contains("requests_per_connection")
        );
        assert!(e("allow_errors = true", "allow_errors = false")
            .contains("expect_broken needs allow_errors"));
        assert!(e("expect_broken = [\"m2\"]", "expect_broken = [\"c1\"]").contains("c1"));
        assert!(e(
            "\"net.ipv4.conf.all.arp_ignore\" = 1",
            "\"kernel.pid_max\" = 1"
        )
        .contains("net.*"));
        assert!(e(
            "\"net.ipv4.conf.all.arp_ignore\" = 1",
            "\"net.ipv4.conf.all.arp_ignore\" = 1.5"
        )
        .contains("integer or a string"));
        assert!(e(
            "loopback = [\"10.0.0.100/32\"]",
            "loopback = [\"10.0.0.100\"]"
        )
        .contains("prefix length"));
    }

    #[test]
    fn agents_and_agent_faults_validate() {
        let base = format!(
            "{}{}",
            BALANCE,
            r#"
[[appliance]]
name = "lb1"
config = "Cargo.toml"
[[agent]]
id = "m2"
ns = "m2"
appliance = "lb1"
address = "10.0.0.3"
loadavg = 0.0
[[fault]]
kind = "kill_agent"
agent = "m2"
workload = "failover"
at_s = 1.0
[[fault]]
kind = "start_agent"
agent = "m2"
workload = "failover"
at_s = 1.5
"#
        );
        let t = topo(&base).unwrap();
        assert_eq!(t.agents[0].interval_ms, 10);
        assert_eq!(t.faults[0].kind, FaultKind::KillAgent);
        let e = |from: &str, to: &str| topo(&base.replacen(from, to, 1)).unwrap_err().to_string();
        assert!(e("agent = \"m2\"\nworkload", "agent = \"m9\"\nworkload").contains("m9"));
        assert!(e(
            "workload = \"failover\"\nat_s = 1.0",
            "workload = \"nope\"\nat_s = 1.0"
        )
        .contains("nope"));
        assert!(e(
            "appliance = \"lb1\"\naddress",
            "appliance = \"lb9\"\naddress"
        )
        .contains("lb9"));
        assert!(e("ns = \"m2\"\nappliance", "ns = \"m9\"\nappliance").contains("m9"));
        assert!(
            e("address = \"10.0.0.3\"", "address = \"10.0.0.3/24\"").contains("not an IP address")
        );
        assert!(e("loadavg = 0.0", "loadavg = -1.0").contains("loadavg"));
        assert!(e(
            "kind = \"kill_agent\"\nagent = \"m2\"",
            "kind = \"kill_agent\""
        )
        .contains("needs `agent`"));
        assert!(e(
            "kind = \"kill_agent\"\nagent = \"m2\"",
            "kind = \"kill\"\nagent = \"m2\""
        )
        .contains("`agent` applies"));
    }

    /// Every topology shipped in topologies/ loads (the `*-rack.toml` files there are
    /// rack configs, not topologies).
    #[test]
    fn shipped_topologies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".toml") || name.ends_with("-rack.toml") {
                continue;
            }
            load(&p).unwrap_or_else(|e| panic!("{}: {:#}", name, e));
            n += 1;
        }
        assert!(n >= 7, "{} topologies", n);
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
