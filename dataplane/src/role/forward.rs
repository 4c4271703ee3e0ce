//! Role `forward`: a bump in the wire between pairs of ports.
//!
//! A frame that enters one port of a pair leaves, unchanged, through the other. Frames for
//! the appliance's own addresses (ARP requests, ICMP echo) are answered on the port they
//! came in on. This is the walking skeleton the other roles follow: pure decisions over
//! bytes, no DPDK.

use super::local::{answer_local, LocalAddrs, LocalVerdict};
use super::{Ctx, PortIndex, Role, Verdict};
use crate::stats::DropReason;

#[derive(Clone, Debug)]
pub struct Forward {
    /// The other port of the pair, by ingress port index; `None` for unpaired ports.
    peer: Vec<Option<PortIndex>>,
    /// The appliance's own addresses, by port index.
    local: Vec<LocalAddrs>,
}

impl Forward {
    /// `pairs` are port indexes; `local[i]` is what port i answers for.
    pub fn new(pairs: &[(PortIndex, PortIndex)], local: Vec<LocalAddrs>) -> Forward {
        let mut peer = vec![None; local.len()];
        for &(a, b) in pairs {
            if let Some(slot) = peer.get_mut(a as usize) {
                *slot = Some(b);
            }
            if let Some(slot) = peer.get_mut(b as usize) {
                *slot = Some(a);
            }
        }
        Forward { peer, local }
    }
}

impl Role for Forward {
    type Update = ();

    fn name(&self) -> &'static str {
        "forward"
    }

    #[inline]
    fn handle(&mut self, ingress: PortIndex, frame: &mut [u8], _ctx: &mut Ctx<'_>) -> Verdict {
        if let Some(me) = self.local.get(ingress as usize) {
            match answer_local(frame, me) {
                LocalVerdict::NotLocal => {}
                LocalVerdict::Replied => return Verdict::Reply,
                LocalVerdict::Punt => return Verdict::Punt,
                LocalVerdict::Drop(r) => return Verdict::Drop(r),
            }
        }
        match self.peer.get(ingress as usize).copied().flatten() {
            Some(p) => Verdict::Tx(p),
            None => Verdict::Drop(DropReason::NoRoute),
        }
    }
}

/// What a service role does with a frame that is not for its services: forward it
/// between the port pairs when the node also forwards (the forward role answers for the
/// appliance's own addresses first), else answer for those addresses, else drop it as
/// `not_vip`.
pub fn forward_or_answer(forward: Option<&mut Forward>, local: &[LocalAddrs], ingress: PortIndex, frame: &mut [u8], ctx: &mut Ctx<'_>) -> Verdict {
    if let Some(forward) = forward {
        return forward.handle(ingress, frame, ctx);
    }
    if let Some(me) = local.get(usize::from(ingress)) {
        match answer_local(frame, me) {
            LocalVerdict::NotLocal => {}
            LocalVerdict::Replied => return Verdict::Reply,
            LocalVerdict::Punt => return Verdict::Punt,
            LocalVerdict::Drop(r) => return Verdict::Drop(r),
        }
    }
    Verdict::Drop(DropReason::NotVip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LcoreCounters;
    use std::net::Ipv4Addr;

    fn addrs(last: u8) -> LocalAddrs {
        LocalAddrs { mac: [2, 0, 0, 0, 0, last], ipv4: vec![Ipv4Addr::new(10, 99, 0, last)], punt_udp: None, punt_arp: false }
    }

    /// An Ethernet/IPv4/UDP frame from 10.99.0.1 to `dst`.
    fn udp_frame(dst: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 4];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + 8 + 4) as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 99, 0, 1]);
        ip[16..20].copy_from_slice(&dst.octets());
        let sum = crate::packet::checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&5678u16.to_be_bytes());
        f[38..40].copy_from_slice(&12u16.to_be_bytes());
        f
    }

    fn run(role: &mut Forward, ingress: PortIndex, frame: &mut [u8]) -> Verdict {
        let mut c = LcoreCounters::default();
        let mut ctx = Ctx { now_tsc: 0, counters: &mut c, emit: &mut crate::role::NoEmit, clock: None };
        role.handle(ingress, frame, &mut ctx)
    }

    #[test]
    fn transit_frames_cross_the_pair_unchanged_both_ways() {
        let mut role = Forward::new(&[(0, 1)], vec![addrs(254), addrs(253)]);
        let orig = udp_frame(Ipv4Addr::new(10, 99, 0, 2));
        let mut f = orig.clone();
        assert_eq!(run(&mut role, 0, &mut f), Verdict::Tx(1));
        assert_eq!(f, orig);
        assert_eq!(run(&mut role, 1, &mut f), Verdict::Tx(0));
        assert_eq!(f, orig);
    }

    #[test]
    fn unpaired_port_drops_with_no_route() {
        let mut role = Forward::new(&[(0, 1)], vec![addrs(254), addrs(253), addrs(252)]);
        let mut f = udp_frame(Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(run(&mut role, 2, &mut f), Verdict::Drop(DropReason::NoRoute));
    }

    #[test]
    fn traffic_to_the_appliance_is_not_forwarded() {
        let mut role = Forward::new(&[(0, 1)], vec![addrs(254), addrs(253)]);
        let mut f = udp_frame(Ipv4Addr::new(10, 99, 0, 254));
        assert_eq!(run(&mut role, 0, &mut f), Verdict::Drop(DropReason::LocalUnhandled));
    }

    #[test]
    fn runt_frames_are_still_forwarded_by_a_bump_in_the_wire() {
        // A transparent wire does not judge frames it does not own.
        let mut role = Forward::new(&[(0, 1)], vec![addrs(254), addrs(253)]);
        let mut f = vec![1u8, 2, 3];
        assert_eq!(run(&mut role, 0, &mut f), Verdict::Tx(1));
    }
}
