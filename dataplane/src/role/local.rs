//! Answers for the appliance's own addresses: ARP requests and ICMP echo (ping); and
//! which of the frames addressed to us go to the control thread (`Punt`): UDP to the
//! heartbeat port (in-band heartbeats) and ARP replies (the control thread's neighbour
//! table for the frames it sends).
//!
//! Every role calls [`answer_local`] first. It rewrites the frame in place into the reply,
//! so no mbuf is allocated and the reply leaves through the ingress port on the same VLAN
//! (tags are left as they are). Everything not addressed to us is `NotLocal`, untouched:
//! a bump-in-the-wire must pass frames it does not own, malformed or not.
//!
//! "Addressed to us" means: for IPv4, the destination address is one of ours (or, when
//! the header is too short to hold one, the Ethernet destination is our MAC); for ARP,
//! a well-formed request for one of our addresses (or, for a malformed ARP body, the
//! Ethernet destination is our MAC).
//!
//! Echo requests are not checksum-verified: the reply's checksum is fixed incrementally,
//! so a corrupt request yields a reply that is equally corrupt and the requester discards
//! it, without a pass over the echo data here.

use std::net::Ipv4Addr;

use crate::packet::ethernet::ethertype;
use crate::packet::icmp::icmp_type;
use crate::packet::ipv4::{self, MIN_HEADER_LEN};
use crate::packet::{arp, ip_proto, Arp, Ethernet, Icmp, Ipv4};
use crate::stats::DropReason;

/// What one port answers for. Built at start-up (the `Vec` never grows on the fast path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAddrs {
    /// The port's MAC: source of every reply.
    pub mac: [u8; 6],
    /// Few addresses per port: looked up by linear scan.
    pub ipv4: Vec<Ipv4Addr>,
    /// UDP destination port whose datagrams to our addresses are punted to the control
    /// thread (the heartbeat port, when a peer heartbeats in-band on this port).
    pub punt_udp: Option<u16>,
    /// Punt ARP replies to our addresses (the control thread resolves neighbours here).
    pub punt_arp: bool,
}

impl LocalAddrs {
    /// True when `ip` is one of this port's addresses.
    #[inline]
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        self.ipv4.contains(&ip)
    }
}

/// Outcome of [`answer_local`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalVerdict {
    /// Not for us: the role goes on with the (unchanged) frame.
    NotLocal,
    /// The frame was rewritten into a reply: send it back out of the ingress port.
    Replied,
    /// For us, but malformed or nothing answers it.
    Drop(DropReason),
    /// For the control thread (see the module docs); the frame is unchanged.
    Punt,
}

/// Answer ARP requests and echo requests for `me` in place; see the module docs for what
/// counts as addressed to us. Never allocates, never changes the frame length.
#[inline(always)]
pub fn answer_local(frame: &mut [u8], me: &LocalAddrs) -> LocalVerdict {
    // Transit traffic, the common case of a forwarding role, in a few loads inline: an
    // untagged IPv4 frame to an address not ours is not local (as `answer_ipv4` decides).
    if let (Some([0x08, 0x00]), Some(dst)) = (frame.get(12..14), frame.get(30..34)) {
        if !me.owns(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3])) {
            return LocalVerdict::NotLocal;
        }
    }
    answer_local_slow(frame, me)
}

#[inline(never)]
fn answer_local_slow(frame: &mut [u8], me: &LocalAddrs) -> LocalVerdict {
    let (l3, et, to_my_mac) = match Ethernet::parse(&*frame) {
        Ok(e) => (e.l3_offset(), e.ethertype(), e.dst() == me.mac),
        Err(_) => return LocalVerdict::NotLocal,
    };
    match et {
        ethertype::ARP => answer_arp(frame, l3, me, to_my_mac),
        ethertype::IPV4 => answer_ipv4(frame, l3, me, to_my_mac),
        _ => LocalVerdict::NotLocal,
    }
}

fn answer_arp(frame: &mut [u8], l3: usize, me: &LocalAddrs, to_my_mac: bool) -> LocalVerdict {
    // `l3 <= frame.len()` holds after Ethernet::parse.
    let (l2, body) = frame.split_at_mut(l3);
    let mut a = match Arp::parse(body) {
        Ok(a) => a,
        Err(r) if to_my_mac => return LocalVerdict::Drop(r),
        Err(_) => return LocalVerdict::NotLocal,
    };
    let (asked, requester_ip, requester_mac) = (a.target_ip(), a.sender_ip(), a.sender_mac());
    // A reply to one of our addresses answers the control thread's request.
    if a.operation() == arp::OP_REPLY && me.punt_arp && me.owns(asked) {
        return LocalVerdict::Punt;
    }
    // Gratuitous ARP and replies are other hosts' business: the role forwards them.
    if a.operation() != arp::OP_REQUEST || a.is_gratuitous() || !me.owns(asked) {
        return LocalVerdict::NotLocal;
    }
    a.set_operation(arp::OP_REPLY);
    a.set_sender_mac(me.mac);
    a.set_sender_ip(asked);
    a.set_target_mac(requester_mac);
    a.set_target_ip(requester_ip);
    l2[0..6].copy_from_slice(&requester_mac);
    l2[6..12].copy_from_slice(&me.mac);
    LocalVerdict::Replied
}

fn answer_ipv4(frame: &mut [u8], l3: usize, me: &LocalAddrs, to_my_mac: bool) -> LocalVerdict {
    let (l2, body) = frame.split_at_mut(l3);
    // Cheap ownership test first: most frames are transit and must not pay for a
    // checksum pass here.
    let Some(dst) = body.get(16..20) else {
        return if to_my_mac {
            LocalVerdict::Drop(DropReason::MalformedIpv4)
        } else {
            LocalVerdict::NotLocal
        };
    };
    if !me.owns(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3])) {
        return LocalVerdict::NotLocal;
    }
    let ip = match Ipv4::parse(&*body) {
        Ok(ip) => ip,
        Err(r) => return LocalVerdict::Drop(r),
    };
    if ip.is_fragment() {
        return LocalVerdict::Drop(DropReason::Fragment);
    }
    if ip.protocol() == ip_proto::UDP && me.punt_udp.is_some() {
        let l4 = &body[ip.header_len()..ip.total_len()];
        let dport = l4.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
        return match dport {
            Some(p) if Some(p) == me.punt_udp => LocalVerdict::Punt,
            Some(_) => LocalVerdict::Drop(DropReason::LocalUnhandled),
            None => LocalVerdict::Drop(DropReason::MalformedUdp),
        };
    }
    let src = ip.src_addr();
    // Never reflect to an address that is not one host (smurf-style amplification).
    if ip.protocol() != ip_proto::ICMP
        || src.is_broadcast()
        || src.is_multicast()
        || src.is_unspecified()
        || src.is_loopback()
    {
        return LocalVerdict::Drop(DropReason::LocalUnhandled);
    }
    let (hl, tl) = (ip.header_len(), ip.total_len());
    debug_assert!(hl >= MIN_HEADER_LEN && hl <= tl && tl <= body.len());
    let (hdr, rest) = body.split_at_mut(hl);
    let msg = match Icmp::parse(&mut rest[..tl - hl]) {
        Ok(m) => m,
        Err(r) => return LocalVerdict::Drop(r),
    };
    if msg.msg_type() != icmp_type::ECHO_REQUEST || msg.code() != 0 {
        return LocalVerdict::Drop(DropReason::LocalUnhandled);
    }
    let mut msg = msg;
    msg.update_type_code(icmp_type::ECHO_REPLY, 0);
    let mut ip = Ipv4::new_unchecked(hdr);
    ip.swap_addrs();
    ip.update_ttl(ipv4::DEFAULT_TTL);
    let requester_mac: [u8; 6] = [l2[6], l2[7], l2[8], l2[9], l2[10], l2[11]];
    l2[0..6].copy_from_slice(&requester_mac);
    l2[6..12].copy_from_slice(&me.mac);
    LocalVerdict::Replied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::checksum;

    const ME_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
    const PEER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn me() -> LocalAddrs {
        LocalAddrs {
            mac: ME_MAC,
            ipv4: vec![Ipv4Addr::new(192, 168, 10, 1), Ipv4Addr::new(10, 0, 0, 1)],
            punt_udp: None,
            punt_arp: false,
        }
    }

    /// "Who has 192.168.10.1? Tell 192.168.10.20", as tcpdump shows it: a broadcast
    /// 42-byte frame padded by the NIC to 60 bytes.
    fn arp_request() -> Vec<u8> {
        let mut f = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
            0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
            0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // sender MAC
            0xc0, 0xa8, 0x0a, 0x14, // sender IP 192.168.10.20
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC (unknown)
            0xc0, 0xa8, 0x0a, 0x01, // target IP 192.168.10.1
        ];
        f.resize(60, 0);
        f
    }

    /// `ping -c1 192.168.10.1` from 192.168.10.20: id 0x1c2d, seq 1, 56 data bytes
    /// (8-byte timestamp then 0x10..0x37), TTL 64, DF, IP checksum filled in by hand below.
    fn ping() -> Vec<u8> {
        let mut f = vec![
            0x02, 0x00, 0x5e, 0x10, 0x00, 0x01, // dst: us
            0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
            0x08, 0x00, // IPv4
            0x45, 0x00, 0x00, 0x54, // v4, IHL 5, total 84
            0x6d, 0x3a, 0x40, 0x00, // id, DF
            0x40, 0x01, 0x00, 0x00, // TTL 64, ICMP, checksum (below)
            0xc0, 0xa8, 0x0a, 0x14, // src 192.168.10.20
            0xc0, 0xa8, 0x0a, 0x01, // dst 192.168.10.1
            0x08, 0x00, 0x00, 0x00, // echo request, checksum (below)
            0x1c, 0x2d, 0x00, 0x01, // id, seq
            0x5f, 0x3c, 0x2a, 0x66, 0x00, 0x00, 0x00, 0x00, // timestamp
        ];
        f.extend(0x10u8..0x40);
        assert_eq!(f.len(), 14 + 84);
        let ipc = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ipc.to_be_bytes());
        let icc = checksum::checksum(&f[34..]);
        f[36..38].copy_from_slice(&icc.to_be_bytes());
        f
    }

    fn vlan_tag(f: &[u8], vid: u16) -> Vec<u8> {
        let mut t = f[..12].to_vec();
        t.extend_from_slice(&[0x81, 0x00]);
        t.extend_from_slice(&vid.to_be_bytes());
        t.extend_from_slice(&f[12..]);
        t
    }

    #[test]
    fn arp_request_gets_reply_in_place() {
        let mut f = arp_request();
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::Replied);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &PEER_MAC, "to the requester");
        assert_eq!(&f[6..12], &ME_MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        let a = Arp::parse(&f[14..]).unwrap();
        assert_eq!(a.operation(), arp::OP_REPLY);
        assert_eq!(a.sender_mac(), ME_MAC);
        assert_eq!(a.sender_ip(), Ipv4Addr::new(192, 168, 10, 1));
        assert_eq!(a.target_mac(), PEER_MAC);
        assert_eq!(a.target_ip(), Ipv4Addr::new(192, 168, 10, 20));
        assert!(f[42..].iter().all(|&b| b == 0), "padding untouched");
    }

    #[test]
    fn arp_for_second_address_and_vlan() {
        let mut f = vlan_tag(&arp_request(), 0x2064);
        f[14 + 4 + 24..14 + 4 + 28].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::Replied);
        assert_eq!(
            &f[12..16],
            &[0x81, 0x00, 0x20, 0x64],
            "tag kept, PCP included"
        );
        let a = Arp::parse(&f[18..]).unwrap();
        assert_eq!(a.sender_ip(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(&f[0..6], &PEER_MAC);
    }

    #[test]
    fn arp_not_ours_or_not_request() {
        let me = me();
        let mut f = arp_request();
        f[38..42].copy_from_slice(&[192, 168, 10, 2]);
        let orig = f.clone();
        assert_eq!(answer_local(&mut f, &me), LocalVerdict::NotLocal);
        assert_eq!(f, orig);

        // Gratuitous ARP for our own address (someone else claims it): forwarded.
        let mut f = arp_request();
        f[28..32].copy_from_slice(&[192, 168, 10, 1]);
        assert_eq!(answer_local(&mut f, &me), LocalVerdict::NotLocal);

        // An ARP reply to us: not answered.
        let mut f = arp_request();
        f[21] = 2;
        assert_eq!(answer_local(&mut f, &me), LocalVerdict::NotLocal);
    }

    #[test]
    fn arp_probe_is_answered() {
        // RFC 5227 probe: sender IP 0.0.0.0; we defend our address.
        let mut f = arp_request();
        f[28..32].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::Replied);
        assert_eq!(
            Arp::parse(&f[14..]).unwrap().target_ip(),
            Ipv4Addr::UNSPECIFIED
        );
    }

    #[test]
    fn malformed_arp() {
        let mut f = arp_request();
        f[18] = 8; // hlen 8
        assert_eq!(
            answer_local(&mut f, &me()),
            LocalVerdict::NotLocal,
            "broadcast: not ours to judge"
        );
        f[0..6].copy_from_slice(&ME_MAC);
        assert_eq!(
            answer_local(&mut f, &me()),
            LocalVerdict::Drop(DropReason::MalformedArp)
        );
        let mut f = arp_request()[..30].to_vec();
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::NotLocal);
    }

    fn check_echo_reply(req: &[u8], rep: &[u8], l3: usize) {
        assert_eq!(req.len(), rep.len());
        assert_eq!(&rep[0..6], &PEER_MAC);
        assert_eq!(&rep[6..12], &ME_MAC);
        assert_eq!(&rep[12..l3], &req[12..l3], "tags and EtherType kept");
        let ip = Ipv4::parse(&rep[l3..]).expect("IP checksum valid");
        assert_eq!(ip.src_addr(), Ipv4Addr::new(192, 168, 10, 1));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(192, 168, 10, 20));
        assert_eq!(ip.ttl(), 64);
        // Full recomputation agrees with the incremental fixes.
        let mut copy = rep[l3..l3 + ip.header_len()].to_vec();
        copy[10] = 0;
        copy[11] = 0;
        assert_eq!(ip.checksum(), checksum::checksum(&copy));
        let m = Icmp::parse(ip.payload()).unwrap();
        assert_eq!((m.msg_type(), m.code()), (icmp_type::ECHO_REPLY, 0));
        assert_eq!((m.echo_ident(), m.echo_seq()), (0x1c2d, 1));
        let mut copy = ip.payload().to_vec();
        copy[2] = 0;
        copy[3] = 0;
        assert_eq!(m.checksum(), checksum::checksum(&copy));
        assert_eq!(m.payload(), &req[l3 + 28..], "echo data returned as sent");
    }

    #[test]
    fn ping_gets_echo_reply() {
        let req = ping();
        let mut f = req.clone();
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::Replied);
        check_echo_reply(&req, &f, 14);
    }

    #[test]
    fn ping_with_odd_ttl_and_vlan() {
        let mut req = vlan_tag(&ping(), 7);
        req[18 + 8] = 3; // TTL 3 (refix IP checksum)
        req[18 + 10] = 0;
        req[18 + 11] = 0;
        let c = checksum::checksum(&req[18..38]);
        req[28..30].copy_from_slice(&c.to_be_bytes());
        let mut f = req.clone();
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::Replied);
        check_echo_reply(&req, &f, 18);
    }

    #[test]
    fn ping_with_ip_options_and_padding() {
        // Same ping with a 4-byte NOP option block, and 6 bytes of Ethernet padding.
        let p = ping();
        let mut req = p[..34].to_vec();
        req.extend_from_slice(&[1, 1, 1, 0]);
        req.extend_from_slice(&p[34..]);
        req[14] = 0x46;
        req[16..18].copy_from_slice(&88u16.to_be_bytes());
        req[24] = 0;
        req[25] = 0;
        let c = checksum::checksum(&req[14..38]);
        req[24..26].copy_from_slice(&c.to_be_bytes());
        req.extend_from_slice(&[0xee; 6]);
        let mut f = req.clone();
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::Replied);
        let ip = Ipv4::parse(&f[14..]).unwrap();
        assert_eq!(ip.options(), &[1, 1, 1, 0]);
        let m = Icmp::parse(ip.payload()).unwrap();
        assert!(m.verify_checksum());
        assert_eq!(m.msg_type(), icmp_type::ECHO_REPLY);
        assert_eq!(&f[f.len() - 6..], &[0xee; 6], "padding not touched");
    }

    #[test]
    fn ping_to_broadcast_mac_still_replies_from_our_mac() {
        let req = {
            let mut p = ping();
            p[0..6].copy_from_slice(&[0xff; 6]);
            p
        };
        let mut f = req.clone();
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::Replied);
        assert_eq!(&f[6..12], &ME_MAC);
    }

    #[test]
    fn ping_not_ours() {
        let mut f = ping();
        f[30..34].copy_from_slice(&[192, 168, 10, 99]);
        let orig = f.clone();
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::NotLocal);
        assert_eq!(f, orig);
    }

    fn refix_ip(f: &mut [u8]) {
        f[24] = 0;
        f[25] = 0;
        let hl = (f[14] & 0xf) as usize * 4;
        let c = checksum::checksum(&f[14..14 + hl]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn other_traffic_to_us_is_unhandled() {
        let me = me();
        // UDP to us.
        let mut f = ping();
        f[23] = ip_proto::UDP;
        refix_ip(&mut f);
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::LocalUnhandled)
        );
        // Echo reply to us.
        let mut f = ping();
        f[34] = icmp_type::ECHO_REPLY;
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::LocalUnhandled)
        );
        // Echo request with non-zero code.
        let mut f = ping();
        f[35] = 1;
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::LocalUnhandled)
        );
        // Echo request from a broadcast source: never reflect.
        let mut f = ping();
        f[26..30].copy_from_slice(&[255, 255, 255, 255]);
        refix_ip(&mut f);
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::LocalUnhandled)
        );
        // IPv6 is never ours.
        let mut f = ping();
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(answer_local(&mut f, &me), LocalVerdict::NotLocal);
    }

    #[test]
    fn malformed_ip_to_us_is_dropped_with_reason() {
        let me = me();
        let mut f = ping();
        f[24] ^= 0xff;
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::BadIpv4Checksum)
        );
        let mut f = ping();
        f[14] = 0x44;
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::MalformedIpv4)
        );
        let mut f = ping()[..60].to_vec(); // total length 84 > what is left
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::MalformedIpv4)
        );
        // ICMP cut to 4 bytes (total length says so, IP header valid).
        let mut f = ping()[..14 + 24].to_vec();
        f[16..18].copy_from_slice(&24u16.to_be_bytes());
        refix_ip(&mut f);
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::MalformedIcmp)
        );
        // Fragment to us.
        let mut f = ping();
        f[20] = 0x20; // MF
        refix_ip(&mut f);
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::Fragment)
        );
        // Too short to hold a destination: ours only if sent to our MAC.
        let mut f = ping()[..25].to_vec();
        assert_eq!(
            answer_local(&mut f, &me),
            LocalVerdict::Drop(DropReason::MalformedIpv4)
        );
        f[0..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(answer_local(&mut f, &me), LocalVerdict::NotLocal);
    }

    #[test]
    fn malformed_ip_not_to_us_is_passed() {
        let mut f = ping();
        f[30..34].copy_from_slice(&[8, 8, 8, 8]); // checksum now wrong too
        f[14] = 0x4f;
        let orig = f.clone();
        assert_eq!(answer_local(&mut f, &me()), LocalVerdict::NotLocal);
        assert_eq!(f, orig);
        let mut runt = vec![1u8, 2, 3];
        assert_eq!(answer_local(&mut runt, &me()), LocalVerdict::NotLocal);
    }

    #[test]
    fn heartbeats_and_arp_replies_for_us_are_punted_only_when_asked() {
        use crate::packet::build::{arp_request, udp4, Udp4Addrs};
        let mut punting = me();
        punting.punt_udp = Some(7400);
        punting.punt_arp = true;
        let to = |dport: u16, dst: Ipv4Addr| {
            let a = Udp4Addrs { src_mac: PEER_MAC, dst_mac: ME_MAC, src: Ipv4Addr::new(192, 168, 10, 20), dst, sport: 5555, dport };
            let mut b = vec![0u8; 128];
            let n = udp4(&mut b, &a, 1, b"hb").unwrap();
            b.truncate(n);
            b
        };
        let mine = Ipv4Addr::new(192, 168, 10, 1);
        let hb = to(7400, mine);
        assert_eq!(answer_local(&mut hb.clone(), &punting), LocalVerdict::Punt);
        assert_eq!(answer_local(&mut to(7401, mine), &punting), LocalVerdict::Drop(DropReason::LocalUnhandled));
        assert_eq!(answer_local(&mut to(7400, Ipv4Addr::new(192, 168, 10, 99)), &punting), LocalVerdict::NotLocal);
        assert_eq!(answer_local(&mut hb.clone(), &me()), LocalVerdict::Drop(DropReason::LocalUnhandled));
        // A punted frame is left as it was.
        let mut copy = hb.clone();
        answer_local(&mut copy, &punting);
        assert_eq!(copy, hb);
        // An ARP reply to one of our addresses (the answer to the control thread's request).
        let mut reply = vec![0u8; 60];
        arp_request(&mut reply, PEER_MAC, Ipv4Addr::new(192, 168, 10, 20), mine).unwrap();
        reply[0..6].copy_from_slice(&ME_MAC);
        reply[21] = 2; // reply
        reply[28..32].copy_from_slice(&[192, 168, 10, 20]);
        reply[38..42].copy_from_slice(&mine.octets());
        assert_eq!(answer_local(&mut reply.clone(), &punting), LocalVerdict::Punt);
        assert_eq!(answer_local(&mut reply, &me()), LocalVerdict::NotLocal);
    }

    proptest::proptest! {
        /// The inline transit check decides what the general path decides, with the same
        /// bytes after: on pings and ARP requests with any bytes changed (the destination
        /// address ours or not, tagged or not, cut short or padded).
        #[test]
        fn the_transit_check_decides_as_the_general_path(
            base in 0usize..3,
            edits in proptest::collection::vec((0usize..110, proptest::prelude::any::<u8>()), 0..6),
            len in 0usize..120,
        ) {
            let mut f = match base { 0 => ping(), 1 => arp_request(), _ => vlan_tag(&ping(), 7) };
            for (at, b) in edits {
                if let Some(x) = f.get_mut(at) {
                    *x = b;
                }
            }
            f.truncate(len.max(1));
            let mut a = f.clone();
            let mut b = f;
            proptest::prop_assert_eq!(answer_local(&mut a, &me()), answer_local_slow(&mut b, &me()));
            proptest::prop_assert_eq!(a, b);
        }
    }
}
