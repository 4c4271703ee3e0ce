//! Role `balance`: channel-bonded, stateless load balancing (DESIGN.md, "Balance").
//!
//! Each VIP ([`VipSpec`]: an IPv4 address, one protocol or any, destination port ranges or
//! all) has members that are treated like the links of a bond. A frame for a VIP leaves
//! toward the member its flow hash selects ([`SelectionTable::select`]), **unchanged above
//! layer 2**: the destination MAC becomes the member's, the source MAC the egress port's,
//! and nothing else is touched: no TTL decrement, no checksum update, VLAN tags left as they
//! arrived (so a member must be reachable on the VLAN its clients' frames carry). The
//! members hold the VIP themselves without answering ARP for it (thesis §4.7.1) and reply
//! to clients directly.
//!
//! # Which frames are "for a VIP"
//! An IPv4 frame whose destination address is a VIP address is parsed once
//! ([`parse_frame`]); a malformed one is dropped with its parse reason (a frame toward a
//! VIP is the balancer's to judge, unlike transit traffic). Then the VIPs are tried in
//! configured order and the **first** one that matches takes the frame:
//!
//! * the address must be equal, and the protocol equal unless the VIP says any;
//! * a whole TCP or UDP datagram matches when its destination port is in one of the VIP's
//!   ranges (or the VIP has none); a datagram without ports (ICMP, ESP, ...) matches only
//!   a VIP without port ranges;
//! * **an IPv4 fragment — the first one included — is matched on address and protocol
//!   only**, ignoring port ranges. Later fragments carry no ports, so this is the only rule
//!   under which every fragment of a datagram finds the same VIP; the first fragment must
//!   follow it too, or a datagram whose ports select the second of two VIPs sharing an
//!   address and protocol would have its first fragment on one VIP's members and the rest
//!   on the other's. Together with the hash's own fragment rule (no fragment is hashed with
//!   ports, see [`crate::balance`]), all fragments of a datagram reach one member. The
//!   cost: when several VIPs share an address and protocol and differ by port ranges,
//!   fragments of all of them go to the first one's members; give such VIPs the same
//!   members, or keep their traffic unfragmented.
//!
//! No VIP matching → see below. The selection happens on any ingress port, and the
//! destination MAC is not checked (as for transit traffic in a bump in the wire).
//!
//! # What the balancer answers itself
//! * **ARP requests for a VIP address, on client-facing ports only**, with the port's MAC
//!   (the issue: ARP for the VIP is answered by the balancer only). On member-facing ports
//!   they are other traffic.
//! * **ICMP echo to a VIP address is balanced like any VIP traffic** when a VIP covers it
//!   (protocol any or ICMP, no port ranges): `ping VIP` then tests a member, and fails
//!   with `no_member` when none is live. When no VIP covers ICMP (a TCP-only service),
//!   the balancer answers the echo itself on client-facing ports, as an LVS director does,
//!   so that the VIP still answers ping.
//! * Anything else to a VIP address that no VIP matches (another port, another protocol,
//!   ICMP errors) is dropped as `not_vip`, whether or not other traffic is forwarded:
//!   it reached us because we answer ARP for the address, so forwarding it unchanged
//!   would send it out with our own MAC as destination.
//! * The appliance's own addresses ([`LocalAddrs`] per port, which must not contain a VIP
//!   address) are answered as in every role ([`answer_local`]: ARP, echo, punted
//!   heartbeats).
//!
//! Other traffic (not IPv4 to a VIP address) is forwarded between port pairs like the
//! `forward` role when pairs are configured, else dropped as `not_vip`.
//!
//! Known gap: an ICMP error about a member's reply (e.g. "fragmentation needed" for path
//! MTU discovery) is addressed to the VIP; it is balanced by the ICMP packet's own hash
//! when a VIP covers ICMP (so it may reach another member than the flow's), and dropped as
//! `not_vip` otherwise. Sending it to the flow's member needs a hash of the quoted header
//! (`FlowHasher` has no entry point for that with l2/l23 yet).
//!
//! # No per-flow state
//! The member is a pure function of the frame's hashed fields, the rack-wide seed and the
//! table, so every lcore and every appliance of the rack with the same table sends a flow to
//! the same member: the RX queue assignment does not matter, a failed appliance loses no
//! state, and there is nothing to expire, replicate or exhaust under a SYN flood. The price
//! is a bond's: when membership or weights change, the flows whose table slots move (the
//! failed member's, plus Maglev's small churn among the others) go to another member, which
//! resets their connections. The control thread builds new tables ([`BalanceTables`]) and
//! hands each lcore an `Arc` ([`Role::update`]), swapped between bursts.
//!
//! # Counters
//! Per VIP and member (the member's index in the list the VIP's tables are built over), the
//! packets and bytes sent toward it, plus per VIP the frames dropped for want of a live
//! member; see [`BalanceCounters`]. Drops are also counted by the lcore under their
//! [`DropReason`] like in every role.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::forward::{forward_or_answer, Forward};
use super::local::{answer_local, LocalAddrs, LocalVerdict};
use super::{Ctx, PortIndex, Role, Verdict};
use crate::balance::{MemberEntry, SelectionTable};
use crate::packet::icmp::quoted_v4;
use crate::packet::{classify_l4, ethertype, fast_v4, ip_proto, parse_frame, Ethernet, FlowKey, Ipv4, Parsed, L4};
use crate::stats::DropReason;

/// One balanced service, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    /// The service address (the members hold it too).
    pub addr: Ipv4Addr,
    /// IP protocol (6 TCP, 17 UDP, 1 ICMP ...); `None` = any.
    pub protocol: Option<u8>,
    /// Destination port ranges, inclusive; empty = every port (and port-less protocols).
    /// Only TCP and UDP have ports: a VIP with ranges must be TCP, UDP or any.
    pub ports: Vec<(u16, u16)>,
    /// How many members the VIP's selection tables are built over (the length of the
    /// member list given to [`SelectionTable::build`]: every configured member, dead ones
    /// at weight 0). Sizes the per-member counters; a member index beyond it is not counted.
    pub members: usize,
}

/// What a frame to a VIP address offers to the port test.
#[derive(Clone, Copy, Debug)]
enum PortTest {
    /// A whole TCP or UDP datagram: its destination port.
    Port(u16),
    /// A whole datagram of a protocol without ports.
    NoPort,
    /// An IPv4 fragment: ports are not looked at (see the module docs).
    Fragment,
}

impl VipSpec {
    /// Whether a frame to `self.addr` with this protocol and port test belongs to the VIP,
    /// as the VIP says it (the reference the [`PortRule`]s are tested against).
    #[cfg(test)]
    fn matches(&self, protocol: u8, ports: PortTest) -> bool {
        if self.protocol.is_some_and(|p| p != protocol) {
            return false;
        }
        match ports {
            PortTest::Fragment => true,
            _ if self.ports.is_empty() => true,
            PortTest::Port(p) => self.ports.iter().any(|&(lo, hi)| lo <= p && p <= hi),
            PortTest::NoPort => false,
        }
    }
}

/// The selection tables of every VIP, by VIP index (the order of the [`VipSpec`]s). Built
/// by the control thread and shared read-only by the lcores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BalanceTables {
    /// `None`, or a missing entry, means the VIP has no live member: its frames are dropped
    /// as `no_member` (as are those a table built with every weight 0 selects no member for).
    pub vips: Vec<Option<SelectionTable>>,
}

/// Why [`Balance::new`] refused a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BalanceError {
    /// A VIP address is also one of the appliance's own addresses on a port.
    VipIsLocal { vip: usize, port: PortIndex },
    /// A port range whose start is above its end.
    BadPortRange { vip: usize, range: (u16, u16) },
    /// Port ranges on a VIP whose protocol has no ports (neither TCP nor UDP).
    PortsWithoutPorts { vip: usize, protocol: u8 },
    /// A client-facing port that is not in the port list.
    NoSuchPort(PortIndex),
    /// More VIPs than a rule can name (65535).
    TooManyVips(usize),
}

impl fmt::Display for BalanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BalanceError::VipIsLocal { vip, port } => {
                write!(f, "VIP {vip}: its address is also an address of port {port}")
            }
            BalanceError::BadPortRange { vip, range: (lo, hi) } => {
                write!(f, "VIP {vip}: port range {lo}-{hi} is empty")
            }
            BalanceError::PortsWithoutPorts { vip, protocol } => {
                write!(f, "VIP {vip}: port ranges given for protocol {protocol}, which has no ports")
            }
            BalanceError::NoSuchPort(p) => write!(f, "client-facing port {p} is not configured"),
            BalanceError::TooManyVips(n) => write!(f, "{n} VIPs; at most 65535"),
        }
    }
}

impl std::error::Error for BalanceError {}

/// Per-member packet and byte counters of one lcore, readable by the control thread
/// without locks. Cloning gives another handle on the same counters.
///
/// Each [`Balance`] has its own set and is its only writer: an update is a plain relaxed
/// load, add and store (no locked read-modify-write on the fast path). Readers see every
/// counter move forward; packets and bytes of one member may be one frame apart in a
/// snapshot. The control thread sums the snapshots of all lcores.
#[derive(Clone, Debug)]
pub struct BalanceCounters(Arc<CounterCells>);

#[derive(Debug)]
struct CounterCells {
    /// VIP v's members are `members[first[v]..first[v + 1]]`; `first.len()` = VIPs + 1.
    first: Box<[usize]>,
    /// Per member: packets, bytes.
    members: Box<[[AtomicU64; 2]]>,
    /// Per member (as `members`): open connections, a gauge the splice role keeps for its
    /// backends (0 for balance members: the balancer keeps no per-flow state).
    connections: Box<[AtomicU64]>,
    /// Per VIP: frames dropped because no member was live.
    no_member: Box<[AtomicU64]>,
}

/// Add to a counter that only the calling lcore writes.
#[inline(always)]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl BalanceCounters {
    fn new(vips: &[VipSpec]) -> BalanceCounters {
        Self::for_members(&vips.iter().map(|v| v.members).collect::<Vec<_>>())
    }

    /// Counters for tables of `members[i]` members each (a VIP's, or a splice pool's).
    pub fn for_members(members: &[usize]) -> BalanceCounters {
        let mut first = Vec::with_capacity(members.len() + 1);
        let mut total = 0usize;
        first.push(0);
        for &m in members {
            total += m;
            first.push(total);
        }
        let cells = (0..total).map(|_| [AtomicU64::new(0), AtomicU64::new(0)]).collect();
        let connections = (0..total).map(|_| AtomicU64::new(0)).collect();
        let no_member = (0..members.len()).map(|_| AtomicU64::new(0)).collect();
        BalanceCounters(Arc::new(CounterCells { first: first.into(), members: cells, connections, no_member }))
    }

    /// The cells' index of member `member` of table `vip` (`None` past its members).
    #[inline(always)]
    fn cell(&self, vip: usize, member: u16) -> Option<usize> {
        let c = &*self.0;
        let (&start, &end) = (c.first.get(vip)?, c.first.get(vip + 1)?);
        let i = start + usize::from(member);
        (i < end).then_some(i)
    }

    #[inline(always)]
    pub(crate) fn count_member(&self, vip: usize, member: u16, bytes: usize) {
        if let Some([packets, octets]) = self.cell(vip, member).and_then(|i| self.0.members.get(i)) {
            bump(packets, 1);
            bump(octets, bytes as u64);
        }
    }

    /// Sets member `member` of table `vip`'s open connections (the splice role's backends).
    pub(crate) fn set_connections(&self, vip: usize, member: u16, n: u64) {
        if let Some(cell) = self.cell(vip, member).and_then(|i| self.0.connections.get(i)) {
            cell.store(n, Relaxed);
        }
    }

    /// Open connections of each member, by table (VIP or pool) then member index.
    pub fn connections(&self) -> Vec<Vec<u64>> {
        let c = &*self.0;
        c.first.windows(2).map(|w| c.connections[w[0]..w[1]].iter().map(|n| n.load(Relaxed)).collect()).collect()
    }

    #[inline]
    pub(crate) fn count_no_member(&self, vip: usize) {
        if let Some(c) = self.0.no_member.get(vip) {
            bump(c, 1);
        }
    }

    /// `(packets, bytes)` sent toward each member, by VIP index then member index.
    pub fn snapshot(&self) -> Vec<Vec<(u64, u64)>> {
        let c = &*self.0;
        c.first
            .windows(2)
            .map(|w| c.members[w[0]..w[1]].iter().map(|[p, b]| (p.load(Relaxed), b.load(Relaxed))).collect())
            .collect()
    }

    /// Frames dropped as `no_member`, by VIP index.
    pub fn no_member(&self) -> Vec<u64> {
        self.0.no_member.iter().map(|c| c.load(Relaxed)).collect()
    }
}

/// What a frame sent to one member becomes: its first 12 bytes (the member's MAC, then
/// the egress port's), and the port it leaves by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rewrite {
    macs: [u8; 12],
    port: PortIndex,
}

impl Rewrite {
    /// A member's rewrite (`None` for a member behind a port the role does not have: its
    /// frames are dropped as `no_route`).
    fn of_member(m: &MemberEntry, local: &[LocalAddrs]) -> Option<Rewrite> {
        let egress = local.get(usize::from(m.port))?;
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&m.mac);
        macs[6..].copy_from_slice(&egress.mac);
        Some(Rewrite { macs, port: m.port })
    }

    /// For every VIP's table, every member's rewrite.
    fn of(tables: &BalanceTables, local: &[LocalAddrs]) -> Box<[Box<[Option<Rewrite>]>]> {
        let mut all = Box::default();
        Self::refill(&mut all, tables, local);
        all
    }

    /// Makes `all` the rewrites of `tables`, writing over the lists whose length is
    /// already right (no allocation then).
    fn refill(all: &mut Box<[Box<[Option<Rewrite>]>]>, tables: &BalanceTables, local: &[LocalAddrs]) {
        if all.len() != tables.vips.len() {
            *all = tables.vips.iter().map(|_| Box::default()).collect();
        }
        for (list, table) in all.iter_mut().zip(&tables.vips) {
            let members = table.as_ref().map_or(&[][..], |t| t.members());
            if list.len() == members.len() {
                for (r, m) in list.iter_mut().zip(members) {
                    *r = Self::of_member(m, local);
                }
            } else {
                *list = members.iter().map(|m| Self::of_member(m, local)).collect();
            }
        }
    }
}

/// One VIP's protocol and destination port range at its address: the rules of every VIP
/// in one short array, scanned in VIP order (the first match wins), which is how a frame
/// to a VIP address finds its VIP ([`Balance::match_vip`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PortRule {
    addr: u32,
    /// The IP protocol, or [`ANY_PROTOCOL`].
    protocol: u16,
    lo: u16,
    hi: u16,
    /// The VIP has no port ranges: it also takes protocols without ports.
    any_port: bool,
    vip: u16,
}

const ANY_PROTOCOL: u16 = 0x100;

impl PortRule {
    /// Every VIP's rules, in VIP order: one per port range (an empty range list is every
    /// port).
    fn of(vips: &[VipSpec]) -> Box<[PortRule]> {
        let mut rules = Vec::new();
        for (vip, v) in vips.iter().enumerate() {
            let protocol = v.protocol.map_or(ANY_PROTOCOL, u16::from);
            let ranges: &[(u16, u16)] = if v.ports.is_empty() { &[(0, u16::MAX)] } else { &v.ports };
            let any_port = v.ports.is_empty();
            rules.extend(ranges.iter().map(|&(lo, hi)| PortRule { addr: u32::from(v.addr), protocol, lo, hi, any_port, vip: vip as u16 }));
        }
        rules.into_boxed_slice()
    }

    /// Whether a frame to `addr` with this protocol and port test belongs to the rule's VIP
    /// (a fragment is not looked at for ports: see the module docs).
    #[inline(always)]
    fn matches(&self, addr: u32, protocol: u8, ports: PortTest) -> bool {
        self.addr == addr
            && (self.protocol == u16::from(protocol) || self.protocol == ANY_PROTOCOL)
            && match ports {
                PortTest::Port(p) => self.lo <= p && p <= self.hi,
                PortTest::Fragment => true,
                PortTest::NoPort => self.any_port,
            }
    }
}

/// The balance role of one lcore. Not `Clone`: each lcore gets its own, built with
/// [`Balance::new`], so that each has its own counters (which have one writer).
#[derive(Debug)]
pub struct Balance {
    vips: Vec<VipSpec>,
    /// The distinct VIP addresses: the cheap test before a frame is parsed.
    vip_addrs: Vec<Ipv4Addr>,
    /// Every VIP's protocol and port ranges, in matching order (see [`PortRule`]).
    port_rules: Box<[PortRule]>,
    tables: Arc<BalanceTables>,
    /// The appliance's own addresses and MACs, by port index (the rewrites' egress MACs).
    local: Vec<LocalAddrs>,
    /// Per VIP, per member of its table: the frame's new MACs and its egress port (see
    /// [`Rewrite`]), remade with every table.
    rewrites: Box<[Box<[Option<Rewrite>]>]>,
    /// On client-facing ports: the port's MAC and every VIP address (ARP, unbalanced echo).
    vip_local: Vec<Option<LocalAddrs>>,
    /// Other traffic; `None` = dropped as `not_vip`.
    forward: Option<Forward>,
    counters: BalanceCounters,
}

impl Balance {
    /// `vips` in matching order (the first match wins); `tables` the initial selection
    /// tables; `local[i]` what port i answers for and its MAC (without VIP addresses);
    /// `client_ports` the ports on which ARP for the VIPs is answered; `forward_pairs`
    /// port pairs between which other traffic is forwarded (as the `forward` role does),
    /// `None` to drop it.
    pub fn new(
        vips: Vec<VipSpec>,
        tables: Arc<BalanceTables>,
        local: Vec<LocalAddrs>,
        client_ports: &[PortIndex],
        forward_pairs: Option<&[(PortIndex, PortIndex)]>,
    ) -> Result<Balance, BalanceError> {
        if vips.len() > usize::from(u16::MAX) {
            return Err(BalanceError::TooManyVips(vips.len()));
        }
        for (vip, v) in vips.iter().enumerate() {
            if let Some(port) = local.iter().position(|l| l.owns(v.addr)) {
                return Err(BalanceError::VipIsLocal { vip, port: port as PortIndex });
            }
            if let Some(&range) = v.ports.iter().find(|(lo, hi)| lo > hi) {
                return Err(BalanceError::BadPortRange { vip, range });
            }
            match v.protocol {
                Some(protocol) if !v.ports.is_empty() && protocol != ip_proto::TCP && protocol != ip_proto::UDP => {
                    return Err(BalanceError::PortsWithoutPorts { vip, protocol });
                }
                _ => {}
            }
        }
        let mut vip_addrs: Vec<Ipv4Addr> = Vec::new();
        for v in &vips {
            if !vip_addrs.contains(&v.addr) {
                vip_addrs.push(v.addr);
            }
        }
        let mut vip_local = vec![None; local.len()];
        for &p in client_ports {
            let (Some(slot), Some(me)) = (vip_local.get_mut(usize::from(p)), local.get(usize::from(p))) else {
                return Err(BalanceError::NoSuchPort(p));
            };
            *slot = Some(LocalAddrs { mac: me.mac, ipv4: vip_addrs.clone(), punt_udp: None, punt_arp: false });
        }
        let forward = forward_pairs.map(|pairs| Forward::new(pairs, local.clone()));
        let counters = BalanceCounters::new(&vips);
        let port_rules = PortRule::of(&vips);
        let rewrites = Rewrite::of(&tables, &local);
        Ok(Balance { vips, vip_addrs, port_rules, tables, local, rewrites, vip_local, forward, counters })
    }

    /// A handle on this lcore's per-member counters, for the control thread.
    pub fn counters(&self) -> BalanceCounters {
        self.counters.clone()
    }

    /// The configured VIPs.
    pub fn vips(&self) -> &[VipSpec] {
        &self.vips
    }

    /// The tables in use.
    pub fn tables(&self) -> &Arc<BalanceTables> {
        &self.tables
    }

    /// An IPv4 frame whose destination address is a VIP address; its IPv4 header starts at
    /// `l3`. The fast path: the IPv4 header and the L4 header are validated as
    /// `parse_frame` does, but no `Parsed` is built (copying it cost more than the rest of
    /// the work); the hash is taken from a `FlowKey` made of the fields read here.
    fn balance_vip(&self, ingress: PortIndex, l3: usize, frame: &mut [u8]) -> Verdict {
        let (protocol, header_len, total_len, fragment, first_fragment, src, dst) = match Ipv4::parse_unverified(&frame[l3..]) {
            Ok(ip) => (
                ip.protocol(),
                ip.header_len(),
                ip.total_len(),
                ip.is_fragment(),
                ip.frag_offset() == 0,
                ip.src_addr(),
                ip.dst_addr(),
            ),
            Err(r) => return Verdict::Drop(r),
        };
        let l4 = if fragment {
            L4::Fragment { first: first_fragment }
        } else {
            match classify_l4(protocol, false, &frame[l3 + header_len..l3 + total_len], l3 + header_len) {
                Ok(l4) => l4,
                Err(r) => return Verdict::Drop(r),
            }
        };
        // An ICMP error about a datagram the VIP sent (a member's reply: "fragmentation
        // needed" for PMTU discovery, unreachable, time exceeded) goes to the member of the
        // flow it quotes, whatever VIP covers ICMP: the flow seen from the client's side.
        if let L4::Icmp(info) = l4 {
            if let Some(q) = frame.get(info.offset..info.end).and_then(quoted_v4).filter(|q| q.src == dst) {
                if let Some(vip) = self.match_vip(dst, q.protocol, PortTest::Port(q.src_port)) {
                    let key = FlowKey { src: IpAddr::V4(q.dst), dst: IpAddr::V4(q.src), protocol: q.protocol, src_port: q.dst_port, dst_port: q.src_port };
                    return self.to_member(vip, &key, frame);
                }
            }
        }
        let (ports, (src_port, dst_port)) = match l4 {
            L4::Fragment { .. } => (PortTest::Fragment, (0, 0)),
            L4::Tcp(l4) | L4::Udp(l4) => {
                let p = &frame[l4.offset..l4.offset + 4];
                let (s, d) = (u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]]));
                (PortTest::Port(d), (s, d))
            }
            _ => (PortTest::NoPort, (0, 0)),
        };
        let Some(vip) = self.match_vip(dst, protocol, ports) else {
            return match parse_frame(frame) {
                Ok(parsed) => self.unmatched(ingress, frame, &parsed),
                Err(r) => Verdict::Drop(r),
            };
        };
        let key = FlowKey { src: IpAddr::V4(src), dst: IpAddr::V4(dst), protocol, src_port, dst_port };
        self.to_member(vip, &key, frame)
    }

    /// The first VIP on `addr` that takes this protocol and port test (matching order as
    /// configured).
    #[inline(always)]
    fn match_vip(&self, addr: Ipv4Addr, protocol: u8, ports: PortTest) -> Option<usize> {
        let addr = u32::from(addr);
        self.port_rules.iter().find(|r| r.matches(addr, protocol, ports)).map(|r| usize::from(r.vip))
    }

    /// The frame of `key`, matched to VIP `vip`, rewritten toward the member its flow hash
    /// selects (or dropped as `no_member`). `frame` holds at least an Ethernet header.
    #[inline(always)]
    fn to_member(&self, vip: usize, key: &FlowKey, frame: &mut [u8]) -> Verdict {
        let chosen = match self.tables.vips.get(vip) {
            Some(Some(table)) => table.select_v4(frame, key),
            _ => None,
        };
        let Some((index, _)) = chosen else {
            self.counters.count_no_member(vip);
            return Verdict::Drop(DropReason::NoMember);
        };
        // One read after the table's slot (not the member, then its port's MAC): the
        // chain hash → slot → member → MAC was the role's longest wait in place.
        let rewrite = self.rewrites.get(vip).and_then(|r| r.get(usize::from(index))).copied().flatten();
        let (Some(rw), Some(l2)) = (rewrite, frame.get_mut(0..12)) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        l2.copy_from_slice(&rw.macs);
        self.counters.count_member(vip, index, frame.len());
        Verdict::Tx(rw.port)
    }

    /// To a VIP address, but no VIP matches: an echo request is answered on client-facing
    /// ports (no VIP covers ICMP); the rest is dropped (see the module docs).
    fn unmatched(&self, ingress: PortIndex, frame: &mut [u8], parsed: &Parsed) -> Verdict {
        if let (L4::Icmp(_), Some(Some(me))) = (parsed.l4, self.vip_local.get(usize::from(ingress))) {
            match answer_local(frame, me) {
                LocalVerdict::Replied => return Verdict::Reply,
                LocalVerdict::Drop(r) if r != DropReason::LocalUnhandled => return Verdict::Drop(r),
                _ => {}
            }
        }
        Verdict::Drop(DropReason::NotVip)
    }

    /// Not for a VIP address: the appliance's own addresses, then forwarding or `not_vip`.
    #[inline(never)]
    fn other(&mut self, ingress: PortIndex, frame: &mut [u8], ctx: &mut Ctx<'_>) -> Verdict {
        forward_or_answer(self.forward.as_mut(), &self.local, ingress, frame, ctx)
    }
}

impl Role for Balance {
    /// A new set of tables. The lcore drops its previous `Arc` in `update`; the control
    /// thread keeps a clone of what it sends (at least until the next update has been
    /// taken), so the lcore's drop is a reference-count decrement and the tables are freed
    /// on the control thread, not on the fast path.
    type Update = Arc<BalanceTables>;

    fn name(&self) -> &'static str {
        "balance"
    }

    /// Inlined into the lcore loop: the common VIP frame then costs no call (whose
    /// prologue and spills were a tenth of the role's samples in place); everything else
    /// is one call away, in `handle_rest`, so the loop's code stays small.
    #[inline(always)]
    fn handle(&mut self, ingress: PortIndex, frame: &mut [u8], ctx: &mut Ctx<'_>) -> Verdict {
        // The common frame (untagged IPv4 without options, whole TCP or UDP) in one pass;
        // a VIP frame the fast classifier does not take, or whose port no VIP covers, goes
        // the general way (`handle_rest`), which decides the same (see `packet::fast`).
        if let Some(f) = fast_v4(frame) {
            if let Some(vip) = self.match_vip(f.dst, f.protocol, PortTest::Port(f.dst_port)) {
                let key = FlowKey { src: IpAddr::V4(f.src), dst: IpAddr::V4(f.dst), protocol: f.protocol, src_port: f.src_port, dst_port: f.dst_port };
                return self.to_member(vip, &key, frame);
            }
            if !self.vip_addrs.contains(&f.dst) {
                return self.other(ingress, frame, ctx);
            }
        }
        self.handle_rest(ingress, frame, ctx)
    }

    /// The rewrites are remade here, on the lcore, between bursts (which keeps the
    /// tables the control thread builds free of the lcore's port MACs), in place: a
    /// table holds every configured member (dead ones at weight 0), so a VIP's count
    /// only changes when it loses or regains its table, and only then is its list
    /// allocated (and the old one freed) here.
    fn update(&mut self, tables: Arc<BalanceTables>) {
        Rewrite::refill(&mut self.rewrites, &tables, &self.local);
        self.tables = tables;
    }
}

impl Balance {
    /// What the fast classifier did not take: other ethertypes and IPv4 frames with
    /// options, fragments or other protocols.
    #[inline(never)]
    fn handle_rest(&mut self, ingress: PortIndex, frame: &mut [u8], ctx: &mut Ctx<'_>) -> Verdict {
        let (l3, et) = match Ethernet::parse(&*frame) {
            Ok(e) => (e.l3_offset(), e.ethertype()),
            Err(_) => return self.other(ingress, frame, ctx),
        };
        match et {
            ethertype::IPV4 => {
                // Cheap test on the raw destination before any validation: transit traffic
                // must not pay for a checksum pass here.
                if let Some(d) = frame.get(l3 + 16..l3 + 20) {
                    let dst = Ipv4Addr::new(d[0], d[1], d[2], d[3]);
                    if self.vip_addrs.contains(&dst) {
                        return self.balance_vip(ingress, l3, frame);
                    }
                }
            }
            ethertype::ARP => {
                if let Some(Some(me)) = self.vip_local.get(usize::from(ingress)) {
                    // Requests for a VIP are answered; anything else goes on unchanged.
                    if answer_local(frame, me) == LocalVerdict::Replied {
                        return Verdict::Reply;
                    }
                }
            }
            _ => {}
        }
        self.other(ingress, frame, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{member_key, FlowHasher, HashPolicy, MemberEntry, MemberSpec};
    use crate::packet::build::{arp_request, udp4, Udp4Addrs, UDP4_HEADERS};
    use crate::packet::testutil::ipv4_tcp_frame;
    use crate::packet::{arp, icmp::icmp_type, Arp, Icmp, Ipv4};
    use crate::stats::LcoreCounters;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// Port 0 faces the clients, ports 1 and 2 the members.
    const PORT_MAC: [[u8; 6]; 3] = [[2, 0, 0, 0, 0xc, 0], [2, 0, 0, 0, 0xc, 1], [2, 0, 0, 0, 0xc, 2]];
    const ROUTER_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const OWN: [Ipv4Addr; 3] = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 2, 0, 1)];
    const VIP_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const VIP_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
    const VIP_DOWN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    /// VIP indexes of `vips()`.
    const TCP_WEB: usize = 0;
    const UDP_53: usize = 1;
    const UDP_HIGH: usize = 2;
    const ANY_B: usize = 3;
    const DOWN: usize = 4;

    fn local() -> Vec<LocalAddrs> {
        (0..3).map(|i| LocalAddrs { mac: PORT_MAC[i], ipv4: vec![OWN[i]], punt_udp: None, punt_arp: false }).collect()
    }

    fn vip(addr: Ipv4Addr, protocol: Option<u8>, ports: &[(u16, u16)], members: usize) -> VipSpec {
        VipSpec { addr, protocol, ports: ports.to_vec(), members }
    }

    /// Two VIPs share VIP_A/UDP with different port ranges (the fragment rule's case).
    fn vips() -> Vec<VipSpec> {
        vec![
            vip(VIP_A, Some(ip_proto::TCP), &[(80, 80), (8000, 8099)], 4),
            vip(VIP_A, Some(ip_proto::UDP), &[(53, 53)], 3),
            vip(VIP_A, Some(ip_proto::UDP), &[(5000, 5999)], 3),
            vip(VIP_B, None, &[], 3),
            vip(VIP_DOWN, Some(ip_proto::TCP), &[(443, 443)], 2),
        ]
    }

    /// Members of VIP `v`: distinct MACs across VIPs, alternating ports 1 and 2.
    fn members(v: usize, weights: &[u32]) -> Vec<MemberSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| MemberSpec {
                key: member_key(format!("vip{v}-member{i}").as_bytes()),
                weight,
                entry: MemberEntry { mac: [0x02, 0xee, 0, 0, v as u8, i as u8], port: 1 + (i as u16 % 2) },
            })
            .collect()
    }

    fn table(v: usize, weights: &[u32]) -> Option<SelectionTable> {
        Some(SelectionTable::build(FlowHasher::new(HashPolicy::L34, 0x5eed), &members(v, weights), None).unwrap())
    }

    fn tables() -> Arc<BalanceTables> {
        Arc::new(BalanceTables {
            vips: vec![table(0, &[1; 4]), table(1, &[1; 3]), table(2, &[1; 3]), table(3, &[1, 2, 3]), None],
        })
    }

    fn balance(forward: Option<&[(PortIndex, PortIndex)]>) -> Balance {
        Balance::new(vips(), tables(), local(), &[0], forward).unwrap()
    }

    #[test]
    fn the_port_rules_choose_the_first_vip_that_takes_the_frame() {
        let mut v = vips();
        // An overlap: a second TCP VIP on A whose range 8050-8200 shadows 8000-8099 in part.
        v.push(vip(VIP_A, Some(ip_proto::TCP), &[(8050, 8200)], 2));
        let b = Balance::new(v.clone(), tables(), local(), &[0], None).unwrap();
        let other = Ipv4Addr::new(192, 0, 2, 99);
        let ports = [0, 52, 53, 54, 79, 80, 81, 443, 4999, 5000, 5999, 6000, 7999, 8000, 8049, 8050, 8099, 8100, 8200, 8201, u16::MAX];
        let tests = ports.iter().map(|&p| PortTest::Port(p)).chain([PortTest::NoPort, PortTest::Fragment]);
        for addr in [VIP_A, VIP_B, VIP_DOWN, other] {
            for protocol in [ip_proto::TCP, ip_proto::UDP, ip_proto::ICMP, 47] {
                for test in tests.clone() {
                    let said = v.iter().position(|s| s.addr == addr && s.matches(protocol, test));
                    assert_eq!(b.match_vip(addr, protocol, test), said, "{addr} protocol {protocol} {test:?}");
                }
            }
        }
    }

    fn run(b: &mut Balance, ingress: PortIndex, frame: &mut [u8]) -> Verdict {
        let mut c = LcoreCounters::default();
        let mut ctx = Ctx { now_tsc: 0, counters: &mut c, emit: &mut crate::role::NoEmit, clock: None };
        b.handle(ingress, frame, &mut ctx)
    }

    fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        let a = Udp4Addrs { src_mac: ROUTER_MAC, dst_mac: PORT_MAC[0], src, dst, sport, dport };
        let mut f = vec![0u8; UDP4_HEADERS + payload.len()];
        let n = udp4(&mut f, &a, 0x1234, payload).unwrap();
        f.truncate(n);
        f
    }

    fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        ipv4_tcp_frame(None, src.octets(), dst.octets(), sport, dport, 0)
    }

    fn refix_ip(f: &mut [u8]) {
        Ipv4::new_unchecked(&mut f[14..]).fill_checksum();
    }

    /// The frame as a fragment: `word` is the flags/offset word; `junk` (if any) is written
    /// where a later fragment carries data but the first one carries the ports.
    fn fragment(mut f: Vec<u8>, word: u16, junk: Option<(u16, u16)>) -> Vec<u8> {
        f[20..22].copy_from_slice(&word.to_be_bytes());
        if let Some((s, d)) = junk {
            f[34..36].copy_from_slice(&s.to_be_bytes());
            f[36..38].copy_from_slice(&d.to_be_bytes());
        }
        refix_ip(&mut f);
        f
    }

    /// An ICMP echo request (an IPv4/UDP frame turned into ICMP, checksums refilled).
    fn echo(src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> Vec<u8> {
        let mut f = udp(src, 1, dst, 1, &[0x5a; 16]);
        f[23] = ip_proto::ICMP;
        f[34..42].copy_from_slice(&[icmp_type::ECHO_REQUEST, 0, 0, 0, (ident >> 8) as u8, ident as u8, 0, 1]);
        Icmp::new_unchecked(&mut f[34..]).fill_checksum();
        refix_ip(&mut f);
        f
    }

    /// "Who has `target`? Tell CLIENT", padded to 60 bytes.
    fn arp_for(target: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        arp_request(&mut f, ROUTER_MAC, CLIENT, target).unwrap();
        f
    }

    /// The member VIP `v`'s table picks for `frame`, from the tables, not the role.
    fn pick(t: &BalanceTables, v: usize, frame: &[u8]) -> (u16, MemberEntry) {
        t.vips[v].as_ref().unwrap().select(&parse_frame(frame).unwrap(), frame).unwrap()
    }

    /// Runs `orig` through the role and checks it left toward `want` with only the MACs
    /// rewritten.
    fn assert_balanced(b: &mut Balance, orig: &[u8], want: MemberEntry) {
        let mut f = orig.to_vec();
        assert_eq!(run(b, 0, &mut f), Verdict::Tx(want.port));
        assert_eq!(&f[0..6], &want.mac, "destination = member");
        assert_eq!(&f[6..12], &PORT_MAC[usize::from(want.port)], "source = egress port");
        assert_eq!(&f[12..], &orig[12..], "nothing above layer 2 changed (TTL included)");
    }

    #[test]
    fn vip_frames_go_to_the_tables_member_with_only_the_macs_rewritten() {
        let mut b = balance(None);
        let t = tables();
        let mut seen = [HashSet::new(), HashSet::new(), HashSet::new(), HashSet::new()];
        for i in 0..300u16 {
            let client = Ipv4Addr::new(198, 51, 100, i as u8);
            let cases = [
                (TCP_WEB, tcp(client, 10000 + i, VIP_A, if i % 2 == 0 { 80 } else { 8000 + i % 100 })),
                (UDP_53, udp(client, 20000 + i, VIP_A, 53, b"query")),
                (UDP_HIGH, udp(client, 20000 + i, VIP_A, 5000 + i, b"data")),
                (ANY_B, udp(client, 30000 + i, VIP_B, i, b"any")),
            ];
            for (v, f) in cases {
                let (index, want) = pick(&t, v, &f);
                assert_balanced(&mut b, &f, want);
                seen[v].insert(index);
            }
        }
        for (v, s) in seen.iter().enumerate() {
            assert_eq!(s.len(), vips()[v].members, "VIP {v}: flows spread over every member");
        }
        // A tagged frame keeps its tag.
        let tagged = ipv4_tcp_frame(Some(12), CLIENT.octets(), VIP_A.octets(), 40000, 80, 0);
        let want = t.vips[TCP_WEB].as_ref().unwrap().select(&parse_frame(&tagged).unwrap(), &tagged).unwrap().1;
        assert_balanced(&mut b, &tagged, want);
    }

    #[test]
    fn a_flow_stays_on_one_member() {
        let mut b = balance(None);
        let mut members = HashSet::new();
        for i in 0..50u16 {
            let client = Ipv4Addr::new(198, 51, 100, 1 + i as u8);
            let mut flow_member = None;
            // Payload and IP id change from packet to packet; the member does not.
            for n in 0..20u8 {
                let mut f = udp(client, 40000 + i, VIP_A, 53, &[n; 40]);
                f[18] = n;
                refix_ip(&mut f);
                let Verdict::Tx(_) = run(&mut b, 0, &mut f) else { panic!("not balanced") };
                let mac: [u8; 6] = f[0..6].try_into().unwrap();
                assert_eq!(*flow_member.get_or_insert(mac), mac, "flow {i}, packet {n}");
            }
            members.insert(flow_member);
        }
        assert!(members.len() > 1, "different flows use different members");
    }

    /// VIPs UDP_53 and UDP_HIGH share VIP_A/UDP. The first fragment's ports select UDP_HIGH,
    /// the middle one's "ports" (data) UDP_53, the last one's nothing: all three must go to
    /// UDP_53 (the first VIP with that address and protocol) and to one member of it.
    #[test]
    fn all_fragments_of_a_datagram_go_to_one_member() {
        let mut b = balance(None);
        let t = tables();
        let mut used = HashSet::new();
        for i in 0..200u16 {
            let client = Ipv4Addr::new(198, 51, (i >> 8) as u8, i as u8);
            let whole = udp(client, 33000 + i, VIP_A, 5353, &[7; 64]);
            // Unfragmented, the datagram belongs to UDP_HIGH by its port.
            assert_balanced(&mut b, &whole, pick(&t, UDP_HIGH, &whole).1);
            let frags = [
                fragment(whole.clone(), 0x2000, None),
                fragment(whole.clone(), 0x2000 | 3, Some((i, 53))),
                fragment(whole.clone(), 6, Some((!i, 9999))),
            ];
            let (index, want) = pick(&t, UDP_53, &frags[0]);
            for (n, f) in frags.iter().enumerate() {
                assert_eq!(pick(&t, UDP_53, f).1, want, "the hash ignores ports of fragments");
                let mut g = f.clone();
                assert_eq!(run(&mut b, 0, &mut g), Verdict::Tx(want.port), "datagram {i} fragment {n}");
                assert_eq!(&g[0..6], &want.mac, "datagram {i} fragment {n}");
                assert_eq!(&g[12..], &f[12..]);
            }
            used.insert(index);
        }
        assert_eq!(used.len(), 3, "datagrams still spread");
        // TCP fragments of the web VIP too (ports outside its ranges do not matter).
        let first = ipv4_tcp_frame(None, CLIENT.octets(), VIP_A.octets(), 1, 2, 0x2000);
        let later = ipv4_tcp_frame(None, CLIENT.octets(), VIP_A.octets(), 3, 4, 185);
        let want = pick(&t, TCP_WEB, &first).1;
        assert_balanced(&mut b, &first, want);
        assert_balanced(&mut b, &later, want);
    }

    #[test]
    fn a_vip_without_live_member_drops_and_counts() {
        let mut b = balance(None);
        let c = b.counters();
        let mut f = tcp(CLIENT, 40000, VIP_DOWN, 443);
        let orig = f.clone();
        assert_eq!(run(&mut b, 0, &mut f), Verdict::Drop(DropReason::NoMember));
        assert_eq!(f, orig);
        // Every weight 0: a table that selects nobody.
        let mut t = (*tables()).clone();
        t.vips[ANY_B] = table(ANY_B, &[0, 0, 0]);
        b.update(Arc::new(t));
        assert_eq!(run(&mut b, 0, &mut echo(CLIENT, VIP_B, 1)), Verdict::Drop(DropReason::NoMember));
        // Tables shorter than the VIP list.
        b.update(Arc::new(BalanceTables { vips: vec![table(0, &[1; 4])] }));
        assert_eq!(run(&mut b, 0, &mut udp(CLIENT, 1, VIP_A, 53, b"")), Verdict::Drop(DropReason::NoMember));
        assert_eq!(c.no_member(), [0, 1, 0, 1, 1]);
        assert!(c.snapshot().iter().flatten().all(|&pb| pb == (0, 0)));
    }

    #[test]
    fn malformed_frames_toward_a_vip_are_dropped_with_their_reason() {
        let mut b = balance(Some(&[(0, 1)]));
        let good = tcp(CLIENT, 40000, VIP_A, 80);
        let mut bad_sum = good.clone();
        bad_sum[24] ^= 0xff;
        let mut bad_tcp = good.clone();
        bad_tcp[14 + 20 + 12] = 0x30; // data offset 3
        let mut too_long = good.clone();
        too_long[16..18].copy_from_slice(&200u16.to_be_bytes());
        refix_ip(&mut too_long);
        let mut short_udp = udp(CLIENT, 1, VIP_A, 53, b"abc");
        short_udp[38..40].copy_from_slice(&4u16.to_be_bytes()); // UDP length < 8
        let mut bad_ihl = good.clone();
        bad_ihl[14] = 0x44;
        let cases = [
            (bad_tcp, DropReason::MalformedTcp),
            (too_long, DropReason::MalformedIpv4),
            (short_udp, DropReason::MalformedUdp),
            (bad_ihl, DropReason::MalformedIpv4),
            (good[..14 + 20 + 10].to_vec(), DropReason::MalformedIpv4),
        ];
        for (mut f, why) in cases {
            let orig = f.clone();
            assert_eq!(run(&mut b, 0, &mut f), Verdict::Drop(why));
            assert_eq!(f, orig);
        }
        // The same defect in transit traffic is not ours to judge: forwarded.
        let mut transit = tcp(CLIENT, 40000, Ipv4Addr::new(203, 0, 113, 9), 80);
        transit[24] ^= 0xff;
        assert_eq!(run(&mut b, 0, &mut transit), Verdict::Tx(1));
        assert!(b.counters().snapshot().iter().flatten().all(|&pb| pb == (0, 0)));
        // The IPv4 header checksum of a VIP frame is the member's to verify, as a bond's
        // is the receiver's: the frame goes, unchanged above layer 2, where its flow goes.
        let (mut g, mut s) = (good.clone(), bad_sum.clone());
        let (to_good, to_bad) = (run(&mut b, 0, &mut g), run(&mut b, 0, &mut s));
        assert!(matches!(to_bad, Verdict::Tx(_)), "{to_bad:?}");
        assert_eq!(to_good, to_bad);
        assert_eq!(g[..12], s[..12]);
        assert_eq!(s[12..], bad_sum[12..]);
    }

    #[test]
    fn arp_for_a_vip_is_answered_on_client_ports_only() {
        for forward in [None, Some(&[(0u16, 1u16)][..])] {
            let mut b = balance(forward);
            for target in [VIP_A, VIP_B, VIP_DOWN] {
                let mut f = arp_for(target);
                assert_eq!(run(&mut b, 0, &mut f), Verdict::Reply, "{target}");
                assert_eq!(&f[0..6], &ROUTER_MAC);
                assert_eq!(&f[6..12], &PORT_MAC[0]);
                let a = Arp::parse(&f[14..]).unwrap();
                assert_eq!(a.operation(), arp::OP_REPLY);
                assert_eq!((a.sender_mac(), a.sender_ip()), (PORT_MAC[0], target));
                assert_eq!((a.target_mac(), a.target_ip()), (ROUTER_MAC, CLIENT));
                // On a member-facing port it is other traffic.
                let orig = arp_for(target);
                let mut f = orig.clone();
                let want = if forward.is_some() { Verdict::Tx(0) } else { Verdict::Drop(DropReason::NotVip) };
                assert_eq!(run(&mut b, 1, &mut f), want);
                assert_eq!(f, orig);
            }
            // The appliance's own address is answered on its port, VIP or not.
            let mut f = arp_for(OWN[1]);
            assert_eq!(run(&mut b, 1, &mut f), Verdict::Reply);
            assert_eq!(Arp::parse(&f[14..]).unwrap().sender_mac(), PORT_MAC[1]);
            let mut f = arp_for(OWN[0]);
            assert_eq!(run(&mut b, 0, &mut f), Verdict::Reply);
        }
    }

    #[test]
    fn echo_to_a_vip_that_covers_icmp_is_balanced() {
        let mut b = balance(None);
        let t = tables();
        let mut members = HashSet::new();
        for i in 0..64u8 {
            let f = echo(Ipv4Addr::new(198, 51, 100, i), VIP_B, 7);
            let (index, want) = pick(&t, ANY_B, &f);
            assert_balanced(&mut b, &f, want);
            members.insert(index);
        }
        assert!(members.len() > 1);
        assert_eq!(b.counters().snapshot()[ANY_B].iter().map(|pb| pb.0).sum::<u64>(), 64);
    }

    #[test]
    fn echo_to_a_vip_without_icmp_service_is_answered_by_the_balancer() {
        let mut b = balance(None);
        let orig = echo(CLIENT, VIP_A, 0x77);
        let mut f = orig.clone();
        assert_eq!(run(&mut b, 0, &mut f), Verdict::Reply);
        assert_eq!((&f[0..6], &f[6..12]), (&orig[6..12], &PORT_MAC[0][..]));
        let ip = Ipv4::parse(&f[14..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (VIP_A, CLIENT));
        let m = Icmp::parse(ip.payload()).unwrap();
        assert_eq!((m.msg_type(), m.echo_ident()), (icmp_type::ECHO_REPLY, 0x77));
        assert!(m.verify_checksum());
        // Not on a member-facing port; other unmatched traffic to a VIP address is dropped
        // even when other traffic is forwarded.
        let mut f = orig.clone();
        assert_eq!(run(&mut b, 1, &mut f), Verdict::Drop(DropReason::NotVip));
        let mut fwd = balance(Some(&[(0, 1)]));
        for mut f in [
            udp(CLIENT, 1, VIP_A, 9999, b"no service"),
            tcp(CLIENT, 1, VIP_A, 443),
            tcp(CLIENT, 1, VIP_DOWN, 80),
            fragment(udp(CLIENT, 1, VIP_DOWN, 443, b"x"), 0x2000, None),
        ] {
            let orig = f.clone();
            assert_eq!(run(&mut fwd, 0, &mut f), Verdict::Drop(DropReason::NotVip));
            assert_eq!(f, orig);
        }
        // An echo reply (not a request) to the VIP is not answered.
        let mut reply = echo(CLIENT, VIP_A, 1);
        Icmp::new_unchecked(&mut reply[34..]).update_type_code(icmp_type::ECHO_REPLY, 0);
        assert_eq!(run(&mut b, 0, &mut reply), Verdict::Drop(DropReason::NotVip));
    }

    #[test]
    fn other_traffic_is_forwarded_or_dropped_as_configured() {
        let elsewhere = Ipv4Addr::new(203, 0, 113, 9);
        let mut fwd = balance(Some(&[(0, 1)]));
        let mut drop = balance(None);
        let frames = [
            tcp(CLIENT, 1, elsewhere, 80),
            udp(CLIENT, 1, elsewhere, 53, b"x"),
            crate::packet::testutil::ipv6_udp_frame("2001:db8::1", "2001:db8::2", 1, 53),
            crate::packet::testutil::eth(None, 0x88cc),
            vec![1, 2, 3],
        ];
        for orig in frames {
            let mut f = orig.clone();
            assert_eq!(run(&mut fwd, 0, &mut f), Verdict::Tx(1));
            assert_eq!(f, orig, "forwarded unchanged");
            assert_eq!(run(&mut fwd, 1, &mut f), Verdict::Tx(0));
            assert_eq!(run(&mut fwd, 2, &mut f), Verdict::Drop(DropReason::NoRoute));
            assert_eq!(run(&mut drop, 0, &mut f), Verdict::Drop(DropReason::NotVip));
            assert_eq!(f, orig);
        }
        // The appliance's own address is answered either way.
        for b in [&mut fwd, &mut drop] {
            let mut f = echo(CLIENT, OWN[0], 3);
            assert_eq!(run(b, 0, &mut f), Verdict::Reply);
            assert_eq!(Ipv4::parse(&f[14..]).unwrap().src_addr(), OWN[0]);
        }
        // And heartbeats to it are punted.
        let mut l = local();
        l[1].punt_udp = Some(7400);
        let mut b = Balance::new(vips(), tables(), l, &[0], None).unwrap();
        assert_eq!(run(&mut b, 1, &mut udp(CLIENT, 7400, OWN[1], 7400, b"hb")), Verdict::Punt);
    }

    /// A router's ICMP error (type, code) to `to` about `quote` (an IPv4 header and 8 bytes).
    fn icmp_error(router: Ipv4Addr, to: Ipv4Addr, kind: u8, code: u8, quote: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&PORT_MAC[0]);
        f.extend_from_slice(&ROUTER_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + quote.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, ip_proto::ICMP, 0, 0]);
        f.extend_from_slice(&router.octets());
        f.extend_from_slice(&to.octets());
        f.extend_from_slice(&[kind, code, 0, 0, 0, 0, 0x05, 0x78]);
        f.extend_from_slice(quote);
        let c = crate::packet::checksum::checksum(&f[34..]);
        f[36..38].copy_from_slice(&c.to_be_bytes());
        refix_ip(&mut f);
        f
    }

    /// PMTU discovery through a balancer with direct server return: a router on the
    /// members' reply path sends "fragmentation needed" to the VIP, quoting the reply. It
    /// must reach the member that owns the flow (a hash of its own headers would pick any).
    #[test]
    fn icmp_errors_about_a_members_reply_go_to_that_member() {
        let mut b = balance(Some(&[(0, 1)]));
        let router = Ipv4Addr::new(203, 0, 113, 1);
        let mut members_seen = HashSet::new();
        for i in 0..64u16 {
            let client = Ipv4Addr::new(198, 51, 100, i as u8);
            for (mut flow, reply) in [
                (tcp(client, 40000 + i, VIP_A, 80), tcp(VIP_A, 80, client, 40000 + i)),
                (udp(client, 6000 + i, VIP_A, 53, b"q"), udp(VIP_A, 53, client, 6000 + i, b"answer")),
            ] {
                let to_flow = run(&mut b, 0, &mut flow);
                assert!(matches!(to_flow, Verdict::Tx(_)));
                for (kind, code) in [(3, 4), (11, 0)] {
                    let mut err = icmp_error(router, VIP_A, kind, code, &reply[14..14 + 28]);
                    assert_eq!(run(&mut b, 0, &mut err), to_flow, "client {client}");
                    assert_eq!(err[..6], flow[..6], "the flow's member");
                }
                members_seen.insert(flow[..6].to_vec());
            }
        }
        assert!(members_seen.len() >= 3, "{members_seen:?}");
        // Quoting a datagram another host sent, or a port no VIP covers: not balanced.
        let stranger = tcp(Ipv4Addr::new(192, 0, 2, 99), 80, CLIENT, 40000);
        let mut err = icmp_error(router, VIP_A, 3, 4, &stranger[14..14 + 28]);
        assert_eq!(run(&mut b, 0, &mut err), Verdict::Drop(DropReason::NotVip));
        let uncovered = tcp(VIP_A, 9999, CLIENT, 40000);
        let mut err = icmp_error(router, VIP_A, 3, 4, &uncovered[14..14 + 28]);
        assert_eq!(run(&mut b, 0, &mut err), Verdict::Drop(DropReason::NotVip));
    }

    #[test]
    fn update_moves_flows_to_the_new_tables_choice() {
        let mut b = balance(None);
        let old = tables();
        let flows: Vec<Vec<u8>> = (0..400u16).map(|i| tcp(Ipv4Addr::from(0x0a00_0000 + u32::from(i)), i, VIP_A, 80)).collect();
        let before: Vec<u16> = flows.iter().map(|f| pick(&old, TCP_WEB, f).0).collect();
        assert!(before.contains(&0));
        // Member 0 of the web VIP fails.
        let mut t = (*old).clone();
        t.vips[TCP_WEB] = table(TCP_WEB, &[0, 1, 1, 1]);
        let new = Arc::new(t);
        b.update(new.clone());
        assert!(Arc::ptr_eq(b.tables(), &new));
        let mut moved = 0;
        for (f, &was) in flows.iter().zip(&before) {
            let (now, want) = pick(&new, TCP_WEB, f);
            assert_ne!(now, 0);
            assert_balanced(&mut b, f, want);
            if was == 0 {
                moved += 1;
            }
        }
        assert!(moved > 0);
        // And the VIP goes down altogether.
        let mut t = (*new).clone();
        t.vips[TCP_WEB] = None;
        b.update(Arc::new(t));
        assert_eq!(run(&mut b, 0, &mut flows[0].clone()), Verdict::Drop(DropReason::NoMember));
    }

    #[test]
    fn an_update_rewrites_with_the_members_new_macs_and_ports() {
        let mut b = balance(None);
        let f = tcp(CLIENT, 4000, VIP_A, 80);
        let (index, was) = pick(&tables(), TCP_WEB, &f);
        assert_balanced(&mut b, &f, was);
        // The chosen member answers ARP from another MAC, behind the other member port
        // (same key and weight: the same slots are its).
        let mut specs = members(TCP_WEB, &[1; 4]);
        let moved = MemberEntry { mac: [0x02, 0xaa, 0, 0, 0, 9], port: if was.port == 1 { 2 } else { 1 } };
        specs[usize::from(index)].entry = moved;
        let with = |specs: &[MemberSpec]| {
            let mut t = (*tables()).clone();
            t.vips[TCP_WEB] = Some(SelectionTable::build(FlowHasher::new(HashPolicy::L34, 0x5eed), specs, None).unwrap());
            Arc::new(t)
        };
        b.update(with(&specs));
        assert_eq!(pick(b.tables(), TCP_WEB, &f), (index, moved));
        assert_balanced(&mut b, &f, moved);
        // Behind a port this role does not have: dropped as no_route, untouched and not
        // counted as sent to the member.
        specs[usize::from(index)].entry.port = 7;
        b.update(with(&specs));
        let before = b.counters().snapshot();
        let mut g = f.clone();
        assert_eq!(run(&mut b, 0, &mut g), Verdict::Drop(DropReason::NoRoute));
        assert_eq!(g, f);
        assert_eq!(b.counters().snapshot(), before);
        // And back behind a port: rewritten in place (same member count), sent again.
        specs[usize::from(index)].entry = moved;
        b.update(with(&specs));
        assert_balanced(&mut b, &f, moved);
        // The VIP loses its table, then regains it (its list is remade at each).
        let mut none = (*tables()).clone();
        none.vips[TCP_WEB] = None;
        b.update(Arc::new(none));
        assert_eq!(run(&mut b, 0, &mut f.clone()), Verdict::Drop(DropReason::NoMember));
        b.update(tables());
        assert_balanced(&mut b, &f, was);
    }

    #[test]
    fn counters_count_packets_and_bytes_per_member() {
        let mut b = balance(None);
        let other = balance(None);
        let c = b.counters();
        let t = tables();
        let mut want: Vec<Vec<(u64, u64)>> = vips().iter().map(|v| vec![(0, 0); v.members]).collect();
        for i in 0..500u16 {
            let client = Ipv4Addr::new(198, 51, 100, i as u8);
            let (v, mut f) = match i % 3 {
                0 => (TCP_WEB, tcp(client, i, VIP_A, 80)),
                1 => (UDP_53, udp(client, i, VIP_A, 53, &[0; 200][..usize::from(i % 200)])),
                _ => (ANY_B, echo(client, VIP_B, i)),
            };
            let (index, _) = pick(&t, v, &f);
            let cell = &mut want[v][usize::from(index)];
            cell.0 += 1;
            cell.1 += f.len() as u64;
            assert!(matches!(run(&mut b, 0, &mut f), Verdict::Tx(_)));
        }
        assert_eq!(c.snapshot(), want);
        assert_eq!(b.counters().snapshot(), want, "every handle reads the same cells");
        assert!(other.counters().snapshot().iter().flatten().all(|&pb| pb == (0, 0)), "lcores count apart");
        // A table with more members than the VIP declared: the extra one is not counted.
        let mut t = (*t).clone();
        t.vips[DOWN] = table(DOWN, &[0, 0, 1]);
        b.update(Arc::new(t));
        assert!(matches!(run(&mut b, 0, &mut tcp(CLIENT, 1, VIP_DOWN, 443)), Verdict::Tx(_)));
        assert_eq!(c.snapshot()[DOWN], [(0, 0), (0, 0)]);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut l = local();
        l[2].ipv4.push(VIP_B);
        assert_eq!(Balance::new(vips(), tables(), l, &[0], None).unwrap_err(), BalanceError::VipIsLocal { vip: 3, port: 2 });
        let mut v = vips();
        v[1].ports.push((60, 50));
        assert_eq!(
            Balance::new(v, tables(), local(), &[0], None).unwrap_err(),
            BalanceError::BadPortRange { vip: 1, range: (60, 50) }
        );
        let mut v = vips();
        v[3].protocol = Some(ip_proto::ICMP);
        v[3].ports.push((1, 2));
        assert_eq!(
            Balance::new(v, tables(), local(), &[0], None).unwrap_err(),
            BalanceError::PortsWithoutPorts { vip: 3, protocol: ip_proto::ICMP }
        );
        assert_eq!(Balance::new(vips(), tables(), local(), &[3], None).unwrap_err(), BalanceError::NoSuchPort(3));
        // Any protocol with port ranges is fine: it matches TCP and UDP by port.
        let mut v = vips();
        v[3].ports.push((7, 7));
        let mut b = Balance::new(v, tables(), local(), &[0], None).unwrap();
        assert!(matches!(run(&mut b, 0, &mut udp(CLIENT, 1, VIP_B, 7, b"")), Verdict::Tx(_)));
        assert!(matches!(run(&mut b, 0, &mut tcp(CLIENT, 1, VIP_B, 7)), Verdict::Tx(_)));
        assert_eq!(run(&mut b, 0, &mut tcp(CLIENT, 1, VIP_B, 8)), Verdict::Drop(DropReason::NotVip));
        assert_eq!(run(&mut b, 0, &mut echo(CLIENT, VIP_B, 1)), Verdict::Reply, "not covered: answered");
    }

    /// A frame from `bytes`: as is, or a VIP frame with some bytes overwritten, maybe the
    /// IPv4 checksum refilled so that the mutations reach L4, and maybe cut short.
    fn mutated(kind: u8, bytes: Vec<u8>, edits: Vec<(usize, u8)>, fix: bool, cut: Option<usize>) -> Vec<u8> {
        let mut f = match kind % 5 {
            0 => return bytes,
            1 => tcp(CLIENT, 40000, VIP_A, 80),
            2 => fragment(udp(CLIENT, 1, VIP_A, 5353, &bytes), 0x2000 | (bytes.len() as u16 & 0x1fff), None),
            3 => echo(CLIENT, if bytes.len().is_multiple_of(2) { VIP_A } else { VIP_B }, 9),
            _ => arp_for(VIP_A),
        };
        for (at, byte) in edits {
            let n = f.len();
            f[at % n] = byte;
        }
        if fix && f.len() >= 34 && f[14] >> 4 == 4 && usize::from(f[14] & 0xf) * 4 + 14 <= f.len() {
            refix_ip(&mut f);
        }
        if let Some(cut) = cut {
            f.truncate(cut % (f.len() + 1));
        }
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Never a panic, never a length change, and unless the frame became a reply,
        /// nothing above layer 2 changes.
        #[test]
        fn any_frame_is_handled_without_panic(
            kind in any::<u8>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            fix in any::<bool>(),
            cut in proptest::option::of(any::<usize>()),
            ingress in 0u16..4,
            forward in any::<bool>(),
        ) {
            let pairs: &[(PortIndex, PortIndex)] = &[(0, 1)];
            let mut b = balance(forward.then_some(pairs));
            let orig = mutated(kind, bytes, edits, fix, cut);
            let mut f = orig.clone();
            let v = run(&mut b, ingress, &mut f);
            prop_assert_eq!(f.len(), orig.len());
            if v != Verdict::Reply {
                prop_assert_eq!(f.get(12..), orig.get(12..));
            }
            if let Verdict::Tx(p) = v {
                prop_assert!(usize::from(p) < 3);
            }
        }
    }
}
