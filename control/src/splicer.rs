//! Control side of the splice role: the plan of its services, the SYN-cookie keys and
//! their rotation, and the lcores' splice counters for ctl and the metrics.
//!
//! Backends are planned, resolved and weighted exactly like the members of a balanced
//! service (`crate::balancer`): a [`crate::balancer::Balancer`] over the splice services
//! builds their weighted tables from ARP and heartbeats and pushes them to the lcores as
//! [`SpliceUpdate::Tables`]. This module adds what is particular to splicing.
//!
//! # Cookie keys
//! The key of rotation period i (`unix_seconds / keys.syn_cookie_rotation_s`) is
//! HMAC-SHA256(secret file, "tapsplice syn cookie" ‖ i) cut to 16 bytes. Every appliance
//! of the rack derives the same keys from the same file and clock, so none needs to tell
//! another, and a cookie made by one validates on any other. At a period change the
//! lcores get the new key with the previous one, which stays accepted until the cookies
//! made with it have expired (the slot after the one the period began in).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use std::sync::Arc;
use std::time::Duration;
use dataplane::lcore_link::ToLcore;
use dataplane::balance::HashPolicy;
use dataplane::role::splice::{DumpFilter, DumpRequest, SpliceCounters, SplicePool, SpliceService, SpliceStat, SpliceUpdate, SETUP_BUCKETS};
use dataplane::splice::table::{flag, Entry, NatSlices, State, Traffic};
use dataplane::splice::translate::Endpoint;
use dataplane::splice::request::{HostMatch, Rule, Rules};
use dataplane::role::PortIndex;
use dataplane::splice::cookie::{self, CookieKeys, Key};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::balancer::ServicePlan;
use crate::ctl::handler::SplicesFn;
use crate::ctl::proto::{ErrorBody, ErrorCode, SpliceRow, SplicesQuery, SplicesResult, SPLICES_DEFAULT_LIMIT};
use crate::config::{NatMode, NoBackend, PoolSelection, RackConfig, ServiceMode};

/// What `run` needs to start the splice role.
#[derive(Clone, Debug, PartialEq)]
pub struct SplicePlan {
    /// One plan per pool the splice services use, named after the pool (its members are
    /// the backends); the balancer builds one selection table per entry, and the role's
    /// pool indexes are positions in this list.
    pub services: Vec<ServicePlan>,
    /// The same services as the role takes them.
    pub specs: Vec<SpliceService>,
    /// The services' names (as `specs`).
    pub names: Vec<String>,
    /// Per pool (as `services`): choose by least connections instead of the hash.
    pub least_connections: Vec<bool>,
    pub mss: u16,
    pub wscale: u8,
    /// The whole FullNAT range (split between the lcores by [`SplicePlan::nat_slices`]).
    pub nat_ports: (u16, u16),
    pub handshakes: usize,
    pub request_buffer_bytes: usize,
    pub secret: PathBuf,
    pub rotation_s: u64,
}

impl SplicePlan {
    pub fn from_config(cfg: &RackConfig) -> Result<SplicePlan, String> {
        let splice: Vec<&crate::config::ServiceConfig> = cfg.service.iter().filter(|s| s.mode == ServiceMode::Splice).collect();
        if splice.is_empty() {
            return Err(format!("{}: node.roles has splice but no [[service]] has mode = \"splice\"", cfg.source));
        }
        // One selection table per pool a splice service uses (its default pool and its
        // rules' pools), planned like a balance service named after the pool.
        let mut services: Vec<ServicePlan> = Vec::new();
        // `vip`: the service's IPv4 VIP (checked once by the caller).
        let mut pool_index = |name: &str, s: &crate::config::ServiceConfig, vip: Ipv4Addr| -> Result<usize, String> {
            if let Some(i) = services.iter().position(|p| p.name == name) {
                return Ok(i);
            }
            let client_port = s
                .via
                .as_deref()
                .map(|v| cfg.port_index(v).map(|i| i as PortIndex).ok_or_else(|| format!("{}: service {:?}: via {v:?}: a splice service faces a [[port]]", cfg.source, s.name)))
                .transpose()?;
            services.push(ServicePlan {
                name: name.to_string(),
                vip,
                protocol: 6,
                ports: s.ports.iter().map(|r| (r.first, r.last)).collect(),
                hash: HashPolicy::L34,
                client_port,
                members: crate::balancer::pool_members(cfg, name, ServiceMode::Splice)?,
            });
            Ok(services.len() - 1)
        };
        let mut specs = Vec::new();
        for s in &splice {
            let IpAddr::V4(vip) = s.vip else {
                return Err(format!("{}: service {:?}: the splice role serves IPv4 VIPs only", cfg.source, s.name));
            };
            let default = s.pool.as_deref().ok_or_else(|| format!("{}: service {:?} needs a pool", cfg.source, s.name))?;
            let default_pool = pool_index(default, s, vip)?;
            let mut rules = Vec::new();
            for r in &s.route {
                rules.push(Rule {
                    host: r.host.as_deref().map(HostMatch::parse),
                    path_prefix: r.path_prefix.clone(),
                    methods: r.methods.clone(),
                    dst_ports: r.dst_ports.iter().map(|p| (p.first, p.last)).collect(),
                    pool: pool_index(&r.pool, s, vip)?,
                });
            }
            specs.push(SpliceService {
                vip,
                ports: s.ports.iter().map(|r| (r.first, r.last)).collect(),
                rules: Rules { rules, default_pool },
                max_connections: s.max_connections,
                transparent: s.nat == NatMode::Transparent,
                first_request_ms: s.timeouts.first_request_ms,
                connect_ms: s.timeouts.connect_ms,
                connect_attempts: s.timeouts.connect_attempts,
                idle_ms: s.timeouts.idle_ms,
                half_closed_ms: s.timeouts.half_closed_ms,
                reset_without_backend: s.no_backend == NoBackend::Reset,
            });
        }
        let least_connections = services
            .iter()
            .map(|p| cfg.pool.iter().find(|c| c.name == p.name).is_some_and(|c| c.selection == PoolSelection::LeastConnections))
            .collect();
        let secret = cfg.keys.syn_cookie_secret.clone().ok_or_else(|| format!("{}: splice services need keys.syn_cookie_secret", cfg.source))?;
        let request_buffer_bytes = splice.iter().map(|s| s.request_buffer_bytes).max().unwrap_or(0) as usize;
        Ok(SplicePlan {
            services,
            specs,
            names: splice.iter().map(|s| s.name.clone()).collect(),
            least_connections,
            mss: cfg.splice.mss,
            wscale: cfg.splice.wscale,
            nat_ports: (cfg.splice.nat_ports.first, cfg.splice.nat_ports.last),
            handshakes: cfg.splice.handshakes as usize,
            request_buffer_bytes,
            secret,
            rotation_s: u64::from(cfg.keys.syn_cookie_rotation_s.max(1)),
        })
    }

    /// The pools as the role takes them (backends in the order of the pool's selection
    /// table).
    pub fn pools(&self) -> Vec<SplicePool> {
        self.services
            .iter()
            .zip(&self.least_connections)
            .map(|(p, &least_connections)| SplicePool { backends: p.members.iter().map(|m| (m.address, m.tcp_port)).collect(), least_connections })
            .collect()
    }

    /// The connections one lcore's table holds: every service's `max_connections`.
    pub fn capacity(&self) -> usize {
        self.specs.iter().map(|s| s.max_connections as usize).sum::<usize>().max(1)
    }

    /// The NAT ports split between `workers` lcores (disjoint slices: two lcores never
    /// pick the same source port toward a backend, and a reply's port names its lcore).
    pub fn nat_slices(&self, workers: usize) -> Result<NatSlices, String> {
        let (first, last) = self.nat_ports;
        u16::try_from(workers)
            .ok()
            .and_then(|w| NatSlices::new(first, last, w))
            .ok_or_else(|| format!("splice.nat_ports {first}-{last} cannot be split between {workers} worker lcores"))
    }

    /// Ports facing clients (ARP for the VIPs is answered there): the services' `via`, or
    /// every port that faces no backend.
    pub fn client_ports(&self, ports: usize) -> Vec<PortIndex> {
        crate::balancer::client_ports(&self.services, ports)
    }
}

/// The operator's filter as the lcores take it: `ADDR` or `ADDR:PORT` for the client and
/// the backend, a state name.
pub fn dump_filter(q: &SplicesQuery) -> Result<DumpFilter, String> {
    fn end(what: &str, s: Option<&str>) -> Result<(Option<Ipv4Addr>, Option<u16>), String> {
        let Some(s) = s else { return Ok((None, None)) };
        if let Ok(a) = s.parse::<Ipv4Addr>() {
            return Ok((Some(a), None));
        }
        let sa: std::net::SocketAddrV4 = s.parse().map_err(|_| format!("{what} {s:?}: expected an IPv4 address or ADDR:PORT"))?;
        Ok((Some(*sa.ip()), Some(sa.port())))
    }
    let (client, client_port) = end("client", q.client.as_deref())?;
    let (backend, backend_port) = end("backend", q.backend.as_deref())?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            [State::Routing, State::Connecting, State::Established, State::Closed]
                .into_iter()
                .find(|st| st.name() == s)
                .ok_or_else(|| format!("state {s:?}: expected routing, connecting, established or closed"))?,
        ),
    };
    Ok(DumpFilter { client, client_port, backend, backend_port, state })
}

/// `ctl splices`: asks every worker for its matching connections (through its command
/// queue; it answers between bursts) and waits at most a second for each.
pub fn splices_fn(workers: Vec<Sender<ToLcore<SpliceUpdate>>>, services: Vec<String>, pools: Vec<String>) -> SplicesFn {
    Arc::new(move |q: &SplicesQuery| {
        let filter = dump_filter(q).map_err(|e| ErrorBody::new(ErrorCode::BadRequest, e))?;
        let limit = q.limit.unwrap_or(SPLICES_DEFAULT_LIMIT) as usize;
        let mut out = SplicesResult::default();
        for (w, tx) in workers.iter().enumerate() {
            let (reply, answer) = crossbeam_channel::bounded(1);
            tx.try_send(ToLcore::Update(SpliceUpdate::Dump(DumpRequest { filter, limit, reply })))
                .map_err(|_| ErrorBody::new(ErrorCode::Refused, format!("worker {w}'s command queue is full; try again")))?;
            let d = answer
                .recv_timeout(Duration::from_secs(1))
                .map_err(|_| ErrorBody::new(ErrorCode::Refused, format!("worker {w} did not answer within 1 s")))?;
            out.matched += d.matched as u64;
            let room = limit.saturating_sub(out.splices.len());
            out.splices.extend(d.rows.iter().take(room).map(|(e, t)| row(w, e, t, d.now_s, &services, &pools)));
        }
        Ok(out)
    })
}

fn row(worker: usize, e: &Entry, t: &Traffic, now_s: u32, services: &[String], pools: &[String]) -> SpliceRow {
    let ep = |x: Endpoint| format!("{}:{}", x.addr, x.port);
    let routing = e.state == State::Routing;
    SpliceRow {
        worker,
        service: services.get(usize::from(e.service)).cloned().unwrap_or_default(),
        pool: if routing { "-".into() } else { pools.get(usize::from(e.pool)).cloned().unwrap_or_default() },
        client: ep(e.client),
        vip: ep(e.vip),
        backend: if routing { "-".into() } else { ep(e.backend) },
        nat: if routing { "-".into() } else { ep(e.nat) },
        state: e.state.name().into(),
        delta: e.delta,
        timestamps: e.flags & flag::TS != 0,
        ws_client: e.ws_promised,
        ws_server: e.ws_server,
        age_s: now_s.saturating_sub(t.since),
        idle_s: now_s.saturating_sub(e.last_seen),
        bytes_to_server: t.to_server,
        bytes_to_client: t.to_client,
    }
}

/// Splice setup times (client's handshake ACK → backend's SYN-ACK): count and quantiles
/// in µs, each the upper bound of the power-of-two bucket it falls in.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetupSummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// (upper bound in µs, setups in the bucket), non-empty buckets only.
    pub buckets: Vec<(u64, u64)>,
}

/// The upper bound (µs) of setup-time bucket `i`.
pub fn setup_bucket_le(i: usize) -> u64 {
    1u64 << i
}

impl SetupSummary {
    pub fn of(buckets: &[u64]) -> SetupSummary {
        let count: u64 = buckets.iter().sum();
        let q = |f: f64| -> u64 {
            let want = ((count as f64) * f).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= want {
                    return setup_bucket_le(i);
                }
            }
            0
        };
        let max_us = buckets.iter().rposition(|&n| n > 0).map_or(0, setup_bucket_le);
        SetupSummary {
            count,
            p50_us: if count > 0 { q(0.5) } else { 0 },
            p90_us: if count > 0 { q(0.9) } else { 0 },
            p99_us: if count > 0 { q(0.99) } else { 0 },
            max_us,
            buckets: buckets.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (setup_bucket_le(i), *n)).collect(),
        }
    }
}

/// The cookie key of rotation period `period`.
pub fn period_key(secret: &[u8], period: u64) -> Key {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"tapsplice syn cookie");
    mac.update(&period.to_be_bytes());
    let out = mac.finalize().into_bytes();
    let mut k = [0u8; 16];
    k.copy_from_slice(&out[..16]);
    Key(k)
}

/// The keys in force at `unix_s`.
pub fn keys_at(secret: &[u8], rotation_s: u64, unix_s: u64) -> CookieKeys {
    let period = unix_s / rotation_s.max(1);
    let began = cookie::slot_of(period * rotation_s.max(1));
    CookieKeys { current: period_key(secret, period), previous: period.checked_sub(1).map(|p| (period_key(secret, p), began + 1)) }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Splice counters by `SpliceStat` name.
pub type CountersByName = std::collections::BTreeMap<String, u64>;

/// The splice role's control-thread side: rotates keys and reads counters.
pub struct Splicer {
    secret: Vec<u8>,
    rotation_s: u64,
    period: u64,
    workers: Vec<Sender<ToLcore<SpliceUpdate>>>,
    /// Workers whose queue refused the current keys.
    pending: Vec<bool>,
    counters: Vec<SpliceCounters>,
    /// The services' names, in the order the counters count them.
    names: Vec<String>,
}

impl Splicer {
    /// `secret` is the content of `keys.syn_cookie_secret`.
    pub fn new(secret: Vec<u8>, rotation_s: u64, now_unix: u64) -> Splicer {
        let rotation_s = rotation_s.max(1);
        Splicer { secret, rotation_s, period: now_unix / rotation_s, workers: Vec::new(), pending: Vec::new(), counters: Vec::new(), names: Vec::new() }
    }

    /// The keys the lcores start with.
    pub fn keys(&self, now_unix: u64) -> CookieKeys {
        keys_at(&self.secret, self.rotation_s, now_unix)
    }

    /// The workers' command queues and counters; `names` are the services' (the order of
    /// the counters' rows).
    pub fn attach(&mut self, workers: Vec<Sender<ToLcore<SpliceUpdate>>>, counters: Vec<SpliceCounters>, names: Vec<String>) {
        self.pending = vec![false; workers.len()];
        self.workers = workers;
        self.counters = counters;
        self.names = names;
    }

    /// One control-thread round: at a period change every lcore gets the new keys.
    pub fn poll(&mut self, now_unix: u64) {
        let period = now_unix / self.rotation_s;
        if period != self.period {
            self.period = period;
            self.pending.iter_mut().for_each(|p| *p = true);
        }
        let keys = self.keys(now_unix);
        for (i, w) in self.workers.iter().enumerate() {
            if self.pending[i] && w.try_send(ToLcore::Update(SpliceUpdate::Keys(keys))).is_ok() {
                self.pending[i] = false;
            }
        }
    }

    /// The setup-time histogram summed over the lcores (buckets of `SETUP_BUCKETS`).
    pub fn setup_buckets(&self) -> Vec<u64> {
        (0..SETUP_BUCKETS).map(|i| self.counters.iter().map(|c| c.setup_buckets()[i]).sum()).collect()
    }

    /// Every counter summed over the lcores, in total and per service (by name), read
    /// once: the totals are the services' sums, so the two always agree.
    pub fn counters_now(&self) -> (CountersByName, std::collections::BTreeMap<String, CountersByName>) {
        let mut totals = CountersByName::new();
        let mut per_service = std::collections::BTreeMap::new();
        for (i, name) in self.names.iter().enumerate() {
            let row: CountersByName = SpliceStat::ALL.iter().map(|&s| (s.name().to_string(), self.counters.iter().map(|c| c.get_service(i, s)).sum())).collect();
            for (k, v) in &row {
                *totals.entry(k.clone()).or_insert(0) += v;
            }
            per_service.insert(name.clone(), row);
        }
        (totals, per_service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    #[test]
    fn keys_rotate_per_period_and_the_previous_key_is_kept_for_its_cookies() {
        let s = b"0123456789abcdef0123".to_vec();
        let a = keys_at(&s, 128, 1000 * 128 + 5);
        let b = keys_at(&s, 128, 1000 * 128 + 127);
        assert_eq!(a.current, b.current, "same period, same key");
        let c = keys_at(&s, 128, 1001 * 128);
        assert_ne!(c.current, a.current);
        let (prev, until) = c.previous.unwrap();
        assert_eq!(prev, a.current);
        assert_eq!(until, cookie::slot_of(1001 * 128) + 1);
        // Another secret, other keys.
        assert_ne!(keys_at(b"another secret 16b", 128, 1000 * 128).current, a.current);
        // A cookie made just before the rotation validates just after it.
        let t = cookie::Tuple { client: Ipv4Addr::new(10, 0, 0, 1), client_port: 4000, vip: Ipv4Addr::new(10, 0, 0, 100), vip_port: 80 };
        let o = cookie::SynOptions { mss: 1460, wscale: Some(7), sack: true };
        let (isn, _) = cookie::make(&a, &t, 77, o, cookie::slot_of(1001 * 128 - 1));
        assert!(cookie::check(&c, &t, 77, isn, cookie::slot_of(1001 * 128)).is_some());
    }

    #[test]
    fn a_period_change_pushes_keys_to_every_worker_even_after_a_full_queue() {
        let s = b"0123456789abcdef".to_vec();
        let mut sp = Splicer::new(s.clone(), 64, 640);
        let (tx, rx) = bounded(1);
        sp.attach(vec![tx.clone()], Vec::new(), Vec::new());
        sp.poll(650);
        assert!(rx.try_recv().is_err(), "same period: nothing to push");
        tx.try_send(ToLcore::Update(SpliceUpdate::Keys(sp.keys(0)))).unwrap(); // queue full
        sp.poll(704);
        let _ = rx.try_recv();
        sp.poll(705);
        match rx.try_recv() {
            Ok(ToLcore::Update(SpliceUpdate::Keys(k))) => assert_eq!(k.current, period_key(&s, 11)),
            _ => panic!("no keys"),
        }
    }

    #[test]
    fn the_operator_filter_is_parsed_or_refused_with_a_reason() {
        let q = |c: Option<&str>, b: Option<&str>, s: Option<&str>| SplicesQuery { client: c.map(Into::into), backend: b.map(Into::into), state: s.map(Into::into), limit: None };
        let f = dump_filter(&q(Some("10.0.0.1"), Some("10.1.0.2:8080"), Some("established"))).unwrap();
        assert_eq!(f, DumpFilter { client: Some(Ipv4Addr::new(10, 0, 0, 1)), client_port: None, backend: Some(Ipv4Addr::new(10, 1, 0, 2)), backend_port: Some(8080), state: Some(State::Established) });
        assert_eq!(dump_filter(&q(None, None, None)).unwrap(), DumpFilter::default());
        assert!(dump_filter(&q(Some("nope"), None, None)).unwrap_err().contains("client \"nope\""));
        assert!(dump_filter(&q(None, Some("1.2.3.4:99999"), None)).is_err());
        assert!(dump_filter(&q(None, None, Some("open"))).unwrap_err().contains("expected routing"));
    }

    #[test]
    fn a_worker_that_does_not_answer_is_reported_not_waited_for() {
        let (tx, _rx) = bounded(1);
        let f = splices_fn(vec![tx.clone()], vec!["s".into()], vec!["p".into()]);
        let e = f(&SplicesQuery::default()).unwrap_err();
        assert!(e.message.contains("did not answer"), "{}", e.message);
        // The queue is now full (nobody took the first request): refused at once.
        let e = f(&SplicesQuery::default()).unwrap_err();
        assert!(e.message.contains("queue is full"), "{}", e.message);
    }

    #[test]
    fn setup_quantiles_are_bucket_upper_bounds() {
        let mut b = vec![0u64; SETUP_BUCKETS];
        b[7] = 90; // [64, 128) µs
        b[10] = 9; // [512, 1024) µs
        b[20] = 1;
        let s = SetupSummary::of(&b);
        assert_eq!((s.count, s.p50_us, s.p90_us, s.p99_us, s.max_us), (100, 128, 128, 1024, 1 << 20));
        assert_eq!(s.buckets, vec![(128, 90), (1024, 9), (1 << 20, 1)]);
        assert_eq!(SetupSummary::of(&[0; 3]), SetupSummary::default());
    }

    #[test]
    fn nat_port_slices_are_disjoint_and_cover_the_range() {
        let mut p = SplicePlan {
            services: Vec::new(),
            specs: Vec::new(),
            names: Vec::new(),
            least_connections: Vec::new(),
            mss: 1460,
            wscale: 9,
            nat_ports: (20_000, 20_009),
            handshakes: 1,
            request_buffer_bytes: 1,
            secret: PathBuf::new(),
            rotation_s: 64,
        };
        assert_eq!(p.nat_slices(1).unwrap().slice(0), (20_000, 20_009));
        let s = p.nat_slices(3).unwrap();
        assert_eq!((s.slice(0), s.slice(1), s.slice(2)), ((20_000, 20_002), (20_003, 20_005), (20_006, 20_009)));
        p.nat_ports = (1, 1);
        assert_eq!(p.nat_slices(1).unwrap().slice(0), (1, 1));
        assert!(p.nat_slices(2).unwrap_err().contains("cannot be split between 2 worker lcores"));
    }
}
