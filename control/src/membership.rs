//! The appliance's side of the heartbeat protocol, owned by the control thread: it receives
//! and authenticates peers' heartbeats (a receiver thread on `node.mgmt`), announces this
//! appliance to its peers (a sender thread), and runs the failure detector. The lcores never
//! see any of this; what they need (member tables, weights) is derived from `peers()`.

use crate::config::{PeerConfig, RackConfig, TimersConfig};
use crate::detector::{Detector, DetectorConfig, Event as Decision, PeerSpec};
use crate::events::EventLog;
use crate::heartbeat::keyfile::load_rack_key;
use crate::heartbeat::udp::{next_incarnation, now_unix_us, LocalStatus, StatusCell};
use crate::heartbeat::inband::{Inband, InbandCounters, InbandPeer, Transmit};
use crate::neighbours::PortAddrs;
use crate::heartbeat::wire::{HbRole, MacKey, NodeId, StatusFlags, Workload};
use crate::neighbours::Neighbours;
use dataplane::role::PortIndex;
use std::net::IpAddr;
use crate::heartbeat::{peer_node_ids, mgmt_targets, HbCounters, HbEvent, HbSender, Receiver, ReceiverConfig, SenderConfig};
use crate::metrics::{HeartbeatMetrics, PeerMetrics};
use crossbeam_channel::{bounded, Receiver as Chan};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// What the rack file says about heartbeats for this node.
#[derive(Clone, Debug)]
pub struct MembershipPlan {
    pub node: String,
    pub mgmt: SocketAddr,
    pub rack_key: PathBuf,
    pub peers: Vec<PeerConfig>,
    pub timers: TimersConfig,
    /// Peers that also heartbeat in-band on a dataplane port.
    pub inband: Vec<InbandPeer>,
}

impl MembershipPlan {
    /// `None` when the rack has no peers (a standalone appliance).
    pub fn from_config(cfg: &RackConfig) -> Result<Option<MembershipPlan>, String> {
        if cfg.peer.is_empty() {
            return Ok(None);
        }
        let mgmt = cfg.node.mgmt.ok_or_else(|| format!("{}: [[peer]] needs node.mgmt (the heartbeat address)", cfg.source))?;
        let rack_key = cfg.keys.rack_key.clone().ok_or_else(|| format!("{}: [[peer]] needs keys.rack_key", cfg.source))?;
        let mut inband = Vec::new();
        for p in &cfg.peer {
            let (Some(port), Some(addr)) = (&p.inband_port, p.inband_address) else { continue };
            let index = cfg.port_index(port).ok_or_else(|| {
                format!("{}: peer {:?}: in-band heartbeats on bond {port:?} are not supported yet; use a [[port]]", cfg.source, p.id)
            })?;
            let IpAddr::V4(addr) = addr else {
                return Err(format!("{}: peer {:?}: inband_address must be IPv4", cfg.source, p.id));
            };
            inband.push(InbandPeer { id: p.id.clone(), port: index as PortIndex, addr, udp_port: p.mgmt.map_or(mgmt.port(), |m| m.port()) });
        }
        Ok(Some(MembershipPlan { node: cfg.node.id.clone(), mgmt, rack_key, peers: cfg.peer.clone(), timers: cfg.timers.clone(), inband }))
    }

    /// Ports (by index) on which heartbeats arrive in-band: their lcores punt UDP to
    /// `mgmt`'s port.
    pub fn inband_ports(&self) -> Vec<PortIndex> {
        let mut v: Vec<PortIndex> = self.inband.iter().map(|p| p.port).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

pub struct Membership {
    detector: Detector,
    events: Chan<HbEvent>,
    counters: Arc<HbCounters>,
    log: EventLog,
    threads: Vec<JoinHandle<()>>,
    /// What the in-band path needs once the ports are up ([`Membership::start_inband`]).
    inband: Option<InbandPending>,
    inband_counters: Option<Arc<InbandCounters>>,
}

struct InbandPending {
    udp_port: u16,
    peers: Vec<InbandPeer>,
    key: MacKey,
    ids: Vec<NodeId>,
    events: crossbeam_channel::Sender<HbEvent>,
    mirror: Chan<Vec<u8>>,
}

impl Membership {
    /// `log` is the control thread's event log (shared with the ctl and fencing).
    pub fn start(plan: &MembershipPlan, stop: Arc<AtomicBool>, log: EventLog) -> Result<Membership, String> {
        let key = load_rack_key(&plan.rack_key).map_err(|e| e.to_string())?.mac_key();
        let ids = peer_node_ids(&plan.peers)?;
        let node = NodeId::new(&plan.node).ok_or_else(|| format!("node.id {:?} cannot be sent in a heartbeat", plan.node))?;
        let socket = UdpSocket::bind(plan.mgmt).map_err(|e| format!("cannot bind the heartbeat socket to node.mgmt {}: {e}", plan.mgmt))?;
        let send_socket = socket.try_clone().map_err(|e| format!("heartbeat socket: {e}"))?;
        let counters = Arc::new(HbCounters::default());
        let (tx, rx) = bounded(4096);
        let (mirror_tx, mirror_rx) = bounded(4);
        let inband = (!plan.inband.is_empty()).then(|| InbandPending {
            udp_port: plan.mgmt.port(),
            peers: plan.inband.clone(),
            key: key.clone(),
            ids: ids.clone(),
            events: tx.clone(),
            mirror: mirror_rx,
        });
        let receiver = Receiver::new(socket, ReceiverConfig::new(key.clone(), ids), tx, counters.clone(), stop.clone())
            .and_then(|r| r.spawn())
            .map_err(|e| format!("cannot start the heartbeat receiver: {e}"))?;
        let interval = Duration::from_millis(u64::from(plan.timers.heartbeat_interval_ms));
        let status = Arc::new(StatusCell::new(LocalStatus {
            role: HbRole::Appliance,
            workload: Workload::FULL,
            status: StatusFlags { app_alive: true, ..Default::default() },
            tlvs: Vec::new(),
        }));
        let sender = HbSender::new(
            send_socket,
            SenderConfig {
                node,
                incarnation: next_incarnation(now_unix_us(), None),
                interval,
                peers: mgmt_targets(&plan.peers),
                key,
                poll: interval.min(Duration::from_millis(50)),
                mirror: inband.is_some().then_some(mirror_tx),
            },
            status,
            counters.clone(),
            stop,
        )
        .spawn()
        .map_err(|e| format!("cannot start the heartbeat sender: {e}"))?;
        let specs: Vec<PeerSpec> = plan.peers.iter().filter_map(|p| PeerSpec::from_config(p, &plan.timers)).collect();
        let detector = Detector::new(DetectorConfig::from_timers(&plan.timers), specs, Instant::now());
        Ok(Membership { detector, events: rx, counters, log, threads: vec![receiver, sender], inband, inband_counters: None })
    }

    /// The in-band path, built once the dataplane ports are up (`None` without in-band
    /// peers, or when it was taken already), and the mirror of the management sender's
    /// heartbeats that it sends.
    pub fn take_inband(
        &mut self,
        ports: Vec<PortAddrs>,
        transmit: Transmit,
        neighbours: Neighbours,
    ) -> Option<(Inband, Chan<Vec<u8>>)> {
        let p = self.inband.take()?;
        let path = Inband::new(p.udp_port, ports, p.peers, p.key, p.ids, p.events, self.counters.clone(), transmit, neighbours);
        self.inband_counters = Some(path.counters());
        Some((path, p.mirror))
    }

    /// How often [`Membership::poll`] must run for the detector's timing to hold.
    pub fn poll_period(&self) -> Duration {
        self.detector.max_tick_period()
    }

    /// Feeds received heartbeats to the detector and ticks it; decisions go to the log
    /// (and stderr, one line each) and are returned for the takeover logic.
    pub fn poll(&mut self, now: Instant) -> Vec<Decision> {
        let mut decided = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            decided.extend(self.detector.on_event(&ev));
        }
        decided.extend(self.detector.tick(now));
        for e in &decided {
            let ts = e.wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            self.log.push_at(ts, &format!("peer_{}", e.to.as_str()), Some(e.peer.as_str()), e.to_string(), false);
        }
        decided
    }

    pub fn peer_metrics(&self, now: Instant) -> Vec<PeerMetrics> {
        self.detector
            .peers()
            .map(|p| PeerMetrics {
                node: p.id.as_str().to_string(),
                class: p.class.as_str().to_string(),
                state: p.state.as_str().to_string(),
                incarnation: p.incarnation.unwrap_or(0),
                last_heard_ms: p.age(now).map(|a| a.as_millis() as u64),
                heartbeats_received: p.heartbeats,
                heartbeats_missed: p.heartbeats_lost,
                workload: p.workload_smoothed,
            })
            .collect()
    }

    pub fn heartbeat_metrics(&self) -> HeartbeatMetrics {
        let s = self.counters.snapshot();
        let mut m = HeartbeatMetrics { sent: s.sent, rejected: s.rejected.iter().map(|(k, v)| (k.to_string(), *v)).collect(), ..Default::default() };
        if let Some(c) = &self.inband_counters {
            let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            m.inband_received = l(&c.accepted);
            m.inband_sent = l(&c.sent);
            m.inband_unresolved = l(&c.unresolved);
            m.inband_tx_refused = l(&c.tx_refused);
        }
        m
    }

    /// Waits for the receiver and sender threads (after the shared stop flag is set).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
