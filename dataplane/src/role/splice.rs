//! Role `splice`: TCP connections to a service VIP are answered by the appliance with SYN
//! cookies, continued to a backend with the client's own ISN, and then spliced segment by
//! segment (DESIGN.md "Splice"; the design and its reasons are in `docs/splice.md`).
//!
//! # One connection's life
//! 1. **SYN** from the client C to the VIP: answered with a SYN-ACK whose ISN a0 is a SYN
//!    cookie ([`cookie::make`]) carrying C's MSS, window shift and SACK-permitted. Nothing
//!    is stored: a SYN flood costs no memory.
//! 2. **The handshake's ACK** (no entry yet): the cookie is checked ([`cookie::check`];
//!    a miss is dropped as `bad_cookie`). Then the backend is chosen — the service's
//!    weighted Maglev table (built by the control thread from health and weights, as for
//!    `balance`) hashed on C's address and port — a FullNAT port taken (in transparent
//!    mode none: the backend leg keeps C's address and port, and the backends route
//!    their replies to C through the appliance), the entry created
//!    ([`State::Connecting`]) and a SYN sent to the backend S with C's ISN c0 and C's
//!    options (MSS clamped to the appliance's). A full table, a service at its
//!    `max_connections`, no NAT port or no room for another handshake in progress answer
//!    C with a RST (`splice_full`); a service without a live backend likewise (`no_member`).
//! 3. **While connecting**, C's first bytes are kept in the handshake's buffer (in order,
//!    up to `request_buffer_bytes`; beyond it C retransmits) and **not acknowledged**: if
//!    the appliance dies now, C still holds them (`docs/splice.md`, "first request").
//! 4. **S's SYN-ACK**: Δ = a0 − s0, S's window shift and the timestamp offset are
//!    recorded, the buffered bytes are sent to S at their original sequence numbers (or a
//!    pure ACK when there are none), and the entry is [`State::Established`]. S's RST, or
//!    no answer to `connect_attempts` SYNs (waiting `connect_ms`, then twice as long after
//!    each retransmission), moves the connection to
//!    the next live backend; when none is left C gets a RST.
//! 5. **Spliced**: every segment is rewritten by [`translate::rewrite`] (addresses, ports,
//!    Δ, SACK, windows, timestamps) and its MACs set for the other leg. FINs and RSTs are
//!    tracked: after a RST, or both FINs, the entry lingers [`CLOSED_LINGER_S`]; with one
//!    FIN it expires after `half_closed_ms` of silence, otherwise after `idle_ms`.
//!
//! # What else the role answers
//! ARP and echo for the VIP addresses on client-facing ports, and the appliance's own
//! addresses as every role does ([`answer_local`]); other traffic is forwarded between
//! port pairs when configured, else dropped as `not_vip`.
//!
//! # Lcores
//! Each lcore has its own table and NAT ports (a slice of the configured range). The
//! backend's replies must reach the lcore that owns the entry: with one worker that holds
//! trivially; with several, the NAT port must be chosen so that the NIC's RSS hash of the
//! reply lands on the owner's queue (`docs/splice.md`, not built yet).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::forward::{forward_or_answer, Forward};
use super::local::{answer_local, LocalAddrs, LocalVerdict};
use super::{Ctx, PortIndex, Role, Verdict};
use super::balance::{BalanceCounters, BalanceTables};
use crate::packet::build::{tcp4, Tcp4Segment};
use crate::packet::tcp::flags;
use crate::packet::{ethertype, fast_v4, ip_proto, peek_tcp4_tuple, Ethernet, Tcp, TcpOption, FAST_V4_L3};
use crate::splice::cookie::{self, CookieKeys, SynOptions, Tuple};
use crate::balance::MemberEntry;
use crate::splice::options::{write_syn_options, SynOffer, SYN_OPTIONS_MAX};
use crate::splice::request::{Decision, Rules};
use crate::splice::rss::RssSteer;
use crate::splice::table::{flag, Entry, Leg, LegKey, NatPorts, NatSlices, SpliceTable, State, Traffic};
use crate::splice::translate::{rewrite, Direction, Endpoint};
use crate::stats::DropReason;

/// Seconds a closed connection (RST, or both FINs) stays in the table, so that the last
/// ACK and retransmitted FINs still find it.
pub const CLOSED_LINGER_S: u32 = 2;
/// How long a backend that refused a connection or let its SYNs go unanswered is passed
/// over by new connections (when another backend of its pool is live).
pub const SUSPECT_MS: u64 = 10_000;
/// How long after the start a SYN without a live backend is dropped rather than refused,
/// unless its pool had a backend already: the backends' MACs are being resolved.
pub const STARTUP_GRACE_MS: u64 = 10_000;
/// The longest wait for a backend's answer to one SYN (the doubling stops here).
pub const MAX_CONNECT_WAIT_MS: u64 = 16_000;
/// Free NAT ports tried for one whose reply the port's RSS brings to this lcore: with n
/// lcores sharing the queues about 1/n of them qualify, so 64 tries miss for fewer than
/// one connection in a thousand up to 8 lcores ((7/8)^64 ≈ 2e-4).
pub const NAT_STEER_TRIES: usize = 64;
/// Table slots the expiry hand looks at per chunk (a tick sweeps enough chunks to walk the
/// table about once a second).
const SWEEP_PER_TICK: usize = 64;

/// One spliced service, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpliceService {
    pub vip: Ipv4Addr,
    /// Destination port ranges, inclusive.
    pub ports: Vec<(u16, u16)>,
    /// Which pool a connection goes to (by its first request, or its port).
    pub rules: Rules,
    /// Connections of this service one lcore holds at most.
    pub max_connections: u32,
    /// Transparent mode: the backend leg keeps the client's address and port (no NAT
    /// port), and the backends route their replies to the clients through the appliance.
    pub transparent: bool,
    /// A connection whose first request is not complete within this time is reset.
    pub first_request_ms: u32,
    /// The wait for a backend's answer to the first SYN; each retransmission doubles it.
    pub connect_ms: u32,
    /// SYNs sent to one backend before the next one is tried.
    pub connect_attempts: u32,
    pub idle_ms: u32,
    pub half_closed_ms: u32,
    /// A SYN while no pool the connection can reach has a live backend (see
    /// [`Splice::has_backend`]) is answered with a RST once [`Splice::may_refuse`] allows
    /// it; otherwise, and before that, it goes unanswered (the client retransmits it).
    pub reset_without_backend: bool,
}

impl SpliceService {
    fn covers(&self, port: u16) -> bool {
        self.ports.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }
}

/// One pool of backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplicePool {
    /// By member index (the order of the pool's selection table): address and TCP port
    /// (`None` = the client's destination port).
    pub backends: Vec<(Ipv4Addr, Option<u16>)>,
    /// Choose the live backend with the fewest connections (on this lcore) relative to its
    /// weight, instead of the weighted consistent hash of the client.
    pub least_connections: bool,
}

/// The appliance clock as the role sees it: TSC → Unix milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub tsc_hz: u64,
    /// A TSC reading and the Unix time in milliseconds at that moment.
    pub tsc0: u64,
    pub unix_ms0: u64,
}

impl Clock {
    pub fn unix_ms(&self, tsc: u64) -> u64 {
        let dt = u128::from(tsc.saturating_sub(self.tsc0)) * 1000 / u128::from(self.tsc_hz.max(1));
        self.unix_ms0 + dt as u64
    }
}

/// Per-lcore settings of the role.
#[derive(Clone, Debug)]
pub struct SpliceSettings {
    /// MSS announced to clients, and the most a backend is offered.
    pub mss: u16,
    /// Window shift promised to clients that offer window scaling.
    pub wscale: u8,
    /// Connections this lcore's table holds.
    pub capacity: usize,
    /// Handshakes toward backends in progress at once (each has a request buffer).
    pub handshakes: usize,
    pub request_buffer_bytes: usize,
    /// The FullNAT source ports of every lcore; this one takes `nat.slice(worker)`.
    pub nat: NatSlices,
    /// This lcore's index among the workers (0-based): its NAT slice, and which
    /// backend segments it hands to another lcore (`Verdict::Handoff`).
    pub worker: u16,
    /// Per port (by index; empty or `None`: not known): the port's RSS as this lcore sees
    /// it, so that a backend leg on that port gets a NAT port whose replies the NIC
    /// delivers to this lcore (`splice::rss`).
    pub rss: Vec<Option<RssSteer>>,
    /// Seeds the backend choice (the same on every appliance of the rack).
    pub seed: u64,
    pub clock: Clock,
}

/// What the control thread pushes to the lcores.
#[derive(Clone, Debug)]
pub enum SpliceUpdate {
    /// The pools' backend tables (indexed like the pools).
    Tables(Arc<BalanceTables>),
    /// The SYN-cookie keys after a rotation.
    Keys(CookieKeys),
    /// The operator asks for the connections (`ctl splices`).
    Dump(DumpRequest),
}

/// Which connections `ctl splices` wants; `None` matches any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpFilter {
    pub client: Option<Ipv4Addr>,
    pub client_port: Option<u16>,
    pub backend: Option<Ipv4Addr>,
    pub backend_port: Option<u16>,
    pub state: Option<State>,
}

impl DumpFilter {
    pub fn matches(&self, e: &Entry) -> bool {
        self.client.is_none_or(|a| a == e.client.addr)
            && self.client_port.is_none_or(|p| p == e.client.port)
            && self.backend.is_none_or(|a| a == e.backend.addr)
            && self.backend_port.is_none_or(|p| p == e.backend.port)
            && self.state.is_none_or(|s| s == e.state)
    }
}

/// A request for the lcore's connections, answered on `reply` (never blocks the lcore:
/// a reply that does not fit is dropped, and the control side times out).
#[derive(Clone, Debug)]
pub struct DumpRequest {
    pub filter: DumpFilter,
    /// At most this many rows.
    pub limit: usize,
    pub reply: crossbeam_channel::Sender<Dump>,
}

/// One lcore's answer: matching connections (up to the limit), how many matched in all,
/// and its clock in seconds (the entries' `last_seen` and `since` are on it).
#[derive(Clone, Debug, Default)]
pub struct Dump {
    pub rows: Vec<(Entry, Traffic)>,
    pub matched: usize,
    pub now_s: u32,
}

/// Why [`Splice::new`] refused a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpliceError {
    VipIsLocal { service: usize },
    NoPorts { service: usize },
    NoSuchPort(PortIndex),
    TooManyBackends { pool: usize },
    NoSuchPool { service: usize, pool: usize },
    NoNatPorts,
}

impl std::fmt::Display for SpliceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpliceError::VipIsLocal { service } => write!(f, "splice service {service}: its VIP is also an address of a port"),
            SpliceError::NoPorts { service } => write!(f, "splice service {service}: no ports, or a port range whose start is above its end"),
            SpliceError::NoSuchPort(p) => write!(f, "client-facing port {p} is not configured"),
            SpliceError::TooManyBackends { pool } => write!(f, "splice pool {pool}: more than 64 backends"),
            SpliceError::NoSuchPool { service, pool } => write!(f, "splice service {service}: pool {pool} does not exist"),
            SpliceError::NoNatPorts => write!(f, "this lcore has no slice of the NAT port range"),
        }
    }
}

impl std::error::Error for SpliceError {}

/// The role's own counters, by event (see [`SpliceCounters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum SpliceStat {
    /// SYN-ACKs with a cookie sent.
    SynCookies = 0,
    /// Handshake ACKs whose cookie validated.
    CookiesValid,
    /// New connections refused for want of room (table, service share, NAT ports,
    /// handshakes in progress).
    RefusedFull,
    /// New connections refused because the service had no live backend.
    RefusedNoBackend,
    /// SYNs sent to backends (retransmissions included).
    BackendSyns,
    /// Backends that answered a SYN with RST.
    BackendRefused,
    /// Backends that did not answer `connect_attempts` SYNs.
    BackendTimeouts,
    /// Connections given up after every backend failed (the client got a RST).
    BackendsExhausted,
    /// Splices set up (backend SYN-ACK received).
    Established,
    /// Request bytes replayed to backends.
    ReplayedBytes,
    /// Request bytes not kept because the handshake's buffer was full.
    BufferOverflow,
    /// Connections ended by a RST from either side.
    Resets,
    /// Connections ended by FINs from both sides.
    Finished,
    /// Entries removed by the expiry hand (idle, half-closed, or closed and lingered).
    Expired,
    /// Segments spliced toward backends, and their bytes (frames on the wire).
    ToServerPackets,
    ToServerBytes,
    /// Segments spliced toward clients, and their bytes.
    ToClientPackets,
    ToClientBytes,
    /// Connections in the table (a gauge, written at every tick).
    Active,
    /// Connections routed by their first HTTP request.
    Routed,
    /// First requests that were not HTTP/1.x (the client got a RST).
    BadRequests,
    /// Header blocks larger than the request buffer (the client got a RST).
    HeadersTooLarge,
    /// First requests not complete within `first_request_ms` (the client got a RST).
    FirstRequestTimeouts,
    /// New connections refused because the chosen backend leg's tuple belonged to another
    /// connection (transparent mode: one client port to two VIPs on the same backend and
    /// port; the client got a RST).
    RefusedTupleTaken,
    /// Backend legs opened with a NAT port whose replies the port's RSS sends to another
    /// lcore (none of the free ports tried qualified): those replies are handed over.
    /// Counted only on ports whose RSS the appliance could read.
    NatUnsteered,
    /// SYNs that arrived while none of their service's pools had a live backend: not
    /// answered (the client retransmits), or answered with a RST when the service says
    /// so. Either way no cookie is spent on a connection that could not be spliced.
    SynsNoBackend,
}

impl SpliceStat {
    pub const COUNT: usize = 26;
    pub const ALL: [SpliceStat; Self::COUNT] = [
        SpliceStat::SynCookies,
        SpliceStat::CookiesValid,
        SpliceStat::RefusedFull,
        SpliceStat::RefusedNoBackend,
        SpliceStat::BackendSyns,
        SpliceStat::BackendRefused,
        SpliceStat::BackendTimeouts,
        SpliceStat::BackendsExhausted,
        SpliceStat::Established,
        SpliceStat::ReplayedBytes,
        SpliceStat::BufferOverflow,
        SpliceStat::Resets,
        SpliceStat::Finished,
        SpliceStat::Expired,
        SpliceStat::ToServerPackets,
        SpliceStat::ToServerBytes,
        SpliceStat::ToClientPackets,
        SpliceStat::ToClientBytes,
        SpliceStat::Active,
        SpliceStat::Routed,
        SpliceStat::BadRequests,
        SpliceStat::HeadersTooLarge,
        SpliceStat::FirstRequestTimeouts,
        SpliceStat::RefusedTupleTaken,
        SpliceStat::NatUnsteered,
        SpliceStat::SynsNoBackend,
    ];

    /// Stable snake_case name for ctl and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SpliceStat::SynCookies => "syn_cookies",
            SpliceStat::CookiesValid => "cookies_valid",
            SpliceStat::RefusedFull => "refused_full",
            SpliceStat::RefusedNoBackend => "refused_no_backend",
            SpliceStat::BackendSyns => "backend_syns",
            SpliceStat::BackendRefused => "backend_refused",
            SpliceStat::BackendTimeouts => "backend_timeouts",
            SpliceStat::BackendsExhausted => "backends_exhausted",
            SpliceStat::Established => "established",
            SpliceStat::ReplayedBytes => "replayed_bytes",
            SpliceStat::BufferOverflow => "buffer_overflow_bytes",
            SpliceStat::Resets => "resets",
            SpliceStat::Finished => "finished",
            SpliceStat::Expired => "expired",
            SpliceStat::ToServerPackets => "to_server_packets",
            SpliceStat::ToServerBytes => "to_server_bytes",
            SpliceStat::ToClientPackets => "to_client_packets",
            SpliceStat::ToClientBytes => "to_client_bytes",
            SpliceStat::Active => "active",
            SpliceStat::Routed => "routed",
            SpliceStat::BadRequests => "bad_requests",
            SpliceStat::HeadersTooLarge => "headers_too_large",
            SpliceStat::FirstRequestTimeouts => "first_request_timeouts",
            SpliceStat::RefusedTupleTaken => "refused_tuple_taken",
            SpliceStat::NatUnsteered => "nat_unsteered",
            SpliceStat::SynsNoBackend => "syns_no_backend",
        }
    }
}

/// Buckets of the splice-setup-time histogram: bucket 0 counts setups under 1 µs,
/// bucket i ≥ 1 those of [2^(i−1), 2^i) µs; the last one everything from 2^23 µs (8.4 s).
pub const SETUP_BUCKETS: usize = 25;

/// One lcore's splice counters and setup-time histogram, readable by the control thread
/// without locks (the lcore is the only writer: a relaxed load and store, no locked
/// instruction). Cloning gives another handle on the same cells.
#[derive(Clone, Debug)]
pub struct SpliceCounters(Arc<Cells>);

#[derive(Debug)]
struct Cells {
    /// Per service (in configuration order): every event and gauge.
    stats: Box<[[AtomicU64; SpliceStat::COUNT]]>,
    setup: [AtomicU64; SETUP_BUCKETS],
}

impl Default for SpliceCounters {
    fn default() -> Self {
        SpliceCounters::new(1)
    }
}

/// Add to a cell only the calling lcore writes.
#[inline(always)]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl SpliceCounters {
    /// Counters for `services` services (at least one row).
    pub fn new(services: usize) -> SpliceCounters {
        let stats = (0..services.max(1)).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect();
        SpliceCounters(Arc::new(Cells { stats, setup: std::array::from_fn(|_| AtomicU64::new(0)) }))
    }

    /// Counts `n` of `s` for service `service` (the fast path's one store: no total is
    /// kept, [`get`](Self::get) sums the services).
    #[inline(always)]
    fn add(&self, service: usize, s: SpliceStat, n: u64) {
        if let Some(row) = self.0.stats.get(service) {
            bump(&row[s as usize], n);
        }
    }

    fn set(&self, service: usize, s: SpliceStat, v: u64) {
        if let Some(row) = self.0.stats.get(service) {
            row[s as usize].store(v, Relaxed);
        }
    }

    /// `s` summed over the services.
    pub fn get(&self, s: SpliceStat) -> u64 {
        self.0.stats.iter().map(|row| row[s as usize].load(Relaxed)).sum()
    }

    /// `s` of service `service` (0 beyond the configured services).
    pub fn get_service(&self, service: usize, s: SpliceStat) -> u64 {
        self.0.stats.get(service).map_or(0, |row| row[s as usize].load(Relaxed))
    }

    /// The services counted.
    pub fn services(&self) -> usize {
        self.0.stats.len()
    }

    /// Counts one splice set up in `us` microseconds.
    fn setup_took(&self, us: u64) {
        let i = (64 - us.leading_zeros() as usize).min(SETUP_BUCKETS - 1);
        bump(&self.0.setup[i], 1);
    }

    /// The setup-time histogram (see [`SETUP_BUCKETS`]).
    pub fn setup_buckets(&self) -> [u64; SETUP_BUCKETS] {
        std::array::from_fn(|i| self.0.setup[i].load(Relaxed))
    }
}

/// A handshake toward a backend in progress: what the backend leg's segments need that
/// the entry does not keep, and the client's first bytes.
#[derive(Debug)]
struct Handshake {
    /// The entry's slot; `None` = this handshake slot is free.
    entry: Option<u32>,
    c0: u32,
    a0: u32,
    opts: SynOptions,
    /// The client's TSval on its handshake ACK, when timestamps are on.
    client_tsval: Option<u32>,
    /// The client's window field (in its own shift) on its last segment.
    client_window: u16,
    buf: Vec<u8>,
    /// SYNs sent to the current backend.
    attempts: u32,
    /// Members tried (bit per member index).
    tried: u64,
    /// The lcore's clock when the client's handshake ACK arrived (setup time).
    opened_tsc: u64,
    deadline_ms: u64,
}

/// The role; see the module docs.
pub struct Splice {
    services: Vec<SpliceService>,
    /// Backends per pool (see [`Splice::new`]).
    pools: Vec<SplicePool>,
    /// Per pool and member: this lcore's connections to the backend (least-connections).
    active: Vec<Vec<u32>>,
    /// Per pool: some backend has a share of the current table (refreshed with the tables).
    pool_live: Vec<bool>,
    /// Per pool: it has had a live backend since the start.
    ever_live: Vec<bool>,
    /// Per pool and member: suspect (passed over) until this time (ms).
    suspect: Vec<Vec<u64>>,
    /// Per pool and member: segments and bytes spliced toward the backend; per pool:
    /// connections refused for want of a live backend (`ctl members`).
    member_counters: BalanceCounters,
    vip_addrs: Vec<Ipv4Addr>,
    settings: SpliceSettings,
    local: Vec<LocalAddrs>,
    vip_local: Vec<Option<LocalAddrs>>,
    forward: Option<Forward>,
    tables: Arc<BalanceTables>,
    keys: CookieKeys,
    table: SpliceTable,
    nat: NatPorts,
    handshakes: Vec<Handshake>,
    free_handshakes: Vec<u16>,
    /// Per entry slot: its handshake while connecting.
    handshake_of: Vec<u16>,
    per_service: Vec<u32>,
    counters: SpliceCounters,
    /// The TSC the cached clock values below were computed for.
    clock_tsc: u64,
    now_ms: u64,
    /// `now_ms` in seconds (entries' `last_seen`), kept so the fast path does not divide.
    now_s: u32,
    /// The millisecond of the last timer pass (`Role::tick` does its work once per ms).
    last_tick_ms: u64,
}

impl Splice {
    /// `pools[p]` is pool p, whose selection table is `tables.vips[p]`.
    pub fn new(
        services: Vec<SpliceService>,
        pools: Vec<SplicePool>,
        settings: SpliceSettings,
        keys: CookieKeys,
        tables: Arc<BalanceTables>,
        local: Vec<LocalAddrs>,
        client_ports: &[PortIndex],
        forward_pairs: Option<&[(PortIndex, PortIndex)]>,
    ) -> Result<Splice, SpliceError> {
        for (i, s) in services.iter().enumerate() {
            if local.iter().any(|l| l.owns(s.vip)) {
                return Err(SpliceError::VipIsLocal { service: i });
            }
            if s.ports.is_empty() || s.ports.iter().any(|(lo, hi)| lo > hi) {
                return Err(SpliceError::NoPorts { service: i });
            }
            for pool in std::iter::once(s.rules.default_pool).chain(s.rules.rules.iter().map(|r| r.pool)) {
                if pool >= pools.len() {
                    return Err(SpliceError::NoSuchPool { service: i, pool });
                }
            }
        }
        if let Some(pool) = pools.iter().position(|p| p.backends.len() > 64) {
            return Err(SpliceError::TooManyBackends { pool });
        }
        if settings.worker >= settings.nat.workers() {
            return Err(SpliceError::NoNatPorts);
        }
        let mut vip_addrs: Vec<Ipv4Addr> = Vec::new();
        for s in &services {
            if !vip_addrs.contains(&s.vip) {
                vip_addrs.push(s.vip);
            }
        }
        let mut vip_local = vec![None; local.len()];
        for &p in client_ports {
            let (Some(slot), Some(me)) = (vip_local.get_mut(usize::from(p)), local.get(usize::from(p))) else {
                return Err(SpliceError::NoSuchPort(p));
            };
            *slot = Some(LocalAddrs { mac: me.mac, ipv4: vip_addrs.clone(), punt_udp: None, punt_arp: false });
        }
        let handshakes = (0..settings.handshakes.max(1))
            .map(|_| Handshake {
                entry: None,
                c0: 0,
                a0: 0,
                opts: SynOptions { mss: 536, wscale: None, sack: false },
                client_tsval: None,
                client_window: 0,
                buf: Vec::with_capacity(settings.request_buffer_bytes),
                attempts: 0,
                tried: 0,
                opened_tsc: 0,
                deadline_ms: 0,
            })
            .collect::<Vec<_>>();
        let free_handshakes = (0..handshakes.len() as u16).rev().collect();
        let forward = forward_pairs.map(|pairs| Forward::new(pairs, local.clone()));
        let per_service = vec![0; services.len()];
        let table = SpliceTable::new(settings.capacity);
        let handshake_of = vec![u16::MAX; table.capacity()];
        let (nat_first, nat_last) = settings.nat.slice(settings.worker);
        let nat = NatPorts::new(nat_first, nat_last);
        let now_ms = settings.clock.unix_ms0;
        let suspect = pools.iter().map(|p| vec![0; p.backends.len()]).collect();
        let active = pools.iter().map(|p| vec![0; p.backends.len()]).collect();
        let member_counters = BalanceCounters::for_members(&pools.iter().map(|p| p.backends.len()).collect::<Vec<_>>());
        let (pool_live, ever_live) = (vec![false; pools.len()], vec![false; pools.len()]);
        let mut role = Splice {
            services,
            pools,
            active,
            pool_live,
            ever_live,
            suspect,
            member_counters,
            vip_addrs,
            settings,
            local,
            vip_local,
            forward,
            tables,
            keys,
            table,
            nat,
            handshakes,
            free_handshakes,
            handshake_of,
            counters: SpliceCounters::new(per_service.len()),
            per_service,
            clock_tsc: 0,
            now_ms,
            now_s: (now_ms / 1000) as u32,
            last_tick_ms: 0,
        };
        role.refresh_live();
        Ok(role)
    }

    /// Which pools have a live backend in the current tables, and which have had one since
    /// the start (read by every SYN: see [`Splice::has_backend`]). In place: no allocation
    /// on the worker.
    fn refresh_live(&mut self) {
        for (p, (live, ever)) in self.pool_live.iter_mut().zip(self.ever_live.iter_mut()).enumerate() {
            *live = self.tables.vips.get(p).and_then(Option::as_ref).is_some_and(|t| t.table().shares().iter().any(|&s| s > 0));
            *ever |= *live;
        }
    }

    /// Whether a SYN to `service` on `port` without a live backend may be answered with a
    /// RST: once a pool the connection could reach has had a live backend, or the start-up
    /// grace ([`STARTUP_GRACE_MS`]) is over (a restart during an outage must not leave
    /// clients retrying for minutes). Before that the SYN is dropped, so that the client's
    /// retransmission finds the backends resolved.
    fn may_refuse(&self, service: usize, port: u16) -> bool {
        let Some(svc) = self.services.get(service) else { return true };
        self.now_ms >= self.settings.clock.unix_ms0.saturating_add(STARTUP_GRACE_MS) || svc.rules.candidate_pools(port).any(|p| self.ever_live.get(p).copied().unwrap_or(false))
    }
    pub fn counters(&self) -> SpliceCounters {
        self.counters.clone()
    }

    /// Benchmarks: puts `n` synthetic established connections ([`crate::splice::synthetic`])
    /// of the first service, to the first backend of its default pool, in the table,
    /// taking the NAT ports from the start of this lcore's range so that connection i has
    /// port `nat_first + i`; returns how many it added.
    pub fn preload_synthetic(&mut self, layout: &crate::splice::synthetic::Layout, n: usize) -> usize {
        let now_s = self.now_s();
        let pool = self.services.first().map_or(0, |s| s.rules.default_pool);
        let mut added = 0;
        for i in 0..n.min(crate::splice::synthetic::MAX_CONNECTIONS) {
            let Some(port) = self.nat.take() else { break };
            let mut e = crate::splice::synthetic::entry(layout, i, now_s);
            e.nat.port = port;
            (e.pool, e.member) = (pool as u16, 0);
            if self.table.insert(e).is_none() {
                self.nat.give_back(port);
                break;
            }
            if let Some(c) = self.per_service.get_mut(0) {
                *c += 1;
            }
            if let Some(c) = self.active.get_mut(pool).and_then(|a| a.first_mut()) {
                *c += 1;
                self.member_counters.set_connections(pool, 0, u64::from(*c));
            }
            added += 1;
        }
        added
    }

    /// Another handle on this lcore's per-backend counters (by pool, then member).
    pub fn member_counters(&self) -> BalanceCounters {
        self.member_counters.clone()
    }

    /// The connection table (for tests and the operator view).
    pub fn table(&self) -> &SpliceTable {
        &self.table
    }

    fn tick_clock(&mut self, tsc: u64) {
        if tsc != self.clock_tsc {
            self.clock_tsc = tsc;
            self.now_ms = self.settings.clock.unix_ms(tsc);
            self.now_s = (self.now_ms / 1000) as u32;
        }
    }

    #[inline(always)]
    fn now_s(&self) -> u32 {
        self.now_s
    }

    /// Our timestamp clock (milliseconds).
    fn ts_now(&self) -> u32 {
        self.now_ms as u32
    }

    fn service_for(&self, vip: Ipv4Addr, port: u16) -> Option<usize> {
        self.services.iter().position(|s| s.vip == vip && s.covers(port))
    }

    fn other(&mut self, ingress: PortIndex, frame: &mut [u8], ctx: &mut Ctx<'_>) -> Verdict {
        if let Some((et, l3)) = Ethernet::parse(&*frame).ok().map(|e| (e.ethertype(), e.l3_offset())) {
            let to_vip = et == ethertype::IPV4
                && frame.get(l3 + 16..l3 + 20).is_some_and(|d| self.vip_addrs.contains(&Ipv4Addr::new(d[0], d[1], d[2], d[3])));
            if et == ethertype::ARP || to_vip {
                // ARP requests for a VIP and pings of it are answered on client ports;
                // other ARP goes on as usual, other traffic to a VIP is not ours to pass.
                if let Some(Some(me)) = self.vip_local.get(usize::from(ingress)) {
                    if answer_local(frame, me) == LocalVerdict::Replied {
                        return Verdict::Reply;
                    }
                }
                if to_vip {
                    return Verdict::Drop(DropReason::NotVip);
                }
            }
        }
        forward_or_answer(self.forward.as_mut(), &self.local, ingress, frame, ctx)
    }

    /// A segment on the backend leg of `e` (our NAT end to the backend), or on its client
    /// leg (the VIP to the client); `None` when the port has no local entry.
    fn leg_segment(&self, e: &Entry, dir: Direction, seq: u32, ack: u32, flags: u8, window: u16) -> Option<Tcp4Segment> {
        let (port, dst_mac, src, dst) = match dir {
            Direction::ToServer => (e.backend_port(), e.backend_mac, e.nat, e.backend),
            Direction::ToClient => (e.client_port(), e.client_mac, e.vip, e.client),
        };
        let me = self.local.get(usize::from(port))?;
        Some(Tcp4Segment { src_mac: me.mac, dst_mac, src: src.addr, dst: dst.addr, sport: src.port, dport: dst.port, seq, ack, flags, window, ip_id: 0 })
    }

    /// Writes a segment into a fresh frame on `port`.
    fn send(&self, port: PortIndex, seg: &Tcp4Segment, opts: &[u8], payload: &[u8], ctx: &mut Ctx<'_>) -> bool {
        let len = crate::packet::build::TCP4_HEADERS + opts.len() + payload.len();
        match ctx.emit(port, len) {
            Some(buf) => tcp4(buf, seg, opts, payload).is_some(),
            None => false,
        }
    }

    /// A RST for the segment `tcp` (from `from` to `to`, arrived on `port` from `mac`):
    /// RFC 793's reset generation (seq = its ack when it has one, else ack its end).
    fn reset(&self, port: PortIndex, mac: [u8; 6], from: Endpoint, to: Endpoint, tcp: &Tcp<&[u8]>, ctx: &mut Ctx<'_>) {
        let Some(me) = self.local.get(usize::from(port)) else { return };
        let (seq, ack, fl) = if tcp.ack_flag() {
            (tcp.ack(), 0, flags::RST)
        } else {
            let len = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
            (0, tcp.seq().wrapping_add(len), flags::RST | flags::ACK)
        };
        let seg = Tcp4Segment { src_mac: me.mac, dst_mac: mac, src: to.addr, dst: from.addr, sport: to.port, dport: from.port, seq, ack, flags: fl, window: 0, ip_id: 0 };
        self.send(port, &seg, &[], &[], ctx);
    }

    fn syn_ack(&mut self, ingress: PortIndex, frame: &[u8], service: usize, t: &Tuple, tcp: &Tcp<&[u8]>, ctx: &mut Ctx<'_>) -> Verdict {
        let Some(me) = self.local.get(usize::from(ingress)) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let offer = match SynOffer::parse(tcp.option_bytes()) {
            Ok(o) => o,
            Err(r) => return Verdict::Drop(r),
        };
        let c0 = tcp.seq();
        let offered = SynOptions { mss: offer.mss.unwrap_or(536), wscale: offer.wscale, sack: offer.sack };
        let (isn, _) = cookie::make(&self.keys, t, c0, offered, cookie::slot_of(self.now_ms / 1000));
        let reply = SynOffer {
            mss: Some(self.settings.mss),
            wscale: offer.wscale.map(|_| self.settings.wscale),
            sack: offer.sack,
            ts: offer.ts.map(|(tsval, _)| (self.ts_now(), tsval)),
        };
        let mut opts = [0u8; SYN_OPTIONS_MAX];
        let n = write_syn_options(&mut opts, &reply);
        let seg = Tcp4Segment {
            src_mac: me.mac,
            dst_mac: mac_at(frame, 6),
            src: t.vip,
            dst: t.client,
            sport: t.vip_port,
            dport: t.client_port,
            seq: isn,
            ack: c0.wrapping_add(1),
            flags: flags::SYN | flags::ACK,
            window: u16::MAX,
            ip_id: 0,
        };
        if self.send(ingress, &seg, &opts[..n], &[], ctx) {
            self.counters.add(service, SpliceStat::SynCookies, 1);
        }
        Verdict::Consumed
    }

    /// The handshake's last ACK from `t` (no entry yet): validate, choose a backend, open
    /// the backend leg.
    fn open(&mut self, ingress: PortIndex, frame: &[u8], service: usize, t: &Tuple, tcp: &Tcp<&[u8]>, ctx: &mut Ctx<'_>) -> Verdict {
        let c0 = tcp.seq().wrapping_sub(1);
        let a0 = tcp.ack().wrapping_sub(1);
        let slot = cookie::slot_of(self.now_ms / 1000);
        let Some(opts) = cookie::check(&self.keys, t, c0, a0, slot) else {
            return Verdict::Drop(DropReason::BadCookie);
        };
        self.counters.add(service, SpliceStat::CookiesValid, 1);
        let client = Endpoint { addr: t.client, port: t.client_port };
        let vip = Endpoint { addr: t.vip, port: t.vip_port };
        let client_mac = mac_at(frame, 6);
        let svc = &self.services[service];
        let transparent = svc.transparent;
        let full = self.per_service[service] >= svc.max_connections || self.free_handshakes.is_empty() || (!transparent && self.nat.available() == 0) || self.table.len() >= self.table.capacity();
        if full {
            self.counters.add(service, SpliceStat::RefusedFull, 1);
            self.reset(ingress, client_mac, client, vip, tcp, ctx);
            return Verdict::Drop(DropReason::SpliceFull);
        }
        // Transparent: the client's own port on the backend leg, none of ours.
        let nat_port = if transparent {
            client.port
        } else {
            let Some(port) = self.nat.take() else {
                return Verdict::Drop(DropReason::SpliceFull);
            };
            port
        };
        let ts = timestamps(tcp);
        let unset = Endpoint { addr: Ipv4Addr::UNSPECIFIED, port: 0 };
        let entry = Entry {
            client,
            vip,
            backend: unset,
            nat: Endpoint { addr: Ipv4Addr::UNSPECIFIED, port: nat_port },
            delta: 0,
            ts_delta: 0,
            ws_server: 0,
            ws_promised: if opts.wscale.is_some() { self.settings.wscale } else { 0 },
            flags: if ts.is_some() { flag::TS } else { 0 } | if transparent { flag::TRANSPARENT } else { 0 },
            state: State::Routing,
            service: service as u16,
            pool: 0,
            member: 0,
            client_mac,
            client_if: ingress as u8,
            backend_if: 0,
            backend_mac: [0; 6],
            last_seen: self.now_s(),
        };
        let Some(slot) = self.table.insert_client(entry) else {
            if !transparent {
                self.nat.give_back(nat_port);
            }
            self.counters.add(service, SpliceStat::RefusedFull, 1);
            self.reset(ingress, client_mac, client, vip, tcp, ctx);
            return Verdict::Drop(DropReason::SpliceFull);
        };
        self.per_service[service] += 1;
        let h = self.free_handshakes.pop().expect("checked above");
        self.handshake_of[slot as usize] = h;
        let first_request_ms = u64::from(svc.first_request_ms);
        let hs = &mut self.handshakes[usize::from(h)];
        hs.entry = Some(slot);
        hs.c0 = c0;
        hs.a0 = a0;
        hs.opts = opts;
        hs.client_tsval = ts.map(|(v, _)| v);
        hs.client_window = tcp.window();
        hs.buf.clear();
        hs.attempts = 0;
        hs.tried = 0;
        hs.opened_tsc = ctx.tsc();
        hs.deadline_ms = self.now_ms + first_request_ms;
        self.keep_request_bytes(h, tcp);
        self.route(slot, ctx);
        Verdict::Consumed
    }

    /// A connection still routing: decide its pool from what the client sent so far, and
    /// connect when decided. A malformed request, or a header block that does not fit the
    /// buffer, is answered with a RST.
    fn route(&mut self, slot: u32, ctx: &mut Ctx<'_>) {
        let h = self.handshake_of[slot as usize];
        let Some(e) = self.table.get(slot).copied() else { return };
        let hs = &self.handshakes[usize::from(h)];
        let rules = &self.services[usize::from(e.service)].rules;
        let why = match rules.decide(e.vip.port, &hs.buf) {
            Decision::Pool(pool) => {
                if rules.needs_request() {
                    self.counters.add(usize::from(e.service), SpliceStat::Routed, 1);
                }
                return self.connect(slot, pool, ctx);
            }
            Decision::NeedMore if hs.buf.len() < self.settings.request_buffer_bytes => return,
            Decision::NeedMore => SpliceStat::HeadersTooLarge,
            Decision::Malformed => SpliceStat::BadRequests,
        };
        self.counters.add(usize::from(e.service), why, 1);
        self.reset_client(&e, h, ctx);
        self.drop_entry(slot);
    }

    /// Chooses a backend of `pool` for the connection in `slot` and sends it the SYN; with
    /// no live backend the client gets a RST.
    fn connect(&mut self, slot: u32, pool: usize, ctx: &mut Ctx<'_>) {
        let h = self.handshake_of[slot as usize];
        let Some(e) = self.table.get(slot).copied() else { return };
        let t = Tuple { client: e.client.addr, client_port: e.client.port, vip: e.vip.addr, vip_port: e.vip.port };
        match self.pick(pool, client_hash(self.settings.seed, &t), 0) {
            Some((member, m)) if self.attach_backend(slot, pool, member, m) => {
                let connect_ms = u64::from(self.services[usize::from(e.service)].connect_ms);
                let hs = &mut self.handshakes[usize::from(h)];
                hs.attempts = 1;
                hs.tried = 1u64 << member;
                hs.deadline_ms = self.now_ms + connect_ms;
                self.backend_syn(h, ctx);
            }
            picked => {
                if picked.is_some() {
                    // A backend was there; its leg's tuple was not (see `attach_backend`).
                    self.counters.add(usize::from(e.service), SpliceStat::RefusedTupleTaken, 1);
                    ctx.counters.drops.count(DropReason::SpliceFull);
                } else {
                    self.counters.add(usize::from(e.service), SpliceStat::RefusedNoBackend, 1);
                    self.member_counters.count_no_member(pool);
                    ctx.counters.drops.count(DropReason::NoMember);
                }
                self.reset_client(&e, h, ctx);
                self.drop_entry(slot);
            }
        }
    }

    /// Whether some pool that a connection to `service` on `port` may be routed to has a
    /// live backend (one with a share of its selection table; suspects count: they are
    /// tried when nothing else is left).
    fn has_backend(&self, service: usize, port: u16) -> bool {
        let Some(svc) = self.services.get(service) else { return false };
        svc.rules.candidate_pools(port).any(|p| self.pool_live.get(p).copied().unwrap_or(false))
    }

    /// The backend for hash `hash` in `pool`: the table's choice unless it was tried or is
    /// suspect, else the next live one in member order (suspects only when nothing else is
    /// left); never one in `tried`.
    fn pick(&self, pool: usize, hash: u64, tried: u64) -> Option<(u16, MemberEntry)> {
        let tab = self.tables.vips.get(pool).and_then(Option::as_ref)?;
        let now = self.now_ms;
        let suspect = |i: usize| self.suspect.get(pool).and_then(|s| s.get(i)).is_some_and(|&until| until > now);
        let live = |i: usize| tried & (1u64 << i) == 0 && tab.table().shares().get(i).is_some_and(|&s| s > 0);
        let (first, _) = tab.select_hash(hash)?;
        let n = tab.members().len();
        let order = (0..n).map(|k| (usize::from(first) + k) % n);
        let i = if self.pools.get(pool).is_some_and(|p| p.least_connections) {
            // Fewest connections per unit of weight (the member's table share); ties go
            // to the first in hash order, so equal backends share new clients evenly.
            let active = |i: usize| u64::from(self.active.get(pool).and_then(|a| a.get(i)).copied().unwrap_or(0));
            let share = |i: usize| u64::from(tab.table().shares().get(i).copied().unwrap_or(0)).max(1);
            let least = |ok: &dyn Fn(usize) -> bool| order.clone().filter(|&i| ok(i)).min_by(|&a, &b| (active(a) * share(b)).cmp(&(active(b) * share(a))));
            least(&|i| live(i) && !suspect(i)).or_else(|| least(&|i| live(i)))?
        } else {
            order.clone().find(|&i| live(i) && !suspect(i)).or_else(|| order.clone().find(|&i| live(i)))?
        };
        Some((i as u16, tab.members()[i]))
    }

    /// Points the entry in `slot` at `member` of `pool` (its backend leg key, MAC, port and
    /// our address on that port); false when that cannot be (no address on the port, the
    /// tuple taken).
    fn attach_backend(&mut self, slot: u32, pool: usize, member: u16, m: MemberEntry) -> bool {
        let Some(e) = self.table.get(slot).copied() else { return false };
        let Some(&(addr, port)) = self.pools.get(pool).and_then(|p| p.backends.get(usize::from(member))) else { return false };
        let backend = Endpoint { addr, port: port.unwrap_or(e.vip.port) };
        let (source, swapped) = if e.flags & flag::TRANSPARENT != 0 {
            (e.client, None)
        } else {
            let Some(nat_addr) = self.local.get(usize::from(m.port)).and_then(|l| l.ipv4.first().copied()) else { return false };
            // A NAT port whose reply the port's RSS brings back here (a fresh one when the
            // current one's reply would land on another lcore's queue).
            let mut port = e.nat.port;
            let mut swapped = None;
            if let Some(steer) = self.settings.rss.get(usize::from(m.port)).and_then(Option::as_ref) {
                let mine = |p: u16| steer.reply_is_mine(backend.addr, backend.port, nat_addr, p);
                if !mine(port) {
                    match self.nat.take_where(NAT_STEER_TRIES, mine) {
                        Some(p) => {
                            swapped = Some(port);
                            port = p;
                        }
                        None => self.counters.add(usize::from(e.service), SpliceStat::NatUnsteered, 1),
                    }
                }
            }
            (Endpoint { addr: nat_addr, port }, swapped)
        };
        if !self.table.set_backend(slot, backend, source) {
            if swapped.is_some() {
                self.nat.give_back(source.port);
            }
            return false;
        }
        if let Some(old) = swapped {
            self.nat.give_back(old);
        }
        if e.state != State::Routing {
            self.release_backend(&e);
        }
        if let Some((e, _)) = self.table.get_mut(slot) {
            e.state = State::Connecting;
            e.pool = pool as u16;
            e.member = member;
            e.backend_if = m.port as u8;
            e.backend_mac = m.mac;
        }
        if let Some(n) = self.active.get_mut(pool).and_then(|a| a.get_mut(usize::from(member))) {
            *n += 1;
            self.member_counters.set_connections(pool, member, u64::from(*n));
        }
        true
    }

    /// Gives back what a connection removed from the table held: its NAT port, its place
    /// in its service's count and its backend's.
    fn forget(&mut self, e: &Entry) {
        if e.flags & flag::TRANSPARENT == 0 {
            self.nat.give_back(e.nat.port);
        }
        self.release_backend(e);
        if let Some(n) = self.per_service.get_mut(usize::from(e.service)) {
            *n = n.saturating_sub(1);
        }
    }

    /// The connection `e` no longer counts toward its backend (least-connections).
    fn release_backend(&mut self, e: &Entry) {
        if e.state == State::Routing {
            return;
        }
        if let Some(n) = self.active.get_mut(usize::from(e.pool)).and_then(|a| a.get_mut(usize::from(e.member))) {
            *n = n.saturating_sub(1);
            self.member_counters.set_connections(usize::from(e.pool), e.member, u64::from(*n));
        }
    }

    /// Appends the in-order part of `tcp`'s payload to the handshake's buffer.
    fn keep_request_bytes(&mut self, h: u16, tcp: &Tcp<&[u8]>) {
        let hs = &mut self.handshakes[usize::from(h)];
        let payload = tcp.payload();
        if payload.is_empty() {
            return;
        }
        let have = hs.buf.len();
        // Offset of this segment in the request stream (seq c0 + 1 is byte 0).
        let off = tcp.seq().wrapping_sub(hs.c0.wrapping_add(1)) as usize;
        if off > have || off + payload.len() <= have {
            return; // a gap (C will retransmit) or nothing new
        }
        let new = &payload[have - off..];
        let room = self.settings.request_buffer_bytes.saturating_sub(have);
        let take = new.len().min(room);
        hs.buf.extend_from_slice(&new[..take]);
        if take < new.len() {
            let lost = (new.len() - take) as u64;
            let service = hs.entry.and_then(|s| self.table.get(s)).map_or(0, |e| usize::from(e.service));
            self.counters.add(service, SpliceStat::BufferOverflow, lost);
        }
        hs.client_window = tcp.window();
    }

    fn backend_syn(&mut self, h: u16, ctx: &mut Ctx<'_>) {
        let hs = &self.handshakes[usize::from(h)];
        let Some(e) = hs.entry.and_then(|s| self.table.get(s)) else { return };
        let offer = SynOffer {
            mss: Some(hs.opts.mss.min(self.settings.mss)),
            wscale: hs.opts.wscale,
            sack: hs.opts.sack,
            ts: hs.client_tsval.map(|v| (v, 0)),
        };
        let mut opts = [0u8; SYN_OPTIONS_MAX];
        let n = write_syn_options(&mut opts, &offer);
        // A SYN's window is never scaled: the client's, unscaled, capped.
        let shift = hs.opts.wscale.unwrap_or(0);
        let window = (u32::from(hs.client_window) << shift).min(u32::from(u16::MAX)) as u16;
        let Some(seg) = self.leg_segment(e, Direction::ToServer, hs.c0, 0, flags::SYN, window) else { return };
        if self.send(e.backend_port(), &seg, &opts[..n], &[], ctx) {
            self.counters.add(usize::from(e.service), SpliceStat::BackendSyns, 1);
        }
    }

    /// The backend's SYN-ACK: the splice is set up and the request replayed.
    fn established(&mut self, slot: u32, tcp: &Tcp<&[u8]>, ctx: &mut Ctx<'_>) {
        let h = self.handshake_of[slot as usize];
        let offer = SynOffer::parse(tcp.option_bytes()).unwrap_or_default();
        let s0 = tcp.seq();
        let ts_now = self.ts_now();
        let (a0, c0, client_tsval, window, scaling) = {
            let hs = &self.handshakes[usize::from(h)];
            (hs.a0, hs.c0, hs.client_tsval, hs.client_window, hs.opts.wscale.is_some())
        };
        let Some((e, _)) = self.table.get_mut(slot) else { return };
        e.delta = a0.wrapping_sub(s0);
        // Scaling is on only if we offered it (the client did) and the backend answered.
        e.ws_server = if scaling { offer.wscale.unwrap_or(0) } else { 0 };
        match offer.ts {
            Some((s_tsval, _)) if e.flags & flag::TS != 0 => e.ts_delta = ts_now.wrapping_sub(s_tsval),
            _ => e.flags &= !flag::TS,
        }
        e.state = State::Established;
        let e = *e;
        let s_tsval = offer.ts.map(|(v, _)| v).unwrap_or(0);
        let mss = usize::from(offer.mss.unwrap_or(536).clamp(64, self.settings.mss));
        let Some(mut seg) = self.leg_segment(&e, Direction::ToServer, c0.wrapping_add(1), s0.wrapping_add(1), flags::ACK, window) else { return };
        let ts_opt = |buf: &mut [u8; 12]| -> usize {
            match client_tsval {
                Some(v) if e.flags & flag::TS != 0 => {
                    buf[..2].copy_from_slice(&[1, 1]);
                    TcpOption::Timestamps { tsval: v, tsecr: s_tsval }.emit(&mut buf[2..]).map_or(0, |n| n + 2)
                }
                _ => 0,
            }
        };
        let mut opts = [0u8; 12];
        let n = ts_opt(&mut opts);
        let buf = std::mem::take(&mut self.handshakes[usize::from(h)].buf);
        if buf.is_empty() {
            self.send(e.backend_port(), &seg, &opts[..n], &[], ctx);
        } else {
            let chunks = buf.len().div_ceil(mss);
            for (i, chunk) in buf.chunks(mss).enumerate() {
                if i + 1 == chunks {
                    seg.flags |= flags::PSH;
                }
                self.send(e.backend_port(), &seg, &opts[..n], chunk, ctx);
                seg.seq = seg.seq.wrapping_add(chunk.len() as u32);
            }
            self.counters.add(usize::from(e.service), SpliceStat::ReplayedBytes, buf.len() as u64);
        }
        let opened = self.handshakes[usize::from(h)].opened_tsc;
        self.handshakes[usize::from(h)].buf = buf;
        self.release_handshake(slot);
        self.counters.add(usize::from(e.service), SpliceStat::Established, 1);
        let hz = u128::from(self.settings.clock.tsc_hz.max(1));
        self.counters.setup_took((u128::from(ctx.tsc().saturating_sub(opened)) * 1_000_000 / hz) as u64);
    }

    fn release_handshake(&mut self, slot: u32) {
        let h = std::mem::replace(&mut self.handshake_of[slot as usize], u16::MAX);
        if let Some(hs) = self.handshakes.get_mut(usize::from(h)) {
            hs.entry = None;
            hs.buf.clear();
            self.free_handshakes.push(h);
        }
    }

    /// Removes a connection and gives back what it held.
    fn drop_entry(&mut self, slot: u32) {
        if self.handshake_of[slot as usize] != u16::MAX {
            self.release_handshake(slot);
        }
        if let Some(e) = self.table.remove(slot) {
            self.forget(&e);
        }
    }

    /// The current backend failed (`why`): it is suspect for [`SUSPECT_MS`]; try the next
    /// live one, or give up and reset the client.
    fn next_backend(&mut self, slot: u32, why: SpliceStat, ctx: &mut Ctx<'_>) {
        let h = self.handshake_of[slot as usize];
        let Some(e) = self.table.get(slot).copied() else { return };
        self.counters.add(usize::from(e.service), why, 1);
        let (pool, failed) = (usize::from(e.pool), usize::from(e.member));
        if let Some(until) = self.suspect.get_mut(pool).and_then(|s| s.get_mut(failed)) {
            *until = self.now_ms + SUSPECT_MS;
        }
        let tried = self.handshakes[usize::from(h)].tried;
        // The next member after the failed one (its hash is as good as any).
        let next = self.tables.vips.get(pool).and_then(Option::as_ref).map(|t| t.members().len()).filter(|&n| n > 0).and_then(|n| {
            (1..=n).map(|k| (failed + k) % n).find_map(|i| self.pick_exact(pool, i, tried))
        });
        match next {
            Some((member, m)) if self.attach_backend(slot, pool, member, m) => {
                let connect_ms = u64::from(self.services[usize::from(e.service)].connect_ms);
                let hs = &mut self.handshakes[usize::from(h)];
                hs.tried |= 1u64 << member;
                hs.attempts = 1;
                hs.deadline_ms = self.now_ms + connect_ms;
                self.backend_syn(h, ctx);
            }
            _ => {
                self.counters.add(usize::from(e.service), SpliceStat::BackendsExhausted, 1);
                self.reset_client(&e, h, ctx);
                self.drop_entry(slot);
            }
        }
    }

    /// Member `i` of `pool` if it is live (has slots) and not in `tried`.
    fn pick_exact(&self, pool: usize, i: usize, tried: u64) -> Option<(u16, MemberEntry)> {
        let tab = self.tables.vips.get(pool).and_then(Option::as_ref)?;
        let ok = tried & (1u64 << i) == 0 && tab.table().shares().get(i).is_some_and(|&s| s > 0);
        ok.then(|| (i as u16, tab.members()[i]))
    }

    /// A RST to the client of a connection still connecting (the backend leg failed).
    fn reset_client(&self, e: &Entry, h: u16, ctx: &mut Ctx<'_>) {
        let hs = &self.handshakes[usize::from(h)];
        let ack = hs.c0.wrapping_add(1).wrapping_add(hs.buf.len() as u32);
        if let Some(seg) = self.leg_segment(e, Direction::ToClient, hs.a0.wrapping_add(1), ack, flags::RST | flags::ACK, 0) {
            self.send(e.client_port(), &seg, &[], &[], ctx);
        }
    }

    /// A segment from a client to a spliced service.
    /// `found`: the connection the table holds for the tuple and its state, if any.
    fn from_client(&mut self, ingress: PortIndex, frame: &mut [u8], service: usize, found: Option<(u32, State)>, t: Tuple, ctx: &mut Ctx<'_>) -> Verdict {
        let ip_end = 14 + usize::from(u16::from_be_bytes([frame[16], frame[17]]));
        let fl = frame[34 + 13];
        let syn_only = fl & (flags::SYN | flags::ACK | flags::RST) == flags::SYN;
        if let Some((slot, st)) = found {
            let setting_up = matches!(st, State::Routing | State::Connecting);
            if syn_only && !setting_up {
                // A new connection on a tuple whose old one we still hold: the old one is
                // over for the client.
                self.drop_entry(slot);
            } else if setting_up {
                if fl & flags::RST != 0 {
                    self.drop_entry(slot);
                    self.counters.add(service, SpliceStat::Resets, 1);
                } else {
                    let tcp = Tcp::new_unchecked(&frame[34..ip_end]);
                    let h = self.handshake_of[slot as usize];
                    self.keep_request_bytes(h, &tcp);
                    if st == State::Routing {
                        self.route(slot, ctx);
                    }
                }
                return Verdict::Consumed;
            } else {
                return self.splice(slot, frame, ip_end, Direction::ToServer, fl);
            }
        }
        let f: &[u8] = frame;
        let tcp = Tcp::new_unchecked(&f[34..ip_end]);
        if syn_only {
            if !self.has_backend(service, t.vip_port) {
                // A handshake answered now would end in a RST once the client's ACK finds
                // no backend. At start-up (see `may_refuse`) the SYN is dropped, so that
                // the client's retransmission is taken once the backends are resolved;
                // afterwards the service's `no_backend` decides.
                self.counters.add(service, SpliceStat::SynsNoBackend, 1);
                if let Some(pool) = self.services[service].rules.candidate_pools(t.vip_port).next() {
                    self.member_counters.count_no_member(pool);
                }
                if self.services[service].reset_without_backend && self.may_refuse(service, t.vip_port) {
                    let client = Endpoint { addr: t.client, port: t.client_port };
                    let vip = Endpoint { addr: t.vip, port: t.vip_port };
                    self.reset(ingress, mac_at(f, 6), client, vip, &tcp, ctx);
                }
                return Verdict::Drop(DropReason::NoMember);
            }
            return self.syn_ack(ingress, f, service, &t, &tcp, ctx);
        }
        if fl & (flags::SYN | flags::RST | flags::ACK) == flags::ACK {
            return self.open(ingress, f, service, &t, &tcp, ctx);
        }
        Verdict::Drop(DropReason::NoSplice)
    }

    /// A segment from a backend to one of our NAT addresses.
    fn from_backend(&mut self, slot: u32, frame: &mut [u8], ctx: &mut Ctx<'_>) -> Verdict {
        let ip_end = 14 + usize::from(u16::from_be_bytes([frame[16], frame[17]]));
        let Some(e) = self.table.get(slot).copied() else {
            return Verdict::Drop(DropReason::NoSplice);
        };
        let fl = frame[34 + 13];
        if e.state != State::Connecting {
            if fl & (flags::SYN | flags::ACK | flags::RST) == flags::SYN | flags::ACK {
                // A retransmitted SYN-ACK: our ACK and replay were lost (or are late).
                // Acknowledge it again so the backend's handshake completes now instead of
                // at the client's next retransmission; the client retransmits the bytes.
                self.ack_synack(&e, frame, ip_end, ctx);
                return Verdict::Consumed;
            }
            return self.splice(slot, frame, ip_end, Direction::ToClient, fl);
        }
        let h = self.handshake_of[slot as usize];
        let c0 = self.handshakes[usize::from(h)].c0;
        let f: &[u8] = frame;
        let tcp = Tcp::new_unchecked(&f[34..ip_end]);
        if tcp.ack_flag() && tcp.ack() == c0.wrapping_add(1) {
            if fl & (flags::SYN | flags::RST) == flags::SYN {
                self.established(slot, &tcp, ctx);
                return Verdict::Consumed;
            }
            if fl & flags::RST != 0 {
                self.next_backend(slot, SpliceStat::BackendRefused, ctx);
                return Verdict::Consumed;
            }
        }
        Verdict::Drop(DropReason::NoSplice)
    }

    /// A pure ACK of the backend's (retransmitted) SYN-ACK in `frame`: seq = its ack,
    /// ack = its seq + 1. Without timestamps: any TSval we made up could be newer than the
    /// client's clock and make the backend's PAWS drop the client's later segments, and a
    /// segment without the option is accepted. The window is a modest placeholder (in the
    /// client's shift) until the client's next segment carries its own.
    fn ack_synack(&self, e: &Entry, frame: &[u8], ip_end: usize, ctx: &mut Ctx<'_>) {
        let tcp = Tcp::new_unchecked(&frame[34..ip_end]);
        if let Some(seg) = self.leg_segment(e, Direction::ToServer, tcp.ack(), tcp.seq().wrapping_add(1), flags::ACK, u16::MAX >> 4) {
            self.send(e.backend_port(), &seg, &[], &[], ctx);
        }
    }

    /// Rewrites a segment of an established (or closing) splice for the other leg.
    fn splice(&mut self, slot: u32, frame: &mut [u8], ip_end: usize, dir: Direction, fl: u8) -> Verdict {
        let now_s = self.now_s();
        let Some((e, traffic)) = self.table.get_mut(slot) else {
            return Verdict::Drop(DropReason::NoSplice);
        };
        let (src, dst, out, src_mac, dst_mac) = match dir {
            Direction::ToServer => (e.nat, e.backend, e.backend_port(), e.backend_if, e.backend_mac),
            Direction::ToClient => (e.vip, e.client, e.client_port(), e.client_if, e.client_mac),
        };
        let Some(me) = self.local.get(usize::from(src_mac)) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if let Err(r) = rewrite(&mut frame[14..ip_end], dir, src, dst, &e.offsets()) {
            return Verdict::Drop(r);
        }
        frame[0..6].copy_from_slice(&dst_mac);
        frame[6..12].copy_from_slice(&me.mac);
        e.last_seen = now_s;
        let bytes = frame.len() as u64;
        let (pk, by) = match dir {
            Direction::ToServer => {
                traffic.to_server += bytes;
                self.member_counters.count_member(usize::from(e.pool), e.member, frame.len());
                (SpliceStat::ToServerPackets, SpliceStat::ToServerBytes)
            }
            Direction::ToClient => {
                traffic.to_client += bytes;
                (SpliceStat::ToClientPackets, SpliceStat::ToClientBytes)
            }
        };
        let service = usize::from(e.service);
        if fl & flags::RST != 0 && e.state != State::Closed {
            e.state = State::Closed;
            self.counters.add(service, SpliceStat::Resets, 1);
        } else if fl & flags::FIN != 0 {
            e.flags |= if dir == Direction::ToServer { flag::FIN_CLIENT } else { flag::FIN_SERVER };
            if e.flags & (flag::FIN_CLIENT | flag::FIN_SERVER) == flag::FIN_CLIENT | flag::FIN_SERVER && e.state != State::Closed {
                e.state = State::Closed;
                self.counters.add(service, SpliceStat::Finished, 1);
            }
        }
        self.counters.add(service, pk, 1);
        self.counters.add(service, by, bytes);
        Verdict::Tx(out)
    }
}

/// The source MAC (or any 6 bytes) of a frame at `at`.
fn mac_at(frame: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0; 6];
    m.copy_from_slice(&frame[at..at + 6]);
    m
}

/// The timestamps option of a segment.
fn timestamps(tcp: &Tcp<&[u8]>) -> Option<(u32, u32)> {
    tcp.options().find_map(|o| match o {
        TcpOption::Timestamps { tsval, tsecr } => Some((tsval, tsecr)),
        _ => None,
    })
}

/// The backend choice's hash of a client (address and port), seeded per rack.
fn client_hash(seed: u64, t: &Tuple) -> u64 {
    let mut x = seed ^ (u64::from(u32::from(t.client)) << 16 | u64::from(t.client_port));
    // splitmix64's finaliser: every input bit moves every output bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Role for Splice {
    type Update = SpliceUpdate;

    fn name(&self) -> &'static str {
        "splice"
    }

    fn handle(&mut self, ingress: PortIndex, frame: &mut [u8], ctx: &mut Ctx<'_>) -> Verdict {
        self.tick_clock(ctx.now_tsc);
        if let Some(f) = fast_v4(frame).filter(|f| f.protocol == ip_proto::TCP) {
            // One lookup tells a spliced connection's segment (either leg) from the rest.
            let key = LegKey { remote: f.src, local: f.dst, remote_port: f.src_port, local_port: f.dst_port };
            let t = Tuple { client: f.src, client_port: f.src_port, vip: f.dst, vip_port: f.dst_port };
            let found = self.table.find(&key);
            if let Some((slot, leg)) = found {
                // The common segment, either way: a splice past its set-up, and no SYN
                // (which `from_client` and `from_backend` treat apart: a new connection
                // on an old tuple, a retransmitted SYN-ACK). What they would do with it
                // is `splice`, taken here without their other tests.
                let setting_up = self.table.get(slot).is_none_or(|e| matches!(e.state, State::Routing | State::Connecting));
                if !setting_up && frame[34 + 13] & flags::SYN == 0 {
                    let ip_end = FAST_V4_L3 + usize::from(f.ip_len);
                    let dir = if leg == Leg::Client { Direction::ToServer } else { Direction::ToClient };
                    return self.splice(slot, frame, ip_end, dir, frame[34 + 13]);
                }
            }
            match found {
                Some((slot, Leg::Backend)) => return self.from_backend(slot, frame, ctx),
                Some((slot, Leg::Client)) => {
                    if let Some(e) = self.table.get(slot) {
                        let (service, state) = (usize::from(e.service), e.state);
                        return self.from_client(ingress, frame, service, Some((slot, state)), t, ctx);
                    }
                }
                None => {
                    if let Some(service) = self.service_for(f.dst, f.dst_port) {
                        return self.from_client(ingress, frame, service, None, t, ctx);
                    }
                }
            }
            if let Some(owner) = self.settings.nat.owner(f.dst_port).filter(|_| self.local.iter().any(|l| l.owns(f.dst))) {
                // A backend's segment for one of our NAT ports. The port names the lcore
                // whose table holds the splice: a port's RSS (or a TAP queue's flow
                // steering, which forgets a flow idle for a few seconds) may deliver it
                // here. Only what a backend sends on a leg we opened is handed over (it
                // carries ACK or RST, to the NAT address: a port's first address), so a
                // scan of the NAT range is dropped here instead of crossing cores.
                // Anything else for our own slice is a splice that is gone (expired, or
                // moved to another backend).
                let reply_like = frame[14 + 20 + 13] & (flags::ACK | flags::RST) != 0 && self.local.iter().any(|l| l.ipv4.first() == Some(&f.dst));
                if owner != self.settings.worker && reply_like {
                    return Verdict::Handoff(owner);
                }
                return Verdict::Drop(DropReason::NoSplice);
            }
            let transparent_backend = || self.services.iter().any(|s| s.transparent) && self.pools.iter().any(|p| p.backends.iter().any(|&(a, port)| a == f.src && port.is_none_or(|p| p == f.src_port)));
            if transparent_backend() {
                // In transparent mode a backend's segment for a gone splice is addressed
                // to the client itself.
                return Verdict::Drop(DropReason::NoSplice);
            }
        }
        self.other(ingress, frame, ctx)
    }

    const PREFETCH: bool = true;

    /// Only a hint: the tuple is read where it would be, not validated (`handle` does that).
    #[inline]
    fn prefetch(&self, frame: &[u8]) {
        if let Some((remote, local, remote_port, local_port)) = peek_tcp4_tuple(frame) {
            self.table.prefetch(&LegKey { remote, local, remote_port, local_port });
        }
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        self.tick_clock(ctx.now_tsc);
        let now = self.now_ms;
        // The timers have millisecond resolution: scan once per millisecond, not every few
        // loop rounds (a busy loop ticks every few tens of microseconds).
        if now == self.last_tick_ms {
            return;
        }
        self.last_tick_ms = now;
        // First requests that did not come, backend SYNs that went unanswered.
        let in_progress = self.free_handshakes.len() < self.handshakes.len();
        for h in 0..if in_progress { self.handshakes.len() } else { 0 } {
            let (Some(slot), true) = (self.handshakes[h].entry, self.handshakes[h].deadline_ms <= now) else { continue };
            let Some((service, state)) = self.table.get(slot).map(|e| (usize::from(e.service), e.state)) else { continue };
            if state == State::Routing {
                self.counters.add(service, SpliceStat::FirstRequestTimeouts, 1);
                if let Some(e) = self.table.get(slot).copied() {
                    self.reset_client(&e, h as u16, ctx);
                }
                self.drop_entry(slot);
                continue;
            }
            let svc = &self.services[service];
            let (attempts, connect_ms) = (svc.connect_attempts.max(1), u64::from(svc.connect_ms));
            let hs = &mut self.handshakes[h];
            if hs.attempts < attempts {
                // Each retransmission waits twice as long as the one before (as a kernel's
                // SYN backoff does): a backend path that drops frames because it is
                // congested gets time to drain instead of three SYNs into the same burst.
                // Capped, as a kernel caps its RTO: a blackholed pool must not hold
                // handshake slots (and their buffers) for hours.
                hs.deadline_ms = now + (connect_ms << hs.attempts.min(16)).min(MAX_CONNECT_WAIT_MS.max(connect_ms));
                hs.attempts += 1;
                self.backend_syn(h as u16, ctx);
            } else {
                self.next_backend(slot, SpliceStat::BackendTimeouts, ctx);
            }
        }
        // Expiry: enough slots per millisecond that the whole table is walked about once a
        // second.
        for _ in 0..(self.table.capacity() / (SWEEP_PER_TICK * 1000)).max(1) {
            self.sweep_some();
        }
        for (service, &n) in self.per_service.iter().enumerate() {
            self.counters.set(service, SpliceStat::Active, u64::from(n));
        }
    }

    fn update(&mut self, update: SpliceUpdate) {
        self.apply(update);
    }
}

impl Splice {
    /// Looks at the next [`SWEEP_PER_TICK`] table slots and frees the connections whose
    /// timeout has passed.
    fn sweep_some(&mut self) {
        let now_s = self.now_s();
        let services = &self.services;
        let mut expired: [Option<Entry>; SWEEP_PER_TICK] = [None; SWEEP_PER_TICK];
        let mut n = 0;
        self.table.sweep(
            SWEEP_PER_TICK,
            |e| {
                let quiet = now_s.saturating_sub(e.last_seen);
                let svc = &services[usize::from(e.service)];
                match e.state {
                    State::Routing | State::Connecting => false,
                    State::Closed => quiet >= CLOSED_LINGER_S,
                    State::Established if e.flags & (flag::FIN_CLIENT | flag::FIN_SERVER) != 0 => u64::from(quiet) * 1000 >= u64::from(svc.half_closed_ms),
                    State::Established => u64::from(quiet) * 1000 >= u64::from(svc.idle_ms),
                }
            },
            |_, e| {
                if n < expired.len() {
                    expired[n] = Some(*e);
                    n += 1;
                }
            },
        );
        for e in expired[..n].iter().flatten() {
            self.forget(e);
            self.counters.add(usize::from(e.service), SpliceStat::Expired, 1);
        }
    }

    fn apply(&mut self, update: SpliceUpdate) {
        match update {
            SpliceUpdate::Tables(t) => {
                self.tables = t;
                self.refresh_live();
            }
            SpliceUpdate::Keys(k) => self.keys = k,
            SpliceUpdate::Dump(req) => {
                // The operator's request: one pass over the table on the lcore (about a
                // millisecond per 64 Ki slots), rows copied up to the limit.
                let mut dump = Dump { now_s: self.now_s(), ..Dump::default() };
                for (e, t) in self.table.iter().filter(|(e, _)| req.filter.matches(e)) {
                    dump.matched += 1;
                    if dump.rows.len() < req.limit {
                        dump.rows.push((*e, *t));
                    }
                }
                let _ = req.reply.try_send(dump);
            }
        }
    }
}

#[cfg(test)]
#[path = "splice_tests.rs"]
mod tests;
