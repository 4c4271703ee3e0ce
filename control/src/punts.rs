//! The punt thread: everything the lcores hand to the control plane (`Verdict::Punt`)
//! arrives here — ARP replies for the neighbour table, in-band heartbeats for the
//! detector — and the frames the control plane originates on dataplane ports leave from
//! here: ARP requests for wanted neighbours (every 100 ms the due ones) and the in-band
//! heartbeats the management sender mirrors, and the gratuitous ARPs of the start
//! (`crate::garp`).

use crate::heartbeat::inband::{Inband, Transmit};
use crate::neighbours::Neighbours;
use crossbeam_channel::{never, select, Receiver};
use dataplane::lcore_link::SmallFrame;
use dataplane::role::PortIndex;
use dataplane::packet::build::arp_request;
use dataplane::packet::{arp, parse_frame, Arp, L3};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// ARP counters of the punt thread.
#[derive(Debug, Default)]
pub struct PuntCounters {
    pub arp_requests: AtomicU64,
    pub arp_replies: AtomicU64,
    /// Gratuitous ARPs sent (announcements of our addresses and VIPs, at start and on
    /// link-up).
    pub gratuitous_arps: AtomicU64,
    pub tx_refused: AtomicU64,
}

pub struct PuntThread {
    pub neighbours: Neighbours,
    pub inband: Option<Inband>,
    pub transmit: Transmit,
    pub counters: Arc<PuntCounters>,
    /// Addresses announced by gratuitous ARP when a port's link is seen up.
    pub announce: crate::garp::AnnounceSetup,
}

impl PuntThread {
    /// One punted frame.
    fn on_frame(&mut self, f: &SmallFrame) -> bool {
        let b = f.bytes();
        if let Ok(p) = parse_frame(b) {
            if p.l3 == L3::Arp {
                if let Ok(a) = Arp::parse(&b[p.l2.l3_offset..]) {
                    if a.operation() == arp::OP_REPLY {
                        self.counters.arp_replies.fetch_add(1, Ordering::Relaxed);
                        self.neighbours.learn(f.port, a.sender_ip(), a.sender_mac());
                    }
                }
                return true;
            }
        }
        match &mut self.inband {
            Some(i) => i.on_frame(f, Instant::now()),
            None => true,
        }
    }

    /// ARP requests for the neighbours due now, except on ports whose link is down (the
    /// worker would only drop them as `link_down`).
    fn ask(&self, now: Instant, up: impl Fn(PortIndex) -> bool) {
        for w in self.neighbours.due(now, up) {
            let Some(f) = SmallFrame::build(w.port, |buf| arp_request(buf, w.src_mac, w.src_ip, w.target)) else { continue };
            let c = if (self.transmit)(f) { &self.counters.arp_requests } else { &self.counters.tx_refused };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn announce(&self, due: &[crate::garp::Announcement]) {
        for a in due {
            let Some(f) = SmallFrame::build(a.port, |buf| a.write(buf)) else { continue };
            let c = if (self.transmit)(f) { &self.counters.gratuitous_arps } else { &self.counters.tx_refused };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs until `stop` (or the lcores' side is gone).
    pub fn spawn(mut self, punts: Receiver<SmallFrame>, mirror: Option<Receiver<Vec<u8>>>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        let mirror = mirror.unwrap_or_else(never);
        std::thread::Builder::new().name("tapsplice-punts".into()).spawn(move || {
            let mut next_ask = Instant::now();
            let mut next_garp = Instant::now();
            let mut garp = crate::garp::Announcer::new(std::mem::take(&mut self.announce.list), Instant::now());
            let links = self.announce.links.lock().unwrap_or_else(|p| p.into_inner()).states().clone();
            while !stop.load(Ordering::Relaxed) {
                select! {
                    recv(punts) -> f => match f {
                        Ok(f) => if !self.on_frame(&f) { return },
                        Err(_) => return,
                    },
                    recv(mirror) -> m => if let (Ok(bytes), Some(i)) = (m, &mut self.inband) { i.send(&bytes) },
                    default(Duration::from_millis(50)) => {}
                }
                let now = Instant::now();
                // Links are read (a driver call or two ioctls per port) every 50 ms, for
                // the workers (link_down drops), the announcements and the operator.
                if now >= next_garp {
                    next_garp = now + Duration::from_millis(50);
                    self.announce.links.lock().unwrap_or_else(|p| p.into_inner()).poll();
                    let due = garp.due(now, |p| links.is_up(usize::from(p)));
                    if !due.is_empty() {
                        self.announce(&due);
                    }
                }
                if now >= next_ask {
                    self.ask(now, |p| links.is_up(usize::from(p)));
                    next_ask = now + Duration::from_millis(100);
                }
            }
        })
    }
}
