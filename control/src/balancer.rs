//! The balance role's control half: what the rack file says about balanced services, and
//! the [`Balancer`] that turns membership, workload and neighbour state into selection
//! tables and swaps them into the lcores (DESIGN.md "Balance"; thesis §4.5).
//!
//! For each service, every *configured* member is in its table — the ones that cannot
//! take traffic at weight 0 — so the table size never changes with membership and only a
//! leaving member's flows move. A member can take traffic when its MAC is resolved (ARP
//! through the punt thread) and, if it names a `peer`, the detector says that peer is
//! `up`. Its weight is the configured weight × the peer's smoothed workload factor W
//! (W'ᵢ = Wᵢ / ΣW is implicit: the table only depends on ratios), quantised to 1/20 so that
//! noise the smoothing lets through does not reshuffle flows.
//!
//! Tables are rebuilt only when an effective weight changed; a member that becomes unusable
//! is removed at once (the detector bound holds), while joins and weight changes are applied
//! at most once per `REBUILD_HOLD` (a flapping member is also held down by the detector's
//! damping). A new table goes to every worker's command queue; a full queue is retried on
//! the next poll. The control thread keeps the last `Arc` it sent, so the lcore never frees
//! a table.

use crate::config::{HashPolicy as CfgHash, Protocol, RackConfig, ServiceMode};
use crate::events::EventLog;
use crate::metrics::PeerMetrics;
use crate::neighbours::{Neighbours, PortAddrs};
use crossbeam_channel::Sender;
use dataplane::balance::{member_key, table_size_for, FlowHasher, HashPolicy, MemberEntry, MemberSpec, SelectionTable};
use dataplane::lcore_link::ToLcore;
use dataplane::role::balance::{BalanceCounters, BalanceTables, VipSpec};
use dataplane::role::PortIndex;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Joins and weight changes are applied at most this often.
pub const REBUILD_HOLD: Duration = Duration::from_millis(500);
/// How long a port's link must stay down before its members leave the tables (a carrier
/// delay: a flap shorter than this costs some frames, which TCP retransmits, instead of
/// moving flows away and back).
pub const LINK_DOWN_HOLD: Duration = Duration::from_millis(300);
/// Table slots per configured member (a prime at least this × members): more slots than
/// Maglev's 100 keep the churn of a removal near its ideal (see `dataplane::balance`).
pub const SLOTS_PER_MEMBER: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPlan {
    pub address: Ipv4Addr,
    pub weight: u32,
    pub peer: Option<String>,
    /// The port that reaches it (the pool's `via`).
    pub port: PortIndex,
    /// splice: the backend's TCP port (`None` = the client's destination port).
    pub tcp_port: Option<u16>,
}

/// Ports on which the roles answer ARP for the VIPs of `services` (balance's, or the
/// splice's per-pool plans): each service's `via`, or, for a service without one, every
/// port of `ports` that faces none of the services' members.
pub fn client_ports(services: &[ServicePlan], ports: usize) -> Vec<PortIndex> {
    let member_ports: Vec<PortIndex> = services.iter().flat_map(|s| s.members.iter().map(|m| m.port)).collect();
    let mut out: Vec<PortIndex> = Vec::new();
    for s in services {
        match s.client_port {
            Some(p) => out.push(p),
            None => out.extend((0..ports as PortIndex).filter(|p| !member_ports.contains(p))),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    pub name: String,
    pub vip: Ipv4Addr,
    pub protocol: u8,
    pub ports: Vec<(u16, u16)>,
    pub hash: HashPolicy,
    /// The port facing the clients (ARP for the VIP is answered there); `None` = any.
    pub client_port: Option<PortIndex>,
    pub members: Vec<MemberPlan>,
}

impl ServicePlan {
    /// The flow hash, seeded by the service name: every appliance of the rack reads the
    /// same file, so they all send a flow to the same member.
    pub fn hasher(&self) -> FlowHasher {
        FlowHasher::new(self.hash, member_key(self.name.as_bytes()))
    }

    pub fn vip_spec(&self) -> VipSpec {
        VipSpec { addr: self.vip, protocol: Some(self.protocol), ports: self.ports.clone(), members: self.members.len() }
    }
}

/// The services of the rack in `mode` (balance: `[[service]] mode = "balance"`; splice: its
/// pools are planned the same way, the members being the backends).
pub fn services(cfg: &RackConfig, mode: ServiceMode) -> Result<Vec<ServicePlan>, String> {
    let port_index = |name: &str, what: &str| -> Result<PortIndex, String> {
        cfg.port_index(name).map(|i| i as PortIndex).ok_or_else(|| {
            format!("{}: {what} {name:?}: balancing over a [[bond]] is not supported yet; name a [[port]]", cfg.source)
        })
    };
    let mut out = Vec::new();
    for s in cfg.service.iter().filter(|s| s.mode == mode) {
        let IpAddr::V4(vip) = s.vip else {
            return Err(format!("{}: service {:?}: the {} role serves IPv4 VIPs only", cfg.source, s.name, mode.as_str()));
        };
        let pool = s.pool.as_deref().ok_or_else(|| format!("{}: service {:?} needs a pool", cfg.source, s.name))?;
        let members = pool_members(cfg, pool, mode)?;
        out.push(ServicePlan {
            name: s.name.clone(),
            vip,
            protocol: match s.protocol {
                Protocol::Tcp => 6,
                Protocol::Udp => 17,
            },
            ports: s.ports.iter().map(|r| (r.first, r.last)).collect(),
            hash: match s.hash {
                CfgHash::L2 => HashPolicy::L2,
                CfgHash::L23 => HashPolicy::L23,
                CfgHash::L34 => HashPolicy::L34,
            },
            client_port: s.via.as_deref().map(|v| port_index(v, "service via")).transpose()?,
            members,
        });
    }
    Ok(out)
}

/// The members of the pool named `name`, each with the port that reaches it.
pub fn pool_members(cfg: &RackConfig, name: &str, mode: ServiceMode) -> Result<Vec<MemberPlan>, String> {
    let port_index = |name: &str, what: &str| -> Result<PortIndex, String> {
        cfg.port_index(name).map(|i| i as PortIndex).ok_or_else(|| {
            format!("{}: {what} {name:?}: balancing over a [[bond]] is not supported yet; name a [[port]]", cfg.source)
        })
    };
    let pool = cfg.pool.iter().find(|p| p.name == name).ok_or_else(|| format!("{}: no [[pool]] named {name:?}", cfg.source))?;
    let mut members = Vec::new();
    for m in &pool.members {
        let IpAddr::V4(address) = m.address else {
            return Err(format!("{}: pool {:?}: member {} is IPv6; {} members are IPv4", cfg.source, pool.name, m.address, mode.as_str()));
        };
        let via = match &pool.via {
            Some(v) => v.clone(),
            None => cfg
                .port
                .iter()
                .find(|p| p.addresses.iter().any(|c| c.contains(&m.address)))
                .map(|p| p.name.clone())
                .ok_or_else(|| format!("{}: pool {:?}: no port has an address in member {address}'s subnet; set via", cfg.source, pool.name))?,
        };
        members.push(MemberPlan { address, weight: m.weight, peer: m.peer.clone(), port: port_index(&via, "pool via")?, tcp_port: m.port });
    }
    Ok(members)
}

/// The operator view of one member (`tapsplice ctl members`, metrics).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub service: String,
    pub vip: String,
    pub member: String,
    pub peer: Option<String>,
    /// `up`, `down` (its peer is not up), `unresolved` (no MAC yet), `drained` (weight 0),
    /// `link_down` (the port toward it has no link).
    pub state: String,
    pub mac: Option<String>,
    /// Configured weight, and the effective one in the current table.
    pub weight: u32,
    pub effective_weight: u32,
    /// Share of the table's slots, 0..1.
    pub share: f64,
    pub packets: u64,
    pub bytes: u64,
    /// Splice role: the backend's open connections (all lcores); `None` for balance
    /// members (no per-flow state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
}

/// Per service: tables built, and frames dropped for want of a live member.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub service: String,
    pub vip: String,
    pub live_members: usize,
    pub table_size: usize,
    pub rebuilds: u64,
    pub no_member_drops: u64,
}

/// Hands a worker new tables; false when its command queue is full (tried again on the
/// next poll).
pub type TableSink = Box<dyn Fn(Arc<BalanceTables>) -> bool + Send>;

/// A sink into a worker's command queue, wrapping the tables into the role's update type.
pub fn table_sink<U: Send + 'static>(tx: Sender<ToLcore<U>>, wrap: fn(Arc<BalanceTables>) -> U) -> TableSink {
    Box::new(move |t| tx.try_send(ToLcore::Update(wrap(t))).is_ok())
}

pub struct Balancer {
    services: Vec<ServicePlan>,
    neighbours: Neighbours,
    log: EventLog,
    workers: Vec<TableSink>,
    /// Workers whose queue refused the current table.
    pending: Vec<bool>,
    counters: Vec<BalanceCounters>,
    current: Arc<BalanceTables>,
    /// Effective weights in the current tables, per service and member.
    weights: Vec<Vec<u32>>,
    states: Vec<Vec<&'static str>>,
    rebuilds: Vec<u64>,
    last_build: Option<Instant>,
    /// The members are splice backends: their open connections are shown.
    connections: bool,
    /// The ports' links: a member behind a port whose link has been down for
    /// [`LINK_DOWN_HOLD`] is out of the table.
    links: Option<dataplane::lcore_link::LinkStates>,
    /// Per port index: since when its link has been seen down.
    down_since: Vec<Option<Instant>>,
}

impl Balancer {
    /// Registers every member's address with the neighbour table (asked from our address
    /// on the member's port: `ports[i]` = (MAC, IPv4 addresses with prefix)).
    pub fn new(services: Vec<ServicePlan>, neighbours: Neighbours, log: EventLog, ports: &[PortAddrs]) -> Balancer {
        for s in &services {
            for m in &s.members {
                if let Some(p) = ports.iter().find(|p| p.index == m.port) {
                    neighbours.want(p.wanted(m.address));
                }
            }
        }
        let n = services.len();
        let weights = services.iter().map(|s| vec![0; s.members.len()]).collect();
        let states = services.iter().map(|s| vec!["unresolved"; s.members.len()]).collect();
        Balancer {
            current: Arc::new(BalanceTables { vips: vec![None; n] }),
            services,
            neighbours,
            log,
            workers: Vec::new(),
            pending: Vec::new(),
            counters: Vec::new(),
            weights,
            states,
            rebuilds: vec![0; n],
            last_build: None,
            connections: false,
            links: None,
            down_since: Vec::new(),
        }
    }

    /// Members behind a port whose link is down (as `links` says) leave the tables.
    pub fn with_links(mut self, links: dataplane::lcore_link::LinkStates) -> Balancer {
        self.links = Some(links);
        self
    }

    /// The members are the splice role's backends, whose open connections the role counts.
    pub fn with_connections(mut self) -> Balancer {
        self.connections = true;
        self
    }

    /// The tables the lcores start with (every service without a live member).
    pub fn initial_tables(&self) -> Arc<BalanceTables> {
        self.current.clone()
    }

    /// Where new tables go, and the lcores' per-member counters.
    pub fn attach(&mut self, workers: Vec<TableSink>, counters: Vec<BalanceCounters>) {
        self.pending = vec![false; workers.len()];
        self.workers = workers;
        self.counters = counters;
    }

    /// Notes since when each members' port has had no link.
    fn watch_links(&mut self, now: Instant) {
        let Some(links) = &self.links else { return };
        let ports = self.services.iter().flat_map(|s| s.members.iter().map(|m| usize::from(m.port) + 1)).max().unwrap_or(0);
        self.down_since.resize(ports, None);
        for (p, since) in self.down_since.iter_mut().enumerate() {
            *since = if links.is_up(p) { None } else { Some(since.unwrap_or(now)) };
        }
    }

    /// What each member's effective weight should be now, and its state.
    fn wanted(&self, now: Instant, peers: &[PeerMetrics]) -> (Vec<Vec<u32>>, Vec<Vec<&'static str>>) {
        let mut weights = Vec::new();
        let mut states = Vec::new();
        for s in &self.services {
            let (w, st): (Vec<u32>, Vec<&'static str>) = s
                .members
                .iter()
                .map(|m| {
                    let peer = m.peer.as_ref().map(|id| peers.iter().find(|p| &p.node == id));
                    let up = match &peer {
                        None => true,
                        Some(p) => p.is_some_and(|p| p.state == "up"),
                    };
                    let link_down = self.down_since.get(usize::from(m.port)).copied().flatten().is_some_and(|t| now.saturating_duration_since(t) >= LINK_DOWN_HOLD);
                    if link_down {
                        (0, "link_down")
                    } else if self.neighbours.get(m.port, m.address).is_none() {
                        (0, "unresolved")
                    } else if !up {
                        (0, "down")
                    } else if m.weight == 0 {
                        (0, "drained")
                    } else {
                        let w = peer.flatten().and_then(|p| p.workload).unwrap_or(1.0).clamp(0.0, 1.0);
                        // 1/20 steps; a live member keeps at least one step.
                        let steps = ((w * 20.0).round() as u32).max(1);
                        (m.weight * steps, "up")
                    }
                })
                .unzip();
            weights.push(w);
            states.push(st);
        }
        (weights, states)
    }

    /// One control-thread round: rebuilds and pushes tables when needed.
    pub fn poll(&mut self, now: Instant, peers: &[PeerMetrics]) {
        self.watch_links(now);
        let (weights, states) = self.wanted(now, peers);
        if weights != self.weights {
            let lost = weights.iter().flatten().zip(self.weights.iter().flatten()).any(|(new, old)| *new == 0 && *old > 0);
            let held = self.last_build.is_some_and(|t| now.duration_since(t) < REBUILD_HOLD);
            if lost || !held {
                self.rebuild(weights, &states, now);
            }
        }
        self.states = states;
        self.push();
    }

    fn rebuild(&mut self, weights: Vec<Vec<u32>>, states: &[Vec<&'static str>], now: Instant) {
        let mut vips = Vec::with_capacity(self.services.len());
        for (si, s) in self.services.iter().enumerate() {
            let specs: Vec<MemberSpec> = s
                .members
                .iter()
                .zip(&weights[si])
                .map(|(m, &weight)| MemberSpec {
                    key: member_key(&m.address.octets()),
                    weight,
                    entry: MemberEntry { mac: self.neighbours.get(m.port, m.address).unwrap_or([0; 6]), port: m.port },
                })
                .collect();
            let live = weights[si].iter().filter(|w| **w > 0).count();
            let old_live = self.weights[si].iter().filter(|w| **w > 0).count();
            for (mi, m) in s.members.iter().enumerate() {
                let (old, new) = (self.weights[si][mi] > 0, weights[si][mi] > 0);
                if old != new {
                    let verb = if new { "joins" } else { "leaves" };
                    let kind = if new { "member_joined" } else { "member_left" };
                    let msg = format!("service {}: member {} {verb} the table ({})", s.name, m.address, states[si][mi]);
                    self.log.push(kind, Some(&m.address.to_string()), msg, false);
                }
            }
            if live == 0 && old_live > 0 {
                self.log.push("service_no_member", None, format!("service {} ({}): NO live member; its packets are dropped", s.name, s.vip), true);
            }
            let size = table_size_for(s.members.len() * (SLOTS_PER_MEMBER / 100));
            let table = if live == 0 {
                None
            } else {
                match SelectionTable::build(s.hasher(), &specs, Some(size)) {
                    Ok(fresh) => Some(self.only_leavers_move(si, &weights[si], fresh)),
                    Err(e) => {
                        self.log.push("table_build_failed", None, format!("service {}: cannot build the selection table: {e}", s.name), true);
                        self.current.vips.get(si).cloned().flatten()
                    }
                }
            };
            self.rebuilds[si] += 1;
            vips.push(table);
        }
        self.current = Arc::new(BalanceTables { vips });
        self.weights = weights;
        self.last_build = Some(now);
        self.pending.iter_mut().for_each(|p| *p = true);
    }

    /// When the only change to a service is members leaving, its current table with just
    /// their slots handed over (see `SelectionTable::without`): the remaining members keep
    /// every flow they had. Otherwise (joins, weight changes) the fresh table.
    fn only_leavers_move(&self, si: usize, new: &[u32], fresh: SelectionTable) -> SelectionTable {
        let old = &self.weights[si];
        let only_leaving = old.iter().zip(new).all(|(o, n)| o == n || (*o > 0 && *n == 0));
        match self.current.vips.get(si).and_then(|t| t.as_ref()) {
            Some(current) if only_leaving => {
                current.without(&fresh, |i| old.get(usize::from(i)).is_some_and(|&o| o > 0) && new.get(usize::from(i)) == Some(&0)).unwrap_or(fresh)
            }
            _ => fresh,
        }
    }

    fn push(&mut self) {
        for (i, w) in self.workers.iter().enumerate() {
            if self.pending[i] && w(self.current.clone()) {
                self.pending[i] = false;
            }
        }
    }

    /// Per member, for `ctl members` and the metrics.
    pub fn members(&self) -> Vec<MemberView> {
        let snaps: Vec<Vec<Vec<(u64, u64)>>> = self.counters.iter().map(|c| c.snapshot()).collect();
        let conns: Vec<Vec<Vec<u64>>> = if self.connections { self.counters.iter().map(|c| c.connections()).collect() } else { Vec::new() };
        let mut out = Vec::new();
        for (si, s) in self.services.iter().enumerate() {
            let table = self.current.vips.get(si).and_then(|t| t.as_ref());
            for (mi, m) in s.members.iter().enumerate() {
                let (packets, bytes) = snaps
                    .iter()
                    .filter_map(|lcore| lcore.get(si)?.get(mi).copied())
                    .fold((0, 0), |(p, b), (p2, b2)| (p + p2, b + b2));
                let share = table.map_or(0.0, |t| {
                    let shares = t.table().shares();
                    shares.get(mi).map_or(0.0, |&n| f64::from(n) / t.table().size() as f64)
                });
                out.push(MemberView {
                    service: s.name.clone(),
                    vip: s.vip.to_string(),
                    member: m.address.to_string(),
                    peer: m.peer.clone(),
                    state: self.states[si][mi].to_string(),
                    mac: self.neighbours.get(m.port, m.address).map(|a| crate::config::MacAddr(a).to_string()),
                    weight: m.weight,
                    effective_weight: self.weights[si][mi],
                    share,
                    packets,
                    bytes,
                    connections: self.connections.then(|| conns.iter().filter_map(|lcore| lcore.get(si)?.get(mi).copied()).sum()),
                });
            }
        }
        out
    }

    pub fn service_views(&self) -> Vec<ServiceView> {
        let no_member: Vec<Vec<u64>> = self.counters.iter().map(|c| c.no_member()).collect();
        self.services
            .iter()
            .enumerate()
            .map(|(si, s)| ServiceView {
                service: s.name.clone(),
                vip: s.vip.to_string(),
                live_members: self.weights[si].iter().filter(|w| **w > 0).count(),
                table_size: self.current.vips.get(si).and_then(|t| t.as_ref()).map_or(0, |t| t.table().size()),
                rebuilds: self.rebuilds[si],
                no_member_drops: no_member.iter().filter_map(|v| v.get(si)).sum(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::bounded;

    fn plan() -> Vec<ServicePlan> {
        vec![ServicePlan {
            name: "web".into(),
            vip: Ipv4Addr::new(10, 0, 0, 100),
            protocol: 6,
            ports: vec![(80, 80)],
            hash: HashPolicy::L34,
            client_port: Some(0),
            members: (1..=3)
                .map(|i| MemberPlan { address: Ipv4Addr::new(10, 0, 0, 20 + i), weight: 100, peer: Some(format!("m{i}")), port: 1, tcp_port: None })
                .collect(),
        }]
    }

    fn peer(id: &str, state: &str, w: Option<f64>) -> PeerMetrics {
        PeerMetrics { node: id.into(), class: "server".into(), state: state.into(), workload: w, ..Default::default() }
    }

    fn setup() -> (Balancer, crossbeam_channel::Receiver<ToLcore<Arc<BalanceTables>>>, Neighbours) {
        let n = Neighbours::new();
        let ports = vec![
            PortAddrs { index: 0, mac: [2, 0, 0, 0, 0, 1], ipv4: vec![(Ipv4Addr::new(10, 0, 0, 2), 24)] },
            PortAddrs { index: 1, mac: [2, 0, 0, 0, 0, 2], ipv4: vec![(Ipv4Addr::new(10, 0, 0, 3), 24)] },
        ];
        let mut b = Balancer::new(plan(), n.clone(), EventLog::new(), &ports);
        let (tx, rx) = bounded(4);
        b.attach(vec![table_sink(tx, |t| t)], Vec::new());
        (b, rx, n)
    }

    fn latest(rx: &crossbeam_channel::Receiver<ToLcore<Arc<BalanceTables>>>) -> Option<Arc<BalanceTables>> {
        rx.try_iter().filter_map(|c| if let ToLcore::Update(t) = c { Some(t) } else { None }).last()
    }

    #[test]
    fn members_join_when_resolved_and_up_and_leave_at_once_when_down() {
        let (mut b, rx, n) = setup();
        assert_eq!(n.counts(), (3, 0), "every member is to be resolved");
        let t0 = Instant::now();
        let all_up = [peer("m1", "up", None), peer("m2", "up", None), peer("m3", "up", None)];
        b.poll(t0, &all_up);
        assert!(latest(&rx).is_none(), "nothing changed: no member is resolved yet");
        for i in 1..=3 {
            n.learn(1, Ipv4Addr::new(10, 0, 0, 20 + i), [2, 0, 0, 0, 9, i]);
        }
        b.poll(t0, &all_up);
        let t = latest(&rx).expect("a table with the three members");
        let tab = t.vips[0].as_ref().unwrap();
        assert!(tab.table().shares().iter().all(|&s| s > 0));
        assert_eq!(tab.members()[1].mac, [2, 0, 0, 0, 9, 2]);
        // m2 goes down: removed at once, even within the hold time.
        let m2_down = [peer("m1", "up", None), peer("m2", "down", None), peer("m3", "up", None)];
        b.poll(t0 + Duration::from_millis(10), &m2_down);
        let t = latest(&rx).expect("m2 removed at once");
        assert_eq!(t.vips[0].as_ref().unwrap().table().shares()[1], 0);
        // It comes back: the join waits for the hold time.
        b.poll(t0 + Duration::from_millis(20), &all_up);
        assert!(latest(&rx).is_none(), "a join is held");
        b.poll(t0 + Duration::from_millis(20) + REBUILD_HOLD, &all_up);
        assert!(latest(&rx).unwrap().vips[0].as_ref().unwrap().table().shares()[1] > 0);
        let v = b.members();
        assert_eq!(v.iter().map(|m| m.state.as_str()).collect::<Vec<_>>(), ["up", "up", "up"]);
        assert!((v.iter().map(|m| m.share).sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn members_behind_a_port_without_link_leave_the_table() {
        let (b, rx, n) = setup();
        let links = dataplane::lcore_link::LinkStates::new(2);
        let mut b = b.with_links(links.clone());
        for i in 1..=3 {
            n.learn(1, Ipv4Addr::new(10, 0, 0, 20 + i), [2, 0, 0, 0, 9, i]);
        }
        let t0 = Instant::now();
        let all_up = [peer("m1", "up", None), peer("m2", "up", None), peer("m3", "up", None)];
        b.poll(t0, &all_up);
        assert!(latest(&rx).unwrap().vips[0].is_some());
        // The members' port (1) loses its link: a flap shorter than the hold moves nothing;
        // a longer loss takes every member out.
        links.set(1, false);
        b.poll(t0 + Duration::from_millis(10), &all_up);
        b.poll(t0 + Duration::from_millis(10) + LINK_DOWN_HOLD / 2, &all_up);
        assert!(latest(&rx).is_none(), "a short flap leaves the table alone");
        b.poll(t0 + Duration::from_millis(10) + LINK_DOWN_HOLD, &all_up);
        assert!(latest(&rx).expect("a new table").vips[0].is_none(), "no member is reachable");
        assert!(b.members().iter().all(|m| m.state == "link_down"));
        links.set(1, true);
        b.poll(t0 + Duration::from_millis(20) + LINK_DOWN_HOLD + REBUILD_HOLD, &all_up);
        assert!(latest(&rx).unwrap().vips[0].as_ref().unwrap().table().shares().iter().all(|&s| s > 0));
    }

    #[test]
    fn workload_scales_weights_in_steps_and_no_live_member_is_no_table() {
        let (mut b, rx, n) = setup();
        for i in 1..=3 {
            n.learn(1, Ipv4Addr::new(10, 0, 0, 20 + i), [2, 0, 0, 0, 9, i]);
        }
        let t0 = Instant::now();
        b.poll(t0, &[peer("m1", "up", Some(1.0)), peer("m2", "up", Some(0.5)), peer("m3", "up", Some(0.5))]);
        let t = latest(&rx).unwrap();
        let shares = t.vips[0].as_ref().unwrap().table().shares().to_vec();
        let total: u32 = shares.iter().sum();
        assert!((f64::from(shares[0]) / f64::from(total) - 0.5).abs() < 0.02, "{shares:?}");
        // Noise below half a step does not rebuild.
        let rebuilds = b.service_views()[0].rebuilds;
        b.poll(t0 + Duration::from_secs(1), &[peer("m1", "up", Some(0.99)), peer("m2", "up", Some(0.52)), peer("m3", "up", Some(0.49))]);
        assert_eq!(b.service_views()[0].rebuilds, rebuilds);
        // Everyone down: the service has no table (its packets are dropped as no_member).
        b.poll(t0 + Duration::from_secs(2), &[peer("m1", "down", None), peer("m2", "down", None), peer("m3", "held_down", None)]);
        assert!(latest(&rx).unwrap().vips[0].is_none());
        assert_eq!(b.service_views()[0].live_members, 0);
    }

    #[test]
    fn a_member_flapping_every_interval_does_not_rebuild_the_table_every_interval() {
        let (mut b, _rx, n) = setup();
        for i in 1..=3 {
            n.learn(1, Ipv4Addr::new(10, 0, 0, 20 + i), [2, 0, 0, 0, 9, i]);
        }
        let t0 = Instant::now();
        let up = [peer("m1", "up", None), peer("m2", "up", None), peer("m3", "up", None)];
        let down = [peer("m1", "up", None), peer("m2", "down", None), peer("m3", "up", None)];
        b.poll(t0, &up);
        let start = b.service_views()[0].rebuilds;
        // 2 s of m2 changing state every 10 ms interval (200 changes; the detector's flap
        // damping would hold it down long before, this is the table's own bound).
        for k in 1..=200u32 {
            b.poll(t0 + Duration::from_millis(10 * u64::from(k)), if k % 2 == 1 { &down } else { &up });
        }
        let rebuilds = b.service_views()[0].rebuilds - start;
        // A join needs REBUILD_HOLD since the last rebuild, so each 500 ms gives at most one
        // join and the removal after it: ≤ 2 × (2 s / 500 ms) + 1.
        assert!(rebuilds <= 9, "{rebuilds} rebuilds in 2 s of flapping");
        assert!(rebuilds >= 2, "the flaps must still be applied: {rebuilds}");
    }

    #[test]
    fn a_member_that_leaves_moves_only_its_own_flows_and_gets_them_back_when_it_returns() {
        let (mut b, rx, n) = setup();
        for i in 1..=3 {
            n.learn(1, Ipv4Addr::new(10, 0, 0, 20 + i), [2, 0, 0, 0, 9, i]);
        }
        let t0 = Instant::now();
        let up = [peer("m1", "up", None), peer("m2", "up", None), peer("m3", "up", None)];
        b.poll(t0, &up);
        let before = latest(&rx).unwrap().vips[0].clone().unwrap();
        b.poll(t0 + Duration::from_millis(10), &[peer("m1", "up", None), peer("m2", "down", None), peer("m3", "up", None)]);
        let during = latest(&rx).unwrap().vips[0].clone().unwrap();
        for (slot, (&was, &now)) in before.table().slots().iter().zip(during.table().slots()).enumerate() {
            if was == 1 {
                assert_ne!(now, 1, "slot {slot}");
            } else {
                assert_eq!(now, was, "slot {slot} of a member that stayed moved");
            }
        }
        // Back after the hold: a fresh table, which is the one it had before.
        b.poll(t0 + Duration::from_millis(10) + REBUILD_HOLD, &up);
        let after = latest(&rx).unwrap().vips[0].clone().unwrap();
        assert_eq!(after.table().slots(), before.table().slots());
    }

    #[test]
    fn a_full_worker_queue_gets_the_table_on_a_later_poll() {
        let n = Neighbours::new();
        let ports = vec![PortAddrs { index: 1, mac: [2, 0, 0, 0, 0, 2], ipv4: vec![(Ipv4Addr::new(10, 0, 0, 3), 24)] }];
        let mut b = Balancer::new(plan(), n.clone(), EventLog::new(), &ports);
        let (tx, rx) = bounded(1);
        tx.try_send(ToLcore::Update(Arc::new(BalanceTables::default()))).unwrap();
        b.attach(vec![table_sink(tx, |t| t)], Vec::new());
        n.learn(1, Ipv4Addr::new(10, 0, 0, 21), [2, 0, 0, 0, 9, 1]);
        let t0 = Instant::now();
        b.poll(t0, &[peer("m1", "up", None)]);
        let _ = rx.try_recv(); // the lcore takes the old command
        b.poll(t0, &[peer("m1", "up", None)]);
        let t = latest(&rx).expect("delivered on the next poll");
        assert!(t.vips[0].is_some());
    }
}
