//! Metrics: OpenMetrics text exposition over a tiny HTTP/1.1 server.
//!
//! The appliance publishes a [`MetricsSnapshot`] (everything it knows, as plain numbers)
//! into a [`SnapshotCell`]; every scrape of `GET /metrics` builds a prometheus-client
//! registry from the current snapshot (a [`Collector`] of const counters and gauges) and
//! encodes it. Nothing here touches the lcores: the snapshot is refreshed by the control
//! thread from what the workers publish.
//!
//! Names, types and labels are listed in `docs/ctl.md` ("Metrics").

use crate::report::{PortReport, Report};
use dataplane::stats::DropReason;
use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the appliance knows, for one scrape (and for the ctl's read commands).
#[derive(Clone, Debug, Default, Serialize)]
pub struct MetricsSnapshot {
    pub node: String,
    pub role: String,
    pub version: String,
    pub uptime_s: f64,
    pub ports: Vec<PortMetrics>,
    pub lcores: Vec<LcoreMetrics>,
    /// Per-burst processing time of all workers, merged, in ns.
    pub burst_latency: LatencySnapshot,
    /// From the failure detector (empty until it exists).
    pub peers: Vec<PeerMetrics>,
    pub heartbeats: HeartbeatMetrics,
    /// Detector decisions by kind (`peer_suspect`, `peer_down`, `peer_up`, ...).
    pub detector_events: BTreeMap<String, u64>,
    /// Fence attempts and results per (target, device).
    pub fences: Vec<FenceMetrics>,
    /// `[[server]]` pairs and their takeover phase.
    pub pairs: Vec<crate::takeover::PairView>,
    pub neighbours: NeighbourMetrics,
    /// Balance role: members and services.
    pub members: Vec<crate::balancer::MemberView>,
    pub services: Vec<crate::balancer::ServiceView>,
    /// Splice role: its counters summed over the lcores, by event name
    /// (`dataplane::role::splice::SpliceStat`); `active` is a gauge.
    pub splice: BTreeMap<String, u64>,
    /// Splice role: the same per service (by its name).
    pub splice_services: BTreeMap<String, BTreeMap<String, u64>>,
    /// Splice setup-time histogram (µs): bucket i counts setups under 2^i µs and at least
    /// 2^(i−1) (see `dataplane::role::splice::SETUP_BUCKETS`); empty without the role.
    pub splice_setup_us: Vec<u64>,
    /// How punctually the control thread's loop ran (`loop_watch`).
    pub control_loop: crate::loop_watch::LoopStats,
    /// How old this snapshot is when read, ms (set by [`SnapshotCell`] at each read: the
    /// control thread publishes every 250 ms, so a larger age is a control thread that is
    /// not running — a stall still in progress, which `control_loop` can only count later).
    pub snapshot_age_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PortMetrics {
    pub name: String,
    pub device: String,
    pub mac: String,
    pub link_up: bool,
    pub speed_mbps: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
    pub rx_queue_packets: Vec<u64>,
    pub bond: Option<crate::ctl::proto::BondInfo>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct LcoreMetrics {
    pub lcore: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub local_replies: u64,
    pub polls: u64,
    pub empty_polls: u64,
    pub idle_sleeps: u64,
    pub punted: u64,
    pub control_tx: u64,
    /// Frames the role originated (handshake answers, backend SYNs, resets).
    #[serde(default)]
    pub emitted: u64,
    /// `tx_burst` calls repeated because a TX ring took only part of a batch.
    #[serde(default)]
    pub tx_retries: u64,
    /// Frames passed to another worker lcore that holds their state (a backend's reply to its NAT port).
    #[serde(default)]
    pub handed_off: u64,
    /// Frames another worker lcore passed to this one.
    #[serde(default)]
    pub handed_in: u64,
    /// Drops by reason name. [`MetricsSnapshot::from_report`] lists every known reason
    /// (zeros included) so that the series exist from the first scrape.
    pub drops: BTreeMap<String, u64>,
}

/// A latency distribution in nanoseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LatencySnapshot {
    pub count: u64,
    /// Sum of all samples in ns (approximate: each sample counted at its bucket's value).
    pub sum_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// (upper bound in ns, samples in this bucket — not cumulative), ascending over
    /// [`LATENCY_BOUNDS_NS`]; samples above the last bound are `count - Σ`.
    pub buckets: Vec<(u64, u64)>,
}

/// Fixed histogram bounds (ns): powers of two from 64 ns to 2^30 ns ≈ 1.07 s, so that the
/// exposed buckets are the same on every scrape.
pub const LATENCY_BOUNDS_NS: [u64; 25] = {
    let mut b = [0u64; 25];
    let mut i = 0;
    while i < 25 {
        b[i] = 64u64 << i;
        i += 1;
    }
    b
};

impl LatencySnapshot {
    /// From a histogram of TSC cycles (as the workers record them) and the TSC frequency.
    pub fn from_cycles(h: &Histogram<u64>, tsc_hz: u64) -> LatencySnapshot {
        let ns = |c: u64| if tsc_hz == 0 { 0 } else { (c as u128 * 1_000_000_000 / tsc_hz as u128).min(u64::MAX as u128) as u64 };
        let mut counts = [0u64; LATENCY_BOUNDS_NS.len()];
        let mut sum = 0f64;
        for v in h.iter_recorded() {
            let n = v.count_at_value();
            let x = ns(v.value_iterated_to());
            sum += x as f64 * n as f64;
            if let Some(i) = LATENCY_BOUNDS_NS.iter().position(|&b| x <= b) {
                counts[i] += n;
            }
        }
        let q = |p: f64| if h.is_empty() { 0 } else { ns(h.value_at_quantile(p)) };
        LatencySnapshot {
            count: h.len(),
            sum_ns: sum,
            p50_ns: q(0.5),
            p90_ns: q(0.9),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: if h.is_empty() { 0 } else { ns(h.max()) },
            buckets: LATENCY_BOUNDS_NS.iter().copied().zip(counts).collect(),
        }
    }
}

/// One peer as the detector sees it: a metrics series and a row of `tapsplice ctl peers`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct PeerMetrics {
    pub node: String,
    pub class: String,
    /// One of [`PEER_STATES`] (anything else is exposed as well).
    pub state: String,
    pub incarnation: u64,
    pub last_heard_ms: Option<u64>,
    pub heartbeats_received: u64,
    pub heartbeats_missed: u64,
    pub workload: Option<f64>,
}

/// The detector states exposed as `tapsplice_peer_state{state=...}` (1 for the current one).
/// The detector's states (`detector::PeerState::as_str`), each exposed as a 0/1 series.
pub const PEER_STATES: [&str; 5] = ["unknown", "up", "app_down", "down", "held_down"];

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HeartbeatMetrics {
    pub sent: u64,
    /// Heartbeats dropped before the detector saw them, by reason (`bad_mac`, `replayed`,
    /// `malformed`, `unknown_node`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// In-band path: heartbeats accepted, sent, and not sent for want of the peer's MAC.
    pub inband_received: u64,
    pub inband_sent: u64,
    pub inband_unresolved: u64,
    /// In-band heartbeats an lcore's command queue refused (full).
    pub inband_tx_refused: u64,
}

/// The control plane's neighbour table and its ARP traffic (punt thread).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct NeighbourMetrics {
    /// Addresses the appliance needs a MAC for, and how many it has.
    pub wanted: u64,
    pub resolved: u64,
    pub arp_requests: u64,
    pub arp_replies: u64,
    /// Gratuitous ARPs sent at start and on link-up (our addresses and VIPs, `crate::garp`).
    pub gratuitous_arps: u64,
    /// ARP requests an lcore's command queue refused (full).
    pub tx_refused: u64,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FenceMetrics {
    /// The fenced node.
    pub target: String,
    /// The `[[fence_device]]` name.
    pub device: String,
    pub attempts: u64,
    /// Results by outcome (`ok`, `failed`, `timeout`, `verify_failed`, ...).
    pub results: BTreeMap<String, u64>,
    pub last_duration_s: Option<f64>,
}

impl MetricsSnapshot {
    /// What the appliance knows before its ports are up: who it is.
    pub fn starting(node: &str, role: &str) -> MetricsSnapshot {
        MetricsSnapshot {
            node: node.to_string(),
            role: role.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }
    }

    /// From a report (as `run` builds it) and the merged cycles histogram (`None` = use the
    /// report's quantiles without buckets).
    pub fn from_report(report: &Report, hist: Option<&Histogram<u64>>) -> MetricsSnapshot {
        let ports = report.ports.iter().map(PortMetrics::from_report).collect();
        let lcores = report
            .lcores
            .iter()
            .map(|l| {
                let mut drops: BTreeMap<String, u64> = DropReason::ALL.iter().map(|r| (r.name().to_string(), 0)).collect();
                for (k, v) in &l.drops {
                    drops.insert(k.to_string(), *v);
                }
                LcoreMetrics {
                    lcore: l.lcore,
                    rx_packets: l.rx_packets,
                    tx_packets: l.tx_packets,
                    rx_bytes: l.rx_bytes,
                    tx_bytes: l.tx_bytes,
                    local_replies: l.local_replies,
                    polls: l.polls,
                    empty_polls: l.empty_polls,
                    idle_sleeps: l.idle_sleeps,
                    punted: l.punted,
                    control_tx: l.control_tx,
                    emitted: l.emitted,
                    tx_retries: l.tx_retries,
                    handed_off: l.handed_off,
                    handed_in: l.handed_in,
                    drops,
                }
            })
            .collect();
        let burst_latency = match hist {
            Some(h) => LatencySnapshot::from_cycles(h, report.tsc_hz),
            None => {
                let b = &report.burst_ns;
                LatencySnapshot {
                    count: b.count,
                    sum_ns: 0.0,
                    p50_ns: b.p50,
                    p90_ns: b.p90,
                    p99_ns: b.p99,
                    p999_ns: b.p999,
                    max_ns: b.max,
                    buckets: Vec::new(),
                }
            }
        };
        MetricsSnapshot {
            node: report.node.clone(),
            role: report.role.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: report.uptime_s,
            ports,
            lcores,
            burst_latency,
            control_loop: report.control_loop,
            ..Default::default()
        }
    }
}

impl PortMetrics {
    pub fn from_report(p: &PortReport) -> PortMetrics {
        PortMetrics {
            name: p.name.clone(),
            device: p.device.clone(),
            mac: p.mac.clone(),
            link_up: p.link_up,
            speed_mbps: p.link_speed_mbps,
            rx_packets: p.rx_packets,
            tx_packets: p.tx_packets,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            rx_missed: p.rx_missed,
            rx_errors: p.rx_errors,
            tx_errors: p.tx_errors,
            rx_nombuf: p.rx_nombuf,
            rx_queue_packets: p.rx_queue_packets.clone(),
            bond: p.bond.clone(),
        }
    }
}

/// Where the control thread publishes the latest snapshot and the servers read it, with
/// the time it was published.
#[derive(Clone)]
pub struct SnapshotCell(Arc<RwLock<(Arc<MetricsSnapshot>, Instant)>>);

impl Default for SnapshotCell {
    fn default() -> SnapshotCell {
        SnapshotCell::new(MetricsSnapshot::default())
    }
}

impl SnapshotCell {
    pub fn new(initial: MetricsSnapshot) -> SnapshotCell {
        SnapshotCell(Arc::new(RwLock::new((Arc::new(initial), Instant::now()))))
    }
    pub fn publish(&self, s: MetricsSnapshot) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(s), Instant::now());
    }
    /// The latest snapshot and when it was published.
    pub fn get(&self) -> (Arc<MetricsSnapshot>, Instant) {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// A source for [`spawn`] and for the ctl handler: the latest snapshot, its
    /// `snapshot_age_ms` set now.
    pub fn source(&self) -> Source {
        let me = self.clone();
        Arc::new(move || {
            let (s, at) = me.get();
            let mut s = (*s).clone();
            s.snapshot_age_ms = at.elapsed().as_secs_f64() * 1e3;
            s
        })
    }
}

/// Produces the snapshot a scrape encodes.
pub type Source = Arc<dyn Fn() -> MetricsSnapshot + Send + Sync>;

// ---------------------------------------------------------------------------------------
// Encoding

/// A label value, escaped as OpenMetrics requires (prometheus-client 0.22 writes label
/// values verbatim).
#[derive(Debug)]
struct Esc<'a>(&'a str);

impl EncodeLabelValue for Esc<'_> {
    fn encode(&self, enc: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => enc.write_str("\\\\")?,
                '"' => enc.write_str("\\\"")?,
                '\n' => enc.write_str("\\n")?,
                c => enc.write_char(c)?,
            }
        }
        Ok(())
    }
}

fn gauge_i(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Encodes a snapshot as one prometheus-client collector.
#[derive(Debug)]
struct SnapshotCollector(MetricsSnapshot);

/// One family: descriptor, then one sample per label set.
fn family<L, M, I>(enc: &mut DescriptorEncoder, name: &str, help: &str, ty: MetricType, rows: I) -> Result<(), std::fmt::Error>
where
    L: prometheus_client::encoding::EncodeLabelSet,
    M: EncodeMetric,
    I: IntoIterator<Item = (L, M)>,
{
    let mut me = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, metric) in rows {
        let fam: MetricEncoder = me.encode_family(&labels)?;
        metric.encode(fam)?;
    }
    Ok(())
}

/// A family of one sample without labels.
fn single<M: EncodeMetric>(enc: &mut DescriptorEncoder, name: &str, help: &str, ty: MetricType, metric: M) -> Result<(), std::fmt::Error> {
    metric.encode(enc.encode_descriptor(name, help, None, ty)?)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        use MetricType::{Counter, Gauge};

        // Node.
        {
            let mut me = enc.encode_descriptor("tapsplice_node", "This appliance: node id, role and version.", None, MetricType::Info)?;
            me.encode_info(&[("node", Esc(&s.node)), ("role", Esc(&s.role)), ("version", Esc(&s.version))])?;
        }
        single(&mut enc, "tapsplice_uptime_seconds", "Seconds since the appliance started.", Gauge, ConstGauge::new(s.uptime_s))?;
        let c = &s.control_loop;
        single(&mut enc, "tapsplice_control_loop_iterations", "Iterations of the control thread's loop.", Counter, ConstCounter::new(c.iterations))?;
        single(
            &mut enc,
            "tapsplice_control_loop_late",
            "Control loop iterations more than two periods after the previous one.",
            Counter,
            ConstCounter::new(c.late),
        )?;
        single(
            &mut enc,
            "tapsplice_control_loop_stalls",
            "Control loop iterations more than ten periods (and 250 ms) after the previous one; each is also a control_stall event.",
            Counter,
            ConstCounter::new(c.stalls),
        )?;
        single(
            &mut enc,
            "tapsplice_control_loop_max_gap_seconds",
            "Largest gap between two control loop iterations since the start.",
            Gauge,
            ConstGauge::new(c.max_gap_ms / 1e3),
        )?;
        single(
            &mut enc,
            "tapsplice_control_loop_period_seconds",
            "The control loop's sleep between rounds (late: a gap over two periods).",
            Gauge,
            ConstGauge::new(c.period_ms / 1e3),
        )?;
        single(
            &mut enc,
            "tapsplice_snapshot_age_seconds",
            "Age of the snapshot this scrape reads; the control thread publishes every 0.25 s, so more is a control thread not running now.",
            Gauge,
            ConstGauge::new(s.snapshot_age_ms / 1e3),
        )?;

        // Ports.
        fn port(p: &PortMetrics) -> [(&'static str, Esc<'_>); 1] {
            [("port", Esc(&p.name))]
        }
        family(
            &mut enc,
            "tapsplice_port_info",
            "A dataplane port's device and MAC address (value 1).",
            Gauge,
            s.ports.iter().map(|p| ([("port", Esc(&p.name)), ("device", Esc(&p.device)), ("mac", Esc(&p.mac))], ConstGauge::new(1i64))),
        )?;
        family(
            &mut enc,
            "tapsplice_port_up",
            "Link state of the port (1 up, 0 down).",
            Gauge,
            s.ports.iter().map(|p| (port(p), ConstGauge::new(p.link_up as i64))),
        )?;
        family(
            &mut enc,
            "tapsplice_port_speed_mbps",
            "Link speed of the port in Mbit/s (0 when down or unknown).",
            Gauge,
            s.ports.iter().map(|p| (port(p), ConstGauge::new(p.speed_mbps as i64))),
        )?;
        // Bond members.
        {
            let members: Vec<(&PortMetrics, &crate::ctl::proto::BondMemberInfo)> =
                s.ports.iter().flat_map(|p| p.bond.iter().flat_map(move |b| b.members.iter().map(move |m| (p, m)))).collect();
            fn member<'a>(p: &'a PortMetrics, m: &'a crate::ctl::proto::BondMemberInfo) -> [(&'static str, Esc<'a>); 2] {
                [("port", Esc(&p.name)), ("member", Esc(&m.name))]
            }
            family(
                &mut enc,
                "tapsplice_bond_member_link_up",
                "Link state of a bond member (1 up, 0 down).",
                Gauge,
                members.iter().map(|(p, m)| (member(p, m), ConstGauge::new(m.link_up as i64))),
            )?;
            family(
                &mut enc,
                "tapsplice_bond_member_active",
                "Whether the bond carries traffic on the member (802.3ad: in the active list).",
                Gauge,
                members.iter().map(|(p, m)| (member(p, m), ConstGauge::new(m.active as i64))),
            )?;
            family(
                &mut enc,
                "tapsplice_bond_member_lacp_distributing",
                "802.3ad: the actor distributes on the member (LACP negotiated it into the aggregate).",
                Gauge,
                members.iter().filter(|(p, _)| p.bond.as_ref().is_some_and(|b| b.mode == "802.3ad")).map(|(p, m)| (member(p, m), ConstGauge::new(m.distributing() as i64))),
            )?;
            family(
                &mut enc,
                "tapsplice_bond_member_rx_packets",
                "Packets received on a bond member.",
                Counter,
                members.iter().map(|(p, m)| (member(p, m), ConstCounter::new(m.rx_packets))),
            )?;
            family(
                &mut enc,
                "tapsplice_bond_member_tx_packets",
                "Packets sent on a bond member.",
                Counter,
                members.iter().map(|(p, m)| (member(p, m), ConstCounter::new(m.tx_packets))),
            )?;
            family(
                &mut enc,
                "tapsplice_bond_primary_moves",
                "Times the appliance followed a bond's member links: active-backup primary moves, balance-xor member link changes signalled to the bonding PMD.",
                Counter,
                s.ports.iter().filter_map(|p| Some((port(p), ConstCounter::new(p.bond.as_ref()?.primary_moves)))),
            )?;
        }
        type PortField = fn(&PortMetrics) -> u64;
        let port_counters: [(&str, &str, PortField); 8] = [
            ("tapsplice_port_rx_packets", "Packets received by the port.", |p| p.rx_packets),
            ("tapsplice_port_tx_packets", "Packets sent by the port.", |p| p.tx_packets),
            ("tapsplice_port_rx_bytes", "Bytes received by the port.", |p| p.rx_bytes),
            ("tapsplice_port_tx_bytes", "Bytes sent by the port.", |p| p.tx_bytes),
            ("tapsplice_port_rx_missed", "Packets the NIC dropped because the RX queues were full.", |p| p.rx_missed),
            ("tapsplice_port_rx_errors", "Erroneous packets received.", |p| p.rx_errors),
            ("tapsplice_port_tx_errors", "Packets the port failed to send.", |p| p.tx_errors),
            ("tapsplice_port_rx_nombuf", "RX mbuf allocation failures.", |p| p.rx_nombuf),
        ];
        for (name, help, f) in port_counters {
            family(&mut enc, name, help, Counter, s.ports.iter().map(|p| (port(p), ConstCounter::new(f(p)))))?;
        }
        {
            let queues: Vec<(&str, String, u64)> = s
                .ports
                .iter()
                .flat_map(|p| p.rx_queue_packets.iter().enumerate().map(move |(q, n)| (p.name.as_str(), q.to_string(), *n)))
                .collect();
            family(
                &mut enc,
                "tapsplice_port_rx_queue_packets",
                "Packets received per RX queue.",
                Counter,
                queues.iter().map(|(p, q, n)| ([("port", Esc(p)), ("queue", Esc(q))], ConstCounter::new(*n))),
            )?;
        }

        // Lcores.
        type LcoreField = fn(&LcoreMetrics) -> u64;
        let lcore_names: Vec<String> = s.lcores.iter().map(|l| l.lcore.to_string()).collect();
        let lcore_counters: [(&str, &str, LcoreField); 14] = [
            ("tapsplice_lcore_rx_packets", "Packets the worker lcore received.", |l| l.rx_packets),
            ("tapsplice_lcore_tx_packets", "Packets the worker lcore handed to TX.", |l| l.tx_packets),
            ("tapsplice_lcore_rx_bytes", "Bytes the worker lcore received.", |l| l.rx_bytes),
            ("tapsplice_lcore_tx_bytes", "Bytes the worker lcore handed to TX.", |l| l.tx_bytes),
            ("tapsplice_lcore_local_replies", "Frames the appliance answered itself (ARP, ICMP echo).", |l| l.local_replies),
            ("tapsplice_lcore_polls", "RX poll rounds.", |l| l.polls),
            ("tapsplice_lcore_empty_polls", "RX poll rounds that returned no packet.", |l| l.empty_polls),
            ("tapsplice_lcore_idle_sleeps", "Times the idle back-off slept.", |l| l.idle_sleeps),
            ("tapsplice_lcore_punted", "Frames handed to the control thread (in-band heartbeats, ARP replies).", |l| l.punted),
            ("tapsplice_lcore_control_tx", "Frames sent for the control thread (in-band heartbeats, ARP requests).", |l| l.control_tx),
            ("tapsplice_lcore_emitted", "Frames the role originated (handshake answers, backend SYNs, resets).", |l| l.emitted),
            ("tapsplice_lcore_tx_retries", "tx_burst calls repeated because a TX ring took only part of a batch.", |l| l.tx_retries),
            ("tapsplice_lcore_handed_off", "Frames passed to another worker lcore that holds their state (a backend's reply to its NAT port).", |l| l.handed_off),
            ("tapsplice_lcore_handed_in", "Frames another worker lcore passed to this one.", |l| l.handed_in),
        ];
        for (name, help, f) in lcore_counters {
            family(
                &mut enc,
                name,
                help,
                Counter,
                s.lcores.iter().zip(&lcore_names).map(|(l, n)| ([("lcore", Esc(n))], ConstCounter::new(f(l)))),
            )?;
        }
        family(
            &mut enc,
            "tapsplice_lcore_drops",
            "Frames dropped by the worker lcore, by reason.",
            Counter,
            s.lcores.iter().zip(&lcore_names).flat_map(|(l, n)| {
                l.drops.iter().map(move |(r, v)| ([("lcore", Esc(n)), ("reason", Esc(r))], ConstCounter::new(*v)))
            }),
        )?;

        // Burst latency.
        let b = &s.burst_latency;
        {
            let mut me = enc.encode_descriptor(
                "tapsplice_burst_latency_ns",
                "Per-burst processing time of the workers (RX to TX), in nanoseconds.",
                None,
                MetricType::Histogram,
            )?;
            let mut buckets: Vec<(f64, u64)> = b.buckets.iter().map(|(le, n)| (*le as f64, *n)).collect();
            let below: u64 = b.buckets.iter().map(|(_, n)| *n).sum();
            buckets.push((f64::MAX, b.count.saturating_sub(below)));
            me.encode_histogram::<()>(b.sum_ns, b.count, &buckets, None)?;
        }
        let quantiles = [("0.5", b.p50_ns), ("0.9", b.p90_ns), ("0.99", b.p99_ns), ("0.999", b.p999_ns), ("1", b.max_ns)];
        family(
            &mut enc,
            "tapsplice_burst_latency_quantile_ns",
            "Quantiles of the per-burst processing time since start, in nanoseconds (quantile 1 = max).",
            Gauge,
            quantiles.iter().map(|(q, v)| ([("quantile", Esc(q))], gauge_i(*v))),
        )?;

        // Peers and the failure detector.
        fn peer(p: &PeerMetrics) -> [(&'static str, Esc<'_>); 2] {
            [("peer", Esc(&p.node)), ("class", Esc(&p.class))]
        }
        family(
            &mut enc,
            "tapsplice_peer_up",
            "1 if the failure detector considers the peer up.",
            Gauge,
            s.peers.iter().map(|p| (peer(p), ConstGauge::new((p.state == "up") as i64))),
        )?;
        family(
            &mut enc,
            "tapsplice_peer_state",
            "Failure detector state of the peer (1 for the current state).",
            Gauge,
            s.peers.iter().flat_map(|p| {
                let mut states: Vec<&str> = PEER_STATES.to_vec();
                if !states.contains(&p.state.as_str()) {
                    states.push(p.state.as_str());
                }
                states.into_iter().map(move |st| {
                    ([("peer", Esc(&p.node)), ("class", Esc(&p.class)), ("state", Esc(st))], ConstGauge::new((st == p.state) as i64))
                })
            }),
        )?;
        family(
            &mut enc,
            "tapsplice_peer_incarnation",
            "Incarnation number of the peer from its last heartbeat.",
            Gauge,
            s.peers.iter().map(|p| (peer(p), gauge_i(p.incarnation))),
        )?;
        family(
            &mut enc,
            "tapsplice_peer_last_heard_seconds",
            "Seconds since the last valid heartbeat of the peer (absent if never heard).",
            Gauge,
            s.peers.iter().filter_map(|p| p.last_heard_ms.map(|ms| (peer(p), ConstGauge::new(ms as f64 / 1000.0)))),
        )?;
        family(
            &mut enc,
            "tapsplice_peer_heartbeats_received",
            "Valid heartbeats received from the peer.",
            Counter,
            s.peers.iter().map(|p| (peer(p), ConstCounter::new(p.heartbeats_received))),
        )?;
        family(
            &mut enc,
            "tapsplice_peer_heartbeats_missed",
            "Heartbeat intervals in which nothing arrived from the peer.",
            Counter,
            s.peers.iter().map(|p| (peer(p), ConstCounter::new(p.heartbeats_missed))),
        )?;
        single(&mut enc, "tapsplice_heartbeats_sent", "Heartbeats this appliance sent.", Counter, ConstCounter::new(s.heartbeats.sent))?;
        family(
            &mut enc,
            "tapsplice_heartbeats_rejected",
            "Heartbeats dropped before the detector (authentication, replay, malformed), by reason.",
            Counter,
            s.heartbeats.rejected.iter().map(|(r, n)| ([("reason", Esc(r))], ConstCounter::new(*n))),
        )?;
        for (name, help, v) in [
            ("tapsplice_heartbeats_inband_received", "Heartbeats accepted on the in-band (dataplane) path.", s.heartbeats.inband_received),
            ("tapsplice_heartbeats_inband_sent", "Heartbeats sent on the in-band (dataplane) path.", s.heartbeats.inband_sent),
            ("tapsplice_heartbeats_inband_unresolved", "In-band heartbeats not sent: the peer's MAC is not known yet.", s.heartbeats.inband_unresolved),
            ("tapsplice_heartbeats_inband_tx_refused", "In-band heartbeats an lcore's command queue refused (full).", s.heartbeats.inband_tx_refused),
            ("tapsplice_arp_requests", "ARP requests the control plane sent for wanted neighbours.", s.neighbours.arp_requests),
            ("tapsplice_arp_replies", "ARP replies to the appliance's addresses handed to the control plane.", s.neighbours.arp_replies),
            ("tapsplice_arp_gratuitous", "Gratuitous ARPs the appliance sent for its addresses and VIPs (at start and when a port's link comes up).", s.neighbours.gratuitous_arps),
            ("tapsplice_arp_tx_refused", "ARP requests an lcore's command queue refused (full).", s.neighbours.tx_refused),
        ] {
            let me = enc.encode_descriptor(name, help, None, Counter)?;
            ConstCounter::new(v).encode(me)?;
        }
        for (name, help, v) in [
            ("tapsplice_neighbours_wanted", "Addresses the appliance needs a MAC for (in-band peers, balance members).", s.neighbours.wanted),
            ("tapsplice_neighbours_resolved", "Wanted addresses whose MAC is known.", s.neighbours.resolved),
        ] {
            let me = enc.encode_descriptor(name, help, None, Gauge)?;
            ConstGauge::new(v as i64).encode(me)?;
        }
        family(
            &mut enc,
            "tapsplice_detector_events",
            "Failure detector decisions, by kind.",
            Counter,
            s.detector_events.iter().map(|(k, n)| ([("kind", Esc(k))], ConstCounter::new(*n))),
        )?;

        // Fencing.
        family(
            &mut enc,
            "tapsplice_fence_attempts",
            "Fence operations started, per target node and fence device.",
            Counter,
            s.fences.iter().map(|f| ([("target", Esc(&f.target)), ("device", Esc(&f.device))], ConstCounter::new(f.attempts))),
        )?;
        family(
            &mut enc,
            "tapsplice_fence_results",
            "Fence operations finished, per target node, fence device and result.",
            Counter,
            s.fences.iter().flat_map(|f| {
                f.results.iter().map(move |(r, n)| {
                    ([("target", Esc(&f.target)), ("device", Esc(&f.device)), ("result", Esc(r))], ConstCounter::new(*n))
                })
            }),
        )?;
        family(
            &mut enc,
            "tapsplice_fence_last_duration_seconds",
            "Duration of the last finished fence operation, per target node and fence device.",
            Gauge,
            s.fences.iter().filter_map(|f| {
                f.last_duration_s.map(|d| ([("target", Esc(&f.target)), ("device", Esc(&f.device))], ConstGauge::new(d)))
            }),
        )?;
        // Balance.
        fn member(m: &crate::balancer::MemberView) -> [(&'static str, Esc<'_>); 2] {
            [("service", Esc(&m.service)), ("member", Esc(&m.member))]
        }
        family(
            &mut enc,
            "tapsplice_balance_member_packets",
            "Frames sent to the balance member, per service.",
            Counter,
            s.members.iter().map(|m| (member(m), ConstCounter::new(m.packets))),
        )?;
        family(
            &mut enc,
            "tapsplice_balance_member_bytes",
            "Bytes sent to the balance member, per service.",
            Counter,
            s.members.iter().map(|m| (member(m), ConstCounter::new(m.bytes))),
        )?;
        family(
            &mut enc,
            "tapsplice_balance_member_up",
            "1 when the member is in the service's selection table with weight > 0.",
            Gauge,
            s.members.iter().map(|m| (member(m), ConstGauge::new(i64::from(m.effective_weight > 0)))),
        )?;
        family(
            &mut enc,
            "tapsplice_balance_member_weight",
            "The member's effective weight in the current table (configured weight x workload steps).",
            Gauge,
            s.members.iter().map(|m| (member(m), ConstGauge::new(i64::from(m.effective_weight)))),
        )?;
        family(
            &mut enc,
            "tapsplice_balance_member_share",
            "The member's share of the selection table's slots (0..1).",
            Gauge,
            s.members.iter().map(|m| (member(m), ConstGauge::new(m.share))),
        )?;
        family(
            &mut enc,
            "tapsplice_splice_backend_connections",
            "Open connections of the splice backend (pool as service), all lcores.",
            Gauge,
            s.members.iter().filter_map(|m| Some((member(m), ConstGauge::new(m.connections? as i64)))),
        )?;
        fn service(v: &crate::balancer::ServiceView) -> [(&'static str, Esc<'_>); 1] {
            [("service", Esc(&v.service))]
        }
        family(
            &mut enc,
            "tapsplice_balance_table_rebuilds",
            "Selection tables built for the service.",
            Counter,
            s.services.iter().map(|v| (service(v), ConstCounter::new(v.rebuilds))),
        )?;
        family(
            &mut enc,
            "tapsplice_balance_no_member_drops",
            "Frames for the service dropped because it had no live member.",
            Counter,
            s.services.iter().map(|v| (service(v), ConstCounter::new(v.no_member_drops))),
        )?;
        family(
            &mut enc,
            "tapsplice_balance_live_members",
            "Members in the service's selection table with weight > 0.",
            Gauge,
            s.services.iter().map(|v| (service(v), ConstGauge::new(v.live_members as i64))),
        )?;
        family(
            &mut enc,
            "tapsplice_splice_events",
            "Splice role events by kind: handshakes answered (syn_cookies), cookies validated, refusals, backend SYNs, refusals and timeouts, splices established, replayed request bytes, resets, finished and expired connections, spliced packets and bytes each way.",
            Counter,
            s.splice.iter().filter(|(k, _)| k.as_str() != "active").map(|(k, v)| ([("event", Esc(k))], ConstCounter::new(*v))),
        )?;
        if !s.splice_setup_us.is_empty() {
            let mut me = enc.encode_descriptor(
                "tapsplice_splice_setup_us",
                "Splice setup time, from the client's handshake ACK to the backend's SYN-ACK, in microseconds (TSC at both events).",
                None,
                MetricType::Histogram,
            )?;
            let count: u64 = s.splice_setup_us.iter().sum();
            let sum: f64 = s.splice_setup_us.iter().enumerate().map(|(i, n)| (crate::splicer::setup_bucket_le(i) as f64) * (*n as f64)).sum();
            // The last bucket is open-ended (everything from 2^23 µs).
            let last = s.splice_setup_us.len() - 1;
            let buckets: Vec<(f64, u64)> = s
                .splice_setup_us
                .iter()
                .enumerate()
                .map(|(i, n)| (if i == last { f64::MAX } else { crate::splicer::setup_bucket_le(i) as f64 }, *n))
                .collect();
            me.encode_histogram::<()>(sum, count, &buckets, None)?;
        }
        family(
            &mut enc,
            "tapsplice_splice_active",
            "Connections in the splice tables (all lcores).",
            Gauge,
            s.splice.get("active").map(|v| ([("role", Esc("splice"))], ConstGauge::new(*v as i64))),
        )?;
        family(
            &mut enc,
            "tapsplice_splice_service_events",
            "Splice role events of one service, by kind (the names of tapsplice_splice_events).",
            Counter,
            s.splice_services
                .iter()
                .flat_map(|(svc, c)| c.iter().filter(|(k, _)| k.as_str() != "active").map(move |(k, v)| ([("service", Esc(svc)), ("event", Esc(k))], ConstCounter::new(*v)))),
        )?;
        family(
            &mut enc,
            "tapsplice_splice_service_active",
            "Connections of one splice service in the splice tables (all lcores).",
            Gauge,
            s.splice_services.iter().filter_map(|(svc, c)| c.get("active").map(|v| ([("service", Esc(svc))], ConstGauge::new(*v as i64)))),
        )?;
        family(
            &mut enc,
            "tapsplice_server_pair_phase",
            "Takeover phase of each [[server]] pair: 1 for the current phase, 0 for the others.",
            Gauge,
            s.pairs.iter().flat_map(|p| {
                crate::takeover::Phase::ALL.iter().map(move |ph| {
                    ([("pair", Esc(&p.name)), ("phase", Esc(ph.as_str()))], ConstGauge::new(i64::from(p.phase == *ph)))
                })
            }),
        )?;
        Ok(())
    }
}

/// The whole exposition (OpenMetrics text, ending with `# EOF`).
pub fn encode(snapshot: &MetricsSnapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot.clone())));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The Content-Type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// ---------------------------------------------------------------------------------------
// HTTP

/// Limits of the metrics HTTP server.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Largest request head (request line + headers) read; larger → 431.
    pub max_request: usize,
    /// Concurrent connections; a further one waits up to 1 s for a slot, then gets 503.
    pub max_connections: usize,
    /// Time a client has to send its request head.
    pub read_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request: 8 * 1024,
            max_connections: 8,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `GET /metrics` on `addr` until `stop`. Returns the bound address (useful with
/// port 0) and the server thread, which returns within ~100 ms of `stop`.
pub fn spawn(addr: SocketAddr, source: Source, stop: Arc<AtomicBool>) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    spawn_with(addr, source, stop, HttpLimits::default())
}

pub fn spawn_with(
    addr: SocketAddr,
    source: Source,
    stop: Arc<AtomicBool>,
    limits: HttpLimits,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot serve metrics on {addr}: {e} (see [metrics] listen)")))?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let handle = std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || accept_loop(listener, source, stop, limits))?;
    Ok((bound, handle))
}

/// Waits up to `ms` for `fd` to become readable.
fn poll_readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn accept_loop(listener: TcpListener, source: Source, stop: Arc<AtomicBool>, limits: HttpLimits) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut last_error: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        if !poll_readable(listener.as_raw_fd(), 100) {
            continue;
        }
        threads.retain(|t| !t.is_finished());
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(limits.write_timeout));
                if !wait_for_slot(&active, limits.max_connections, Duration::from_secs(1), &stop) {
                    refuse_busy(stream);
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (source, limits2, active2) = (source.clone(), limits.clone(), active.clone());
                let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
                    let _ = catch_unwind(AssertUnwindSafe(|| serve_connection(stream, &source, &limits2)));
                    active2.fetch_sub(1, Ordering::SeqCst);
                });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(_) => {
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and the like: say so at most every 10 s and back off a little.
                if last_error.map(|t| t.elapsed()).unwrap_or(Duration::MAX) > Duration::from_secs(10) {
                    eprintln!("tapsplice: metrics: accept failed: {e}");
                    last_error = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Waits (up to `patience`) until fewer than `max` connections are being served.
fn wait_for_slot(active: &AtomicUsize, max: usize, patience: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + patience;
    while active.load(Ordering::SeqCst) >= max {
        if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// 503 without blocking the accept loop: read what the client already sent (so the close
/// is less likely to reset the connection before it reads the answer), answer, close.
fn refuse_busy(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let mut sink = [0u8; 8192];
    let _ = stream.read(&mut sink);
    let _ = stream.write_all(&simple_response(503, "Service Unavailable", "too many concurrent scrapes\n", false));
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.read(&mut sink);
}

fn simple_response(status: u16, reason: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
}

/// Reads the request head: `Ok(Some(head))`, `Ok(None)` if the client sent nothing
/// usable (closed, timed out), `Err(())` if it is larger than the limit.
fn read_head(stream: &mut TcpStream, limits: &HttpLimits) -> Result<Option<Vec<u8>>, ()> {
    let deadline = Instant::now() + limits.read_timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(if buf.is_empty() { None } else { Some(buf) }),
            Ok(n) => {
                let start = buf.len().saturating_sub(3);
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = find(&buf[start..], b"\r\n\r\n").map(|i| start + i) {
                    buf.truncate(end);
                    return if end > limits.max_request { Err(()) } else { Ok(Some(buf)) };
                }
                // A bare-LF client (nc, hand-typed requests).
                if let Some(end) = find(&buf[start..], b"\n\n").map(|i| start + i) {
                    buf.truncate(end);
                    return if end > limits.max_request { Err(()) } else { Ok(Some(buf)) };
                }
                if buf.len() > limits.max_request {
                    return Err(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(None),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn serve_connection(mut stream: TcpStream, source: &Source, limits: &HttpLimits) {
    let response = match read_head(&mut stream, limits) {
        Ok(Some(head)) => respond(&head, source),
        Ok(None) => return,
        Err(()) => simple_response(431, "Request Header Fields Too Large", "request too large\n", false),
    };
    let _ = stream.write_all(&response);
    let _ = stream.flush();
    linger_close(stream);
}

/// Half-closes and discards what the client still sends (briefly), so that closing with
/// unread input does not reset the connection before the client has read the response.
fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(500);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    let mut left: usize = 1 << 20;
    while left > 0 && Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(n) => left = left.saturating_sub(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// The full HTTP response to a request head.
fn respond(head: &[u8], source: &Source) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(head) else {
        return simple_response(400, "Bad Request", "bad request\n", false);
    };
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return simple_response(400, "Bad Request", "bad request line\n", false);
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return simple_response(400, "Bad Request", "unsupported HTTP version\n", false);
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    let head_only = method == "HEAD";
    if path != "/metrics" {
        return simple_response(404, "Not Found", "not found; the metrics are at /metrics\n", head_only);
    }
    if method != "GET" && method != "HEAD" {
        return simple_response(405, "Method Not Allowed", "use GET\n", false);
    }
    let body = match catch_unwind(AssertUnwindSafe(|| encode(&source()))) {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return simple_response(500, "Internal Server Error", "cannot encode the metrics\n", head_only),
        Err(_) => return simple_response(500, "Internal Server Error", "the metrics source failed\n", head_only),
    };
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{LcoreReport, Quantiles};
    use dataplane::stats::new_cycle_histogram;

    fn sample() -> MetricsSnapshot {
        let mut drops = BTreeMap::new();
        drops.insert("no_route", 5u64);
        let report = Report {
            node: "fw1".into(),
            role: "forward".into(),
            uptime_s: 12.5,
            tsc_hz: 1_000_000_000,
            ports: vec![PortReport {
                name: "wan".into(),
                device: "net_tap0".into(),
                link_up: true,
                link_speed_mbps: 10_000,
                rx_packets: 10,
                tx_packets: 9,
                rx_bytes: 1000,
                tx_bytes: 900,
                rx_queue_packets: vec![6, 4],
                ..Default::default()
            }],
            lcores: vec![LcoreReport { lcore: 1, rx_packets: 10, drops, ..Default::default() }],
            burst_cycles: Quantiles::default(),
            burst_ns: Quantiles::default(),
            splice: Default::default(),
            splice_services: Default::default(),
            splice_setup_us: None,
            control_loop: Default::default(),
        };
        let mut h = new_cycle_histogram();
        for v in [100u64, 100, 300, 5000] {
            h.record(v).unwrap();
        }
        MetricsSnapshot::from_report(&report, Some(&h))
    }

    #[test]
    fn latency_buckets_are_fixed_and_sum_to_the_count() {
        let s = sample();
        let b = &s.burst_latency;
        assert_eq!(b.count, 4);
        assert_eq!(b.buckets.len(), LATENCY_BOUNDS_NS.len());
        assert_eq!(b.buckets.iter().map(|x| x.1).sum::<u64>(), 4);
        assert_eq!(b.buckets[1], (128, 2)); // 100 ns twice
        assert!(b.p50_ns >= 100 && b.p50_ns <= 101, "{b:?}");
        assert!(b.max_ns >= 5000 && b.max_ns < 5100);
        assert!(b.sum_ns >= 5500.0 && b.sum_ns < 5600.0, "{}", b.sum_ns);
        let empty = LatencySnapshot::from_cycles(&new_cycle_histogram(), 0);
        assert_eq!((empty.count, empty.max_ns), (0, 0));
    }

    #[test]
    fn snapshot_lists_every_drop_reason() {
        let s = sample();
        assert_eq!(s.lcores[0].drops.len(), DropReason::COUNT);
        assert_eq!(s.lcores[0].drops["no_route"], 5);
        assert_eq!(s.lcores[0].drops["tx_full"], 0);
        assert!(s.ports[0].link_up);
        assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn splice_families_appear_with_the_role() {
        let mut snap = sample();
        assert!(!encode(&snap).unwrap().contains("tapsplice_splice_setup_us"), "no histogram without the role");
        snap.splice.insert("established".into(), 7);
        snap.splice.insert("active".into(), 3);
        let mut b = vec![0u64; 25];
        b[7] = 5;
        b[24] = 2;
        snap.splice_setup_us = b;
        snap.splice_services.insert("web".into(), [("established".to_string(), 5u64), ("active".to_string(), 2)].into_iter().collect());
        snap.splice_services.insert("api".into(), [("established".to_string(), 2u64), ("active".to_string(), 1)].into_iter().collect());
        let text = encode(&snap).unwrap();
        for needle in [
            "tapsplice_splice_service_events_total{service=\"web\",event=\"established\"} 5\n",
            "tapsplice_splice_service_events_total{service=\"api\",event=\"established\"} 2\n",
            "tapsplice_splice_service_active{service=\"web\"} 2\n",
            "tapsplice_splice_events_total{event=\"established\"} 7\n",
            "tapsplice_splice_active{role=\"splice\"} 3\n",
            "tapsplice_splice_setup_us_bucket{le=\"128.0\"} 5\n",
            "tapsplice_splice_setup_us_bucket{le=\"+Inf\"} 7\n",
            "tapsplice_splice_setup_us_count 7\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("event=\"active\""), "active is a gauge, not an event");
    }

    #[test]
    fn exposition_has_counters_gauges_histogram_and_eof() {
        let text = encode(&sample()).unwrap();
        for needle in [
            "# TYPE tapsplice_port_rx_packets counter\n",
            "tapsplice_port_rx_packets_total{port=\"wan\"} 10\n",
            "tapsplice_port_rx_queue_packets_total{port=\"wan\",queue=\"1\"} 4\n",
            "tapsplice_lcore_drops_total{lcore=\"1\",reason=\"no_route\"} 5\n",
            "tapsplice_node_info{node=\"fw1\",role=\"forward\",version=\"",
            "tapsplice_port_up{port=\"wan\"} 1\n",
            "tapsplice_burst_latency_ns_bucket{le=\"128.0\"} 2\n",
            "tapsplice_burst_latency_ns_bucket{le=\"+Inf\"} 4\n",
            "tapsplice_burst_latency_ns_count 4\n",
            "tapsplice_burst_latency_quantile_ns{quantile=\"0.5\"} 100\n",
            "# TYPE tapsplice_peer_up gauge\n",
            "tapsplice_heartbeats_sent_total 0\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = MetricsSnapshot::default();
        s.ports.push(PortMetrics { name: "a\"b\\c\nd".into(), ..Default::default() });
        let text = encode(&s).unwrap();
        assert!(text.contains(r#"tapsplice_port_up{port="a\"b\\c\nd"} 0"#), "{text}");
    }

    #[test]
    fn peers_and_fences_are_exposed_when_present() {
        let mut s = MetricsSnapshot::default();
        s.peers.push(PeerMetrics {
            node: "p2".into(),
            class: "appliance".into(),
            state: "app_down".into(),
            incarnation: 3,
            last_heard_ms: Some(1500),
            heartbeats_received: 100,
            heartbeats_missed: 2,
            workload: None,
        });
        s.heartbeats.rejected.insert("replayed".into(), 7);
        s.detector_events.insert("peer_suspect".into(), 1);
        let mut results = BTreeMap::new();
        results.insert("ok".to_string(), 1u64);
        s.fences.push(FenceMetrics { target: "srv1".into(), device: "ipmi1".into(), attempts: 1, results, last_duration_s: Some(0.12) });
        s.pairs.push(crate::takeover::PairView {
            name: "db".into(),
            primary: "srv1".into(),
            backup: "srv2".into(),
            phase: crate::takeover::Phase::Refused,
            primary_state: "down".into(),
            backup_state: "up".into(),
            reason: String::new(),
        });
        let text = encode(&s).unwrap();
        for needle in [
            "tapsplice_peer_up{peer=\"p2\",class=\"appliance\"} 0\n",
            "tapsplice_peer_state{peer=\"p2\",class=\"appliance\",state=\"app_down\"} 1\n",
            "tapsplice_peer_state{peer=\"p2\",class=\"appliance\",state=\"up\"} 0\n",
            "tapsplice_peer_last_heard_seconds{peer=\"p2\",class=\"appliance\"} 1.5\n",
            "tapsplice_peer_heartbeats_missed_total{peer=\"p2\",class=\"appliance\"} 2\n",
            "tapsplice_heartbeats_rejected_total{reason=\"replayed\"} 7\n",
            "tapsplice_detector_events_total{kind=\"peer_suspect\"} 1\n",
            "tapsplice_fence_results_total{target=\"srv1\",device=\"ipmi1\",result=\"ok\"} 1\n",
            "tapsplice_fence_last_duration_seconds{target=\"srv1\",device=\"ipmi1\"} 0.12\n",
            "tapsplice_server_pair_phase{pair=\"db\",phase=\"refused\"} 1\n",
            "tapsplice_server_pair_phase{pair=\"db\",phase=\"serving\"} 0\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn http_routing() {
        let src: Source = Arc::new(MetricsSnapshot::default);
        let r = String::from_utf8(respond(b"GET /metrics HTTP/1.1\r\nHost: x", &src)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.contains(CONTENT_TYPE) && r.ends_with("# EOF\n"), "{r}");
        let r = String::from_utf8(respond(b"HEAD /metrics?x=1 HTTP/1.0", &src)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"), "{r}");
        assert!(respond(b"GET / HTTP/1.1", &src).starts_with(b"HTTP/1.1 404"));
        assert!(respond(b"POST /metrics HTTP/1.1", &src).starts_with(b"HTTP/1.1 405"));
        assert!(respond(b"GET /metrics", &src).starts_with(b"HTTP/1.1 400"));
        assert!(respond(b"\xff\xfe", &src).starts_with(b"HTTP/1.1 400"));
        assert!(respond(b"GET /metrics SPDY/9", &src).starts_with(b"HTTP/1.1 400"));
        let panicking: Source = Arc::new(|| panic!("source failed"));
        assert!(respond(b"GET /metrics HTTP/1.1", &panicking).starts_with(b"HTTP/1.1 500"));
    }
}
