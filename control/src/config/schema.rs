//! The rack file's schema: one struct per section, with the defaults of configs/README.md.
//!
//! Every struct is `#[serde(default, deny_unknown_fields)]`: a key that is absent takes its
//! default here, and a key that is not in the schema is an error. Required keys (`node.id`,
//! `eal.file_prefix`, a port's `name` and `device`, ...) default to an empty value and are
//! checked for presence in the document by the validator, so that every missing key is
//! reported, not just the first one serde meets.

use super::types::{de_fence_parameters, de_pairs, Cidr, MacAddr, PortRange};
use super::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// One rack file: this appliance's identity, its DPDK resources, its ports and the rack's
/// peers, services, servers and control-plane settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RackConfig {
    pub node: NodeConfig,
    pub eal: EalConfig,
    pub mempool: MempoolConfig,
    pub workers: WorkersConfig,
    /// `[[port]]`, in file order; a port's index in this list is its port index.
    pub port: Vec<PortConfig>,
    /// `[[bond]]`: DPDK bonding PMD ports built from `[[port]]` members.
    pub bond: Vec<BondConfig>,
    /// `[forward]`: present iff `node.roles` contains `forward`.
    pub forward: Option<ForwardConfig>,
    pub peer: Vec<PeerConfig>,
    pub proxy_group: Vec<ProxyGroupConfig>,
    pub service: Vec<ServiceConfig>,
    pub pool: Vec<PoolConfig>,
    pub server: Vec<ServerConfig>,
    pub fence_device: Vec<FenceDeviceConfig>,
    pub mirror: Vec<MirrorConfig>,
    /// `[splice]`: settings of the splice role shared by its services.
    pub splice: SpliceConfig,
    pub timers: TimersConfig,
    pub keys: KeysConfig,
    pub ctl: CtlConfig,
    pub metrics: MetricsConfig,
    /// The file name the configuration was parsed from (as given to `load`/`parse`).
    #[serde(skip)]
    pub source: String,
    /// Non-fatal findings (untested vdev drivers, IPv6 addresses not answered yet, ...),
    /// in the same `file:line:col: key: message` form as errors.
    #[serde(skip)]
    pub warnings: Vec<ConfigError>,
}

// ---------------------------------------------------------------------------------------
// [node]

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Forward,
    Balance,
    Splice,
    Tap,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Forward => "forward",
            Role::Balance => "balance",
            Role::Splice => "splice",
            Role::Tap => "tap",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Role {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Role {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This appliance's node id, unique in the rack. Required.
    pub id: String,
    /// What this appliance does. Default `["forward"]`.
    pub roles: Vec<Role>,
    /// Management address and UDP port this node sends and receives heartbeats on.
    pub mgmt: Option<SocketAddr>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: String::new(),
            roles: vec![Role::Forward],
            mgmt: None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// [eal] [mempool] [workers]

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EalConfig {
    /// DPDK lcore list (`"0,1"`, `"0-3"`, `"0,2-3"`); the first listed is the main lcore.
    pub lcores: String,
    pub memory_mb: u32,
    pub hugepages: bool,
    /// `--file-prefix`, unique per DPDK process on a host. Required.
    pub file_prefix: String,
    /// PCI addresses (optionally `,devargs`) this process may use.
    pub pci_allow: Vec<String>,
    /// Raw EAL arguments appended last.
    pub extra_args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            lcores: "0,1".into(),
            memory_mb: 256,
            hugepages: true,
            file_prefix: String::new(),
            pci_allow: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MempoolConfig {
    pub mbufs: u32,
    pub cache: u32,
    pub data_room: u16,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            mbufs: 8191,
            cache: 256,
            data_room: 2176,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    pub burst: u16,
    pub idle_backoff: bool,
    pub idle_polls: u32,
    pub idle_max_sleep_us: u32,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            burst: 32,
            idle_backoff: true,
            idle_polls: 64,
            idle_max_sleep_us: 200,
        }
    }
}

// ---------------------------------------------------------------------------------------
// [[port]] [[bond]] [forward]

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PortConfig {
    /// Name used by roles, ctl and metrics. Required, unique among ports and bonds.
    pub name: String,
    /// A PCI address (`"0000:03:00.0"`) or a vdev name (`"net_tap0"`). Required.
    pub device: String,
    /// vdev arguments (`"iface=tsw0"`), or devargs for a PCI device.
    pub args: String,
    pub rx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub promiscuous: bool,
    pub mtu: u16,
    /// The appliance's own addresses on this port.
    pub addresses: Vec<Cidr>,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            name: String::new(),
            device: String::new(),
            args: String::new(),
            rx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            promiscuous: true,
            mtu: 1500,
            addresses: Vec::new(),
        }
    }
}

impl PortConfig {
    /// The port's own IPv4 addresses (IPv6 ones are accepted but not answered yet).
    pub fn ipv4_addresses(&self) -> Vec<Ipv4Addr> {
        self.addresses.iter().filter_map(Cidr::ipv4).collect()
    }

    /// What kind of DPDK device `device` names (`None` if it is neither valid form).
    pub fn device_kind(&self) -> Option<super::eal::DeviceKind> {
        super::eal::classify_device(&self.device).ok()
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
pub enum BondMode {
    /// IEEE 802.3ad dynamic link aggregation (LACP); DPDK bonding mode 4.
    #[serde(rename = "802.3ad")]
    #[default]
    Lacp,
    /// Static aggregation, frames spread by `xmit_hash`; DPDK bonding mode 2.
    #[serde(rename = "balance-xor")]
    BalanceXor,
    /// One member carries traffic, the others stand by; DPDK bonding mode 1.
    #[serde(rename = "active-backup")]
    ActiveBackup,
}

impl BondMode {
    /// The bonding PMD's `mode=` number.
    pub fn dpdk_mode(&self) -> u8 {
        match self {
            BondMode::ActiveBackup => 1,
            BondMode::BalanceXor => 2,
            BondMode::Lacp => 4,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceXor => "balance-xor",
            BondMode::ActiveBackup => "active-backup",
        }
    }
}

/// Which header fields a flow hash covers, as bonding's `xmit_hash_policy`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum HashPolicy {
    /// Source and destination MAC.
    L2,
    /// MACs and IP addresses.
    L23,
    /// IP addresses and TCP/UDP ports (fragments fall back to addresses only).
    L34,
}

impl HashPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            HashPolicy::L2 => "l2",
            HashPolicy::L23 => "l23",
            HashPolicy::L34 => "l34",
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LacpRate {
    Slow,
    #[default]
    Fast,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BondConfig {
    /// Name used like a port name by roles, ctl and metrics. Required.
    pub name: String,
    pub mode: BondMode,
    /// `[[port]]` names aggregated by this bond. Required (at least one).
    pub members: Vec<String>,
    pub xmit_hash: HashPolicy,
    pub lacp_rate: LacpRate,
    /// active-backup: the member preferred while it is up.
    pub primary: Option<String>,
    pub rx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub promiscuous: bool,
    pub mtu: u16,
    pub addresses: Vec<Cidr>,
}

impl Default for BondConfig {
    fn default() -> Self {
        BondConfig {
            name: String::new(),
            mode: BondMode::Lacp,
            members: Vec::new(),
            xmit_hash: HashPolicy::L2,
            lacp_rate: LacpRate::Fast,
            primary: None,
            rx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            promiscuous: true,
            mtu: 1500,
            addresses: Vec::new(),
        }
    }
}

impl BondConfig {
    /// The bonding vdev's DPDK device name.
    pub fn vdev_name(&self) -> String {
        format!("net_bonding_{}", self.name)
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Each pair of port (or bond) names is a bump in the wire, both ways.
    #[serde(deserialize_with = "de_pairs")]
    pub pairs: Vec<[String; 2]>,
}

// ---------------------------------------------------------------------------------------
// [[peer]] [[proxy_group]]

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum PeerClass {
    /// Another tapsplice appliance of the rack (splice replication, balance tables).
    #[default]
    Appliance,
    /// A proxy appliance that is a balance member.
    Proxy,
    /// A server running `tapsplice agent` (backends, ST-TCP primaries and backups).
    Server,
}

impl PeerClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            PeerClass::Appliance => "appliance",
            PeerClass::Proxy => "proxy",
            PeerClass::Server => "server",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's node id. Required, unique, not this node's id.
    pub id: String,
    pub class: PeerClass,
    /// The peer's management address and heartbeat UDP port.
    pub mgmt: Option<SocketAddr>,
    /// A dataplane port (or bond) on which heartbeats also travel in-band.
    pub inband_port: Option<String>,
    /// The peer's address on `inband_port`'s segment.
    pub inband_address: Option<IpAddr>,
    /// Overrides the class's K (missed heartbeat intervals before the peer is down).
    pub missed_intervals: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyGroupConfig {
    pub name: String,
    /// Peer ids (class appliance or proxy) and/or this node's id.
    pub members: Vec<String>,
    /// Relative share of new connections hashed to this group.
    pub weight: u32,
}

impl Default for ProxyGroupConfig {
    fn default() -> Self {
        ProxyGroupConfig {
            name: String::new(),
            members: Vec::new(),
            weight: 1,
        }
    }
}

// ---------------------------------------------------------------------------------------
// [[service]] [[pool]]

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// Stateless channel-bonded balancing over a pool's members (MAC rewrite).
    #[default]
    Balance,
    /// TCP splicing: answer the handshake, route the first request, splice to a backend.
    Splice,
    /// ST-TCP: deliver to a `[[server]]` pair's primary and shadow it on the backup.
    Shadow,
}

impl ServiceMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceMode::Balance => "balance",
            ServiceMode::Splice => "splice",
            ServiceMode::Shadow => "shadow",
        }
    }
    /// The node role that serves services of this mode.
    pub fn role(&self) -> Role {
        match self {
            ServiceMode::Balance => Role::Balance,
            ServiceMode::Splice => Role::Splice,
            ServiceMode::Shadow => Role::Tap,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NatMode {
    /// Source = appliance address and port; backends need no route change.
    #[default]
    Fullnat,
    /// Client address kept; backends route back through the appliance.
    Transparent,
}

/// What a splice service answers a SYN with while none of the pools it can route the
/// connection to has a live backend. Before the service has had a live backend at all
/// (at start, while the backends are being resolved) SYNs are always dropped, so that
/// the clients' retransmissions are taken a moment later.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoBackend {
    /// A RST at once: clients fail fast ("connection refused") and may try elsewhere (IPVS
    /// answers with an ICMP port unreachable; HAProxy accepts and closes at once).
    #[default]
    Reset,
    /// No answer: the client retransmits its SYN (after 1 s, then 2 s ...) and is taken
    /// once a backend is live again (a pool briefly down); a lasting outage ends in the
    /// client's connect timeout (about two minutes with Linux's defaults).
    Drop,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FaultTolerance {
    /// Splices live on the appliance that made them only.
    None,
    /// Splices are replicated to every peer: a proxy failure breaks no connection.
    #[default]
    Replicated,
    /// Replicated, plus the current transaction is logged so a backend failure is healed
    /// by re-splicing the client connection to another backend.
    Resplice,
}

/// One layer-7 routing rule of a splice service; every matcher given must match, the
/// first matching rule wins, and a request no rule matches goes to the service's `pool`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteRule {
    /// HTTP Host (exact, case-insensitive, or `"*.example.com"`).
    pub host: Option<String>,
    /// HTTP request path prefix, starting with `/`.
    pub path_prefix: Option<String>,
    /// HTTP methods (upper case).
    pub methods: Vec<String>,
    /// Destination TCP port(s) of the connection (works for any protocol).
    pub dst_ports: Vec<PortRange>,
    /// The pool that serves matching requests. Required.
    pub pool: String,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceTimeouts {
    /// Backend SYN retransmission interval (splice).
    pub connect_ms: u32,
    /// Backend connection attempts before the next backend is tried.
    pub connect_attempts: u32,
    /// A first request not routable within this time is answered with RST.
    pub first_request_ms: u32,
    /// Initial response timeout before a backend is suspected (adaptive afterwards).
    pub response_ms: u32,
    /// An idle splice expires after this time.
    pub idle_ms: u32,
    /// A half-closed splice expires after this time.
    pub half_closed_ms: u32,
}

impl Default for ServiceTimeouts {
    fn default() -> Self {
        ServiceTimeouts {
            connect_ms: 1000,
            connect_attempts: 3,
            first_request_ms: 5000,
            response_ms: 2000,
            idle_ms: 300_000,
            half_closed_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Required, unique.
    pub name: String,
    /// The virtual address clients connect to. Required.
    pub vip: IpAddr,
    /// Service ports (`80`, `"8000-8010"`). Required (at least one).
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    pub mode: ServiceMode,
    /// balance: which fields the flow hash covers.
    pub hash: HashPolicy,
    /// balance/splice: the default pool. Required for balance and splice.
    pub pool: Option<String>,
    /// splice: layer-7 routing rules, tried in order.
    pub route: Vec<RouteRule>,
    /// splice: proxy groups that share this service's connections (default: all).
    pub proxy_groups: Vec<String>,
    /// splice: address translation toward backends.
    pub nat: NatMode,
    /// splice: a SYN while no pool of the service has a live backend.
    pub no_backend: NoBackend,
    /// splice: what survives an appliance or backend failure.
    pub fault_tolerance: FaultTolerance,
    /// shadow: the `[[server]]` pair serving this service. Required for shadow.
    pub server: Option<String>,
    /// Port or bond facing the clients (default: any port).
    pub via: Option<String>,
    pub timeouts: ServiceTimeouts,
    /// Splice/shadow table capacity for this service; beyond it new connections are refused.
    pub max_connections: u32,
    /// splice: bytes of a first request buffered while routing.
    pub request_buffer_bytes: u32,
    /// resplice: per-connection transaction log limit.
    pub resplice_log_bytes: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            name: String::new(),
            vip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: Vec::new(),
            protocol: Protocol::Tcp,
            mode: ServiceMode::Balance,
            hash: HashPolicy::L34,
            pool: None,
            route: Vec::new(),
            proxy_groups: Vec::new(),
            nat: NatMode::Fullnat,
            no_backend: NoBackend::Reset,
            fault_tolerance: FaultTolerance::Replicated,
            server: None,
            via: None,
            timeouts: ServiceTimeouts::default(),
            max_connections: 65_536,
            request_buffer_bytes: 16_384,
            resplice_log_bytes: 1 << 20,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolMember {
    /// The member's address (balance: it also holds the VIP; splice: the backend). Required.
    pub address: IpAddr,
    /// splice: backend TCP port (default: the client's destination port).
    pub port: Option<u16>,
    /// Static weight; the heartbeat workload factor scales it. 0 = drained.
    pub weight: u32,
    /// The peer whose heartbeats report this member's health and workload.
    pub peer: Option<String>,
}

impl Default for PoolMember {
    fn default() -> Self {
        PoolMember {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: None,
            weight: 100,
            peer: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Required, unique.
    pub name: String,
    /// Port or bond facing the members (default: the port with an address in the members'
    /// subnet).
    pub via: Option<String>,
    /// Required (at least one).
    pub members: Vec<PoolMember>,
    /// splice: how a new connection's backend is chosen.
    pub selection: PoolSelection,
}

/// How a splice pool chooses a new connection's backend.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PoolSelection {
    /// Weighted consistent hashing (Maglev) of the client's address and port: the same
    /// client goes to the same backend on every appliance of the rack.
    #[default]
    Hash,
    /// The live backend with the fewest open connections relative to its weight.
    LeastConnections,
}

// ---------------------------------------------------------------------------------------
// [[server]] [[fence_device]]

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PromoteAfter {
    /// Promote as soon as the primary is cut off in the dataplane (fabric fence); power
    /// fencing runs in parallel and is verified.
    Isolation,
    /// Promote only after the power fence reported and verified the primary off.
    #[default]
    PowerOff,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Required, unique.
    pub name: String,
    /// Port or bond where the primary and the backup are attached. Required.
    pub via: String,
    /// Peer id (class server) of the primary. Required.
    pub primary: String,
    /// Peer id (class server) of the backup replica. Required.
    pub backup: String,
    /// Both hold the service address; their MACs tell them apart (default: learned from
    /// their heartbeats).
    pub primary_mac: Option<MacAddr>,
    pub backup_mac: Option<MacAddr>,
    /// Fence device that powers the primary off. Required when promote_after = "power_off".
    pub fence: Option<String>,
    /// `plug=` passed to the fence agent for the primary.
    pub fence_plug: Option<String>,
    /// Fence device for the backup (used once the backup has been promoted).
    pub backup_fence: Option<String>,
    pub backup_fence_plug: Option<String>,
    pub promote_after: PromoteAfter,
    /// Client bytes kept per connection until the backup acknowledges them.
    pub hold_buffer_bytes: u32,
    /// Longest time a FIN/RST from only one side is held back (MaxDelayFIN).
    pub max_delay_fin_ms: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: String::new(),
            via: String::new(),
            primary: String::new(),
            backup: String::new(),
            primary_mac: None,
            backup_mac: None,
            fence: None,
            fence_plug: None,
            backup_fence: None,
            backup_fence_plug: None,
            promote_after: PromoteAfter::PowerOff,
            hold_buffer_bytes: 1 << 20,
            max_delay_fin_ms: 500,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FenceDeviceConfig {
    /// Required, unique.
    pub name: String,
    /// Absolute path of a fence-agents program (`/usr/sbin/fence_ipmilan`). Required.
    pub agent: PathBuf,
    /// `key=value` lines given to the agent on stdin (besides `action=` and `plug=`).
    #[serde(deserialize_with = "de_fence_parameters")]
    pub parameters: BTreeMap<String, String>,
    /// One agent run longer than this is killed and counts as a failure.
    pub timeout_ms: u32,
    /// Run `action=status` after `off` and require "off" (exit 2).
    pub verify: bool,
    /// Agent runs before fencing is declared failed.
    pub attempts: u32,
}

impl Default for FenceDeviceConfig {
    fn default() -> Self {
        FenceDeviceConfig {
            name: String::new(),
            agent: PathBuf::new(),
            parameters: BTreeMap::new(),
            timeout_ms: 30_000,
            verify: true,
            attempts: 2,
        }
    }
}

// ---------------------------------------------------------------------------------------
// [[mirror]]

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Rx,
    Tx,
    #[default]
    Both,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorFilter {
    /// Mirror frames whose source or destination address is in one of these subnets
    /// (empty: any).
    pub addresses: Vec<Cidr>,
    /// ... and whose source or destination TCP/UDP port is one of these (empty: any).
    pub ports: Vec<PortRange>,
    pub protocol: Option<Protocol>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    /// Required, unique.
    pub name: String,
    /// Ports (or bonds) whose traffic is copied. Required (at least one).
    pub sources: Vec<String>,
    pub direction: Direction,
    pub filter: MirrorFilter,
    /// Port the copies leave by; dedicated to this mirror. Required.
    pub monitor: String,
    /// Copies queued toward the monitor before they are dropped and counted.
    pub ring_size: u32,
    /// Bytes copied per frame (0 = the whole frame).
    pub snaplen: u16,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            name: String::new(),
            sources: Vec::new(),
            direction: Direction::Both,
            filter: MirrorFilter::default(),
            monitor: String::new(),
            ring_size: 1024,
            snaplen: 0,
        }
    }
}

// ---------------------------------------------------------------------------------------
// [timers] [keys] [ctl] [metrics]

/// Per-class override of the missed-interval count K.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClassIntervals {
    pub appliance: Option<u32>,
    pub proxy: Option<u32>,
    pub server: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TimersConfig {
    pub heartbeat_interval_ms: u32,
    /// K: a peer that missed K consecutive intervals is declared down.
    pub missed_intervals: u32,
    pub missed_by_class: ClassIntervals,
    pub flap_damping: bool,
    /// A peer that changes state more than `flap_max_transitions` times within
    /// `flap_window_ms` is held down for `flap_hold_down_ms`.
    pub flap_window_ms: u32,
    pub flap_max_transitions: u32,
    pub flap_hold_down_ms: u32,
    /// Exponential smoothing factor (0, 1] of the heartbeat workload factor W_i.
    pub weight_smoothing: f64,
    /// A restarted peer resynchronises splices for at most this long before taking traffic.
    pub resync_timeout_ms: u32,
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            heartbeat_interval_ms: 10,
            missed_intervals: 3,
            missed_by_class: ClassIntervals::default(),
            flap_damping: true,
            flap_window_ms: 10_000,
            flap_max_transitions: 3,
            flap_hold_down_ms: 30_000,
            weight_smoothing: 0.2,
            resync_timeout_ms: 5_000,
        }
    }
}

impl TimersConfig {
    /// K for a peer class (the class override, else `missed_intervals`).
    pub fn missed_for(&self, class: PeerClass) -> u32 {
        match class {
            PeerClass::Appliance => self.missed_by_class.appliance,
            PeerClass::Proxy => self.missed_by_class.proxy,
            PeerClass::Server => self.missed_by_class.server,
        }
        .unwrap_or(self.missed_intervals)
    }
}

/// `[splice]`: what the splice role does for every service it serves.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpliceConfig {
    /// MSS announced to clients in the SYN-ACK, and the most a backend is offered. Must fit
    /// the smallest MTU of the ports (MTU − 40); the appliance does not re-segment.
    pub mss: u16,
    /// Window shift promised to clients that offer window scaling (0–14).
    pub wscale: u8,
    /// FullNAT source ports (on the address of the port that faces the backend), split
    /// evenly between the worker lcores.
    pub nat_ports: PortRange,
    /// Backend handshakes in progress at once, per worker lcore (each holds a request
    /// buffer of the service's `request_buffer_bytes`).
    pub handshakes: u32,
}

impl Default for SpliceConfig {
    fn default() -> Self {
        SpliceConfig { mss: 1460, wscale: 7, nat_ports: PortRange { first: 20_000, last: 59_999 }, handshakes: 1024 }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// File holding the rack key for heartbeat/replication HMAC (root-only readable).
    pub rack_key: Option<PathBuf>,
    /// File holding the SYN cookie secret shared by the rack's appliances.
    pub syn_cookie_secret: Option<PathBuf>,
    /// SYN cookie secret rotation period.
    pub syn_cookie_rotation_s: u32,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            rack_key: None,
            syn_cookie_secret: None,
            syn_cookie_rotation_s: 64,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CtlConfig {
    /// Unix socket of `tapsplice ctl` (default `/run/tapsplice/<node.id>.sock`).
    pub socket: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}
