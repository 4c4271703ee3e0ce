//! The control thread's work between two metrics publications: heartbeats and the failure
//! detector ([`Membership`]), the takeover decisions for `[[server]]` pairs
//! ([`Takeover`]), and fencing ([`FenceDesk`]). One `poll` feeds detector decisions to the
//! takeover logic, submits the fences it asks for, and hands fence verdicts back to it —
//! nothing here blocks, so the detector keeps its timing while an agent runs for seconds.

use crate::ctl::handler::FenceFn;
use crate::events::EventLog;
use crate::fencing::FenceDesk;
use crate::heartbeat::inband::Transmit;
use crate::neighbours::PortAddrs;
use crate::balancer::Balancer;
use crate::membership::Membership;
use crate::neighbours::Neighbours;
use crate::punts::{PuntCounters, PuntThread};
use crossbeam_channel::Receiver;
use dataplane::lcore_link::SmallFrame;
use std::thread::JoinHandle;
use crate::metrics::{MetricsSnapshot, NeighbourMetrics};
use crate::plan::RunPlan;
use crate::takeover::{Action, Outcome, Takeover};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Supervisor {
    membership: Option<Membership>,
    /// MACs of the addresses the appliance sends to on its ports (shared with the punt
    /// thread and the balancer).
    neighbours: Neighbours,
    punts: Option<JoinHandle<()>>,
    punt_counters: Arc<PuntCounters>,
    stop: Arc<AtomicBool>,
    balancer: Option<Balancer>,
    splicer: Option<crate::splicer::Splicer>,
    fences: FenceDesk,
    takeover: Takeover,
    log: EventLog,
    /// Detector decisions so far, by kind (`peer_down`, ...).
    decisions: BTreeMap<String, u64>,
}

impl Supervisor {
    /// Starts heartbeats (when the rack has peers) and the fencing threads.
    pub fn start(plan: &RunPlan, stop: Arc<AtomicBool>, log: EventLog) -> Result<Supervisor, String> {
        let membership = match &plan.membership {
            Some(m) => Some(Membership::start(m, stop.clone(), log.clone())?),
            None => None,
        };
        let fences = FenceDesk::start(plan.fence_targets.clone(), log.clone())?;
        Ok(Supervisor {
            membership,
            neighbours: Neighbours::new(),
            punts: None,
            punt_counters: Arc::default(),
            stop,
            balancer: None,
            splicer: None,
            fences,
            takeover: Takeover::new(plan.server_pairs.clone()),
            log,
            decisions: BTreeMap::new(),
        })
    }

    /// The ctl's manual fence (`None` when the rack has no fence devices).
    pub fn manual_fence(&self) -> Option<FenceFn> {
        self.fences.manual()
    }

    /// The event log.
    pub fn log(&self) -> EventLog {
        self.log.clone()
    }

    /// From now on, `poll` also rebuilds the balance tables.
    /// The splice role's counters summed over the lcores, in total and per service (by
    /// name), read at one moment (both empty without the role).
    pub fn splice_counters(&self) -> (crate::splicer::CountersByName, std::collections::BTreeMap<String, crate::splicer::CountersByName>) {
        self.splicer.as_ref().map(|s| s.counters_now()).unwrap_or_default()
    }

    /// The splice setup-time histogram summed over the lcores (`None` without the role).
    pub fn splice_setup(&self) -> Option<Vec<u64>> {
        self.splicer.as_ref().map(|s| s.setup_buckets())
    }

    pub fn set_splicer(&mut self, s: crate::splicer::Splicer) {
        self.splicer = Some(s);
    }

    pub fn set_balancer(&mut self, b: Balancer) {
        self.balancer = Some(b);
    }

    /// The neighbour table (the balancer registers its members in it).
    pub fn neighbours(&self) -> Neighbours {
        self.neighbours.clone()
    }

    /// Starts the punt thread once the dataplane is up: `ports` are the appliance's ports
    /// (MAC and addresses) that carry in-band heartbeats; `transmit` makes a sender of
    /// frames through an lcore.
    /// `announce`: what the punt thread announces by gratuitous ARP when a port's link is
    /// seen up, and the ports' link state.
    pub fn start_punts(&mut self, ports: Vec<PortAddrs>, announce: crate::garp::AnnounceSetup, punts: Receiver<SmallFrame>, transmit: impl Fn() -> Transmit) -> Result<(), String> {
        let inband = self.membership.as_mut().and_then(|m| m.take_inband(ports, transmit(), self.neighbours.clone()));
        let (inband, mirror) = match inband {
            Some((i, m)) => (Some(i), Some(m)),
            None => (None, None),
        };
        let t = PuntThread { neighbours: self.neighbours.clone(), inband, transmit: transmit(), counters: self.punt_counters.clone(), announce }
            .spawn(punts, mirror, self.stop.clone())
            .map_err(|e| format!("cannot start the punt thread: {e}"))?;
        self.punts = Some(t);
        Ok(())
    }

    /// How often [`Supervisor::poll`] must run.
    pub fn poll_period(&self) -> Duration {
        let cap = Duration::from_millis(50);
        self.membership.as_ref().map_or(cap, |m| m.poll_period().min(cap))
    }

    pub fn poll(&mut self, now: Instant) {
        let decisions = self.membership.as_mut().map(|m| m.poll(now)).unwrap_or_default();
        for d in decisions {
            *self.decisions.entry(format!("peer_{}", d.to.as_str())).or_default() += 1;
            let o = self.takeover.on_peer(d.peer.as_str(), d.to);
            self.apply(o);
        }
        for o in self.fences.drain(&mut self.takeover) {
            self.apply(o);
        }
        if let Some(b) = &mut self.balancer {
            let peers = self.membership.as_ref().map(|m| m.peer_metrics(now)).unwrap_or_default();
            b.poll(now, &peers);
        }
        if let Some(s) = &mut self.splicer {
            s.poll(crate::splicer::unix_now());
        }
    }

    fn apply(&mut self, o: Outcome) {
        for n in o.notices {
            self.log.push(n.kind, Some(&n.node), n.message, n.loud);
        }
        for a in o.actions {
            match a {
                Action::Fence(target) => {
                    let again = self.fences.submit(&target, &mut self.takeover);
                    self.apply(again);
                }
            }
        }
    }

    /// Adds peers, heartbeat, fence and pair state to a metrics snapshot.
    pub fn fill(&self, snap: &mut MetricsSnapshot, now: Instant) {
        if let Some(m) = &self.membership {
            snap.peers = m.peer_metrics(now);
            snap.heartbeats = m.heartbeat_metrics();
        }
        snap.detector_events = self.decisions.clone();
        let (wanted, resolved) = self.neighbours.counts();
        let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        snap.neighbours = NeighbourMetrics {
            wanted: wanted as u64,
            resolved: resolved as u64,
            arp_requests: l(&self.punt_counters.arp_requests),
            arp_replies: l(&self.punt_counters.arp_replies),
            gratuitous_arps: l(&self.punt_counters.gratuitous_arps),
            tx_refused: l(&self.punt_counters.tx_refused),
        };
        snap.fences = self.fences.metrics();
        snap.pairs = self.takeover.views();
        if let Some(b) = &self.balancer {
            snap.members = b.members();
            snap.services = b.service_views();
        }
        (snap.splice, snap.splice_services) = self.splice_counters();
        snap.splice_setup_us = self.splice_setup().unwrap_or_default();
    }

    /// Stops fencing (queued requests are cancelled, running agents finish) and waits for
    /// the heartbeat threads (the shared stop flag must be set).
    pub fn shutdown(self) {
        self.fences.shutdown();
        if let Some(t) = self.punts {
            let _ = t.join();
        }
        if let Some(m) = self.membership {
            m.join();
        }
    }
}
