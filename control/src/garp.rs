//! Gratuitous ARP when the appliance starts, and on a port whose link comes up: every address it answers for (its ports' own
//! addresses, and each service VIP on the ports that answer ARP for it) is announced, so
//! that neighbours holding an old MAC for it — a previous appliance, the backup it takes
//! over from, or a cache entry that went stale while it was down — switch now instead of
//! when their entry expires, and backends learn the appliance before the first burst of
//! traffic (under load an ARP exchange can lose a frame and stall a handshake for
//! seconds).
//!
//! Each announcement is an ARP request for the address from the address (RFC 5227's
//! "ARP announcement": sender and target IP equal, target MAC zero), broadcast,
//! [`REPEATS`] times [`SPACING`] apart, like `arping -U -c 3`.

use crate::neighbours::PortAddrs;
use dataplane::packet::build::arp_request;
use dataplane::role::PortIndex;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Announcements of each address.
pub const REPEATS: u32 = 3;
/// Time between two announcements of the set.
pub const SPACING: Duration = Duration::from_secs(1);

/// One address to announce on one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Announcement {
    pub port: PortIndex,
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
}

impl Announcement {
    /// The frame into `out`; its length.
    pub fn write(&self, out: &mut [u8]) -> Option<usize> {
        arp_request(out, self.mac, self.addr, self.addr)
    }
}

/// What the appliance announces: each port's addresses on it, and each VIP on the ports
/// where the role answers ARP for it (`balancer::client_ports`). Sorted, without repeats.
pub fn announcements(ports: &[PortAddrs], vips: &[(Ipv4Addr, Vec<PortIndex>)]) -> Vec<Announcement> {
    let mut out: Vec<Announcement> = Vec::new();
    for p in ports {
        out.extend(p.ipv4.iter().map(|&(addr, _)| Announcement { port: p.index, mac: p.mac, addr }));
    }
    for (vip, on) in vips {
        out.extend(ports.iter().filter(|p| on.contains(&p.index)).map(|p| Announcement { port: p.index, mac: p.mac, addr: *vip }));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What the punt thread announces, and the watch over the ports' links that it polls
/// every 50 ms (a port's rounds start when its link is seen up, and none goes to a port
/// whose link is down: see [`Announcer`]).
#[derive(Clone)]
pub struct AnnounceSetup {
    pub list: Vec<Announcement>,
    pub links: std::sync::Arc<std::sync::Mutex<crate::links::LinkWatch>>,
}

/// When the announcements go out: [`REPEATS`] rounds, [`SPACING`] apart, from the start.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    next: Instant,
    left: u32,
}

impl Schedule {
    pub fn starting(now: Instant) -> Schedule {
        Schedule { next: now, left: REPEATS }
    }

    /// Whether a round is due at `now` (then the next one is scheduled).
    pub fn due(&mut self, now: Instant) -> bool {
        if self.left == 0 || now < self.next {
            return false;
        }
        self.left -= 1;
        self.next = now + SPACING;
        true
    }
}

/// The announcements and, per port, the rounds still to send. A port's rounds start when
/// its link is seen up — at start, or later for a port whose link is down then (a TAP port
/// whose kernel side is set up after the appliance starts) — and start over each time it
/// comes up again (a neighbour on the other side may have been replaced). No round goes to
/// a port whose link is down: writing to a TAP whose interface is down (while it is moved
/// into a namespace, say) fails and counts as a TX error.
#[derive(Debug)]
pub struct Announcer {
    list: Vec<Announcement>,
    /// Per port: its schedule and whether its link was up when last looked at.
    schedules: Vec<(PortIndex, Schedule, bool)>,
}

impl Announcer {
    pub fn new(list: Vec<Announcement>, now: Instant) -> Announcer {
        let mut ports: Vec<PortIndex> = list.iter().map(|a| a.port).collect();
        ports.dedup();
        let done = Schedule { next: now, left: 0 };
        Announcer { schedules: ports.into_iter().map(|p| (p, done, false)).collect(), list }
    }

    /// The announcements due at `now`, with `up` telling each port's link now.
    pub fn due(&mut self, now: Instant, up: impl Fn(PortIndex) -> bool) -> Vec<Announcement> {
        let mut ports: Vec<PortIndex> = Vec::new();
        for (p, s, was_up) in &mut self.schedules {
            let is_up = up(*p);
            if is_up && !*was_up {
                *s = Schedule::starting(now);
            }
            *was_up = is_up;
            if is_up && s.due(now) {
                ports.push(*p);
            }
        }
        self.list.iter().filter(|a| ports.contains(&a.port)).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::MemberPlan;
    use dataplane::balance::HashPolicy;
    use dataplane::packet::{arp, parse_frame, Arp, L3};

    fn port(i: PortIndex, addrs: &[Ipv4Addr]) -> PortAddrs {
        PortAddrs { index: i, mac: [2, 0, 0, 0, 0, i as u8], ipv4: addrs.iter().map(|&a| (a, 24)).collect() }
    }

    fn service(vip: Ipv4Addr, client_port: Option<PortIndex>, member_port: PortIndex) -> crate::balancer::ServicePlan {
        crate::balancer::ServicePlan {
            name: "s".into(),
            vip,
            protocol: 6,
            ports: vec![(80, 80)],
            hash: HashPolicy::L34,
            client_port,
            members: vec![MemberPlan { address: Ipv4Addr::new(10, 1, 0, 21), port: member_port, weight: 1, peer: None, tcp_port: None }],
        }
    }

    /// The VIPs of `services` on their client ports, as `run` computes them.
    fn vips(services: &[crate::balancer::ServicePlan], ports: usize) -> Vec<(Ipv4Addr, Vec<PortIndex>)> {
        let on = crate::balancer::client_ports(services, ports);
        services.iter().map(|s| (s.vip, on.clone())).collect()
    }

    #[test]
    fn ports_and_vips_are_announced_where_they_are_answered() {
        let ports = [port(0, &[Ipv4Addr::new(10, 0, 0, 2)]), port(1, &[Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 1, 2)]), port(2, &[])];
        let vip = Ipv4Addr::new(10, 0, 0, 100);
        let a = announcements(&ports, &vips(&[service(vip, Some(0), 1), service(vip, Some(0), 1)], 3));
        let got: Vec<(PortIndex, Ipv4Addr)> = a.iter().map(|a| (a.port, a.addr)).collect();
        assert_eq!(got, vec![(0, Ipv4Addr::new(10, 0, 0, 2)), (0, vip), (1, Ipv4Addr::new(10, 1, 0, 2)), (1, Ipv4Addr::new(10, 1, 1, 2))]);
        // No client port named: every port without members answers for the VIP.
        let a = announcements(&ports, &vips(&[service(vip, None, 1)], 3));
        let vips: Vec<PortIndex> = a.iter().filter(|a| a.addr == vip).map(|a| a.port).collect();
        assert_eq!(vips, vec![0, 2]);
    }

    #[test]
    fn an_announcement_is_an_arp_request_for_the_sender_itself() {
        let a = Announcement { port: 1, mac: [2, 0, 0, 0, 0, 7], addr: Ipv4Addr::new(10, 1, 0, 2) };
        let mut buf = [0u8; 64];
        let n = a.write(&mut buf).unwrap();
        let p = parse_frame(&buf[..n]).unwrap();
        assert_eq!(p.l3, L3::Arp);
        assert_eq!(&buf[0..6], &[0xff; 6], "broadcast");
        let arp = Arp::parse(&buf[p.l2.l3_offset..n]).unwrap();
        assert_eq!(arp.operation(), arp::OP_REQUEST);
        assert_eq!((arp.sender_ip(), arp.target_ip(), arp.sender_mac()), (a.addr, a.addr, a.mac));
    }

    #[test]
    fn each_port_is_announced_again_when_its_link_comes_up() {
        let ports = [port(0, &[Ipv4Addr::new(10, 0, 0, 2)]), port(1, &[Ipv4Addr::new(10, 1, 0, 2)])];
        let t0 = Instant::now();
        let mut a = Announcer::new(announcements(&ports, &[]), t0);
        let (none, both, only0) = (|_| false, |_| true, |p| p == 0);
        assert!(a.due(t0, none).is_empty(), "nothing while no link is up");
        assert_eq!(a.due(t0, both).len(), 2, "both ports at once when their links are seen up");
        assert!(a.due(t0 + Duration::from_millis(10), both).is_empty());
        let t = t0 + Duration::from_secs(10);
        assert_eq!(a.due(t, both).len(), 2);
        // Port 1's link is down: its round is skipped, port 0's goes out.
        assert_eq!(a.due(t + SPACING, only0).iter().map(|x| x.port).collect::<Vec<_>>(), vec![0]);
        assert!(a.due(t + 5 * SPACING, only0).is_empty(), "three rounds only");
        let again = a.due(t + 6 * SPACING, both);
        assert_eq!(again.iter().map(|x| x.port).collect::<Vec<_>>(), vec![1], "only the port that came up");
        assert_eq!(a.due(t + 7 * SPACING, both).len(), 1);
    }

    #[test]
    fn the_schedule_runs_three_rounds_a_second_apart() {
        let t0 = Instant::now();
        let mut s = Schedule::starting(t0);
        assert!(s.due(t0));
        assert!(!s.due(t0 + Duration::from_millis(500)));
        assert!(s.due(t0 + Duration::from_millis(1000)));
        assert!(!s.due(t0 + Duration::from_millis(1900)));
        assert!(s.due(t0 + Duration::from_millis(2100)));
        assert!(!s.due(t0 + Duration::from_secs(60)), "three rounds only");
    }
}
