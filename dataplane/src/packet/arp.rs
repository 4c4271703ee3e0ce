//! ARP for Ethernet/IPv4 (RFC 826), the only kind the appliance answers.

use std::net::Ipv4Addr;

use super::field::{bytes, set_bytes, set_u16, u16_at};
use crate::stats::DropReason;

/// Length of an Ethernet/IPv4 ARP body.
pub const LEN: usize = 28;
/// Operation code of a request ("who has").
pub const OP_REQUEST: u16 = 1;
/// Operation code of a reply ("is at").
pub const OP_REPLY: u16 = 2;

/// Zero-copy view of an Ethernet/IPv4 ARP body (the L3 payload of an ARP frame).
#[derive(Clone, Copy, Debug)]
pub struct Arp<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Arp<T> {
    /// Accept only hardware type Ethernet (1), protocol IPv4, hlen 6, plen 4: any other
    /// layout puts the addresses elsewhere, so reading them would be nonsense.
    pub fn parse(buf: T) -> Result<Self, DropReason> {
        let b = buf.as_ref();
        if b.len() < LEN
            || u16_at(b, 0) != 1
            || u16_at(b, 2) != super::ethertype::IPV4
            || b[4] != 6
            || b[5] != 4
        {
            return Err(DropReason::MalformedArp);
        }
        Ok(Arp { buf })
    }

    /// A view without validation, for building an ARP body in a zeroed buffer.
    /// Accessors stay panic-free on a short buffer (reads give 0, writes are ignored).
    pub fn new_unchecked(buf: T) -> Self {
        Arp { buf }
    }

    /// Give the buffer back (e.g. to re-borrow the whole frame).
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Always 1 (Ethernet) on a parsed view.
    pub fn hardware_type(&self) -> u16 {
        u16_at(self.buf.as_ref(), 0)
    }

    /// Always 0x0800 (IPv4) on a parsed view.
    pub fn protocol_type(&self) -> u16 {
        u16_at(self.buf.as_ref(), 2)
    }

    /// 1 = request, 2 = reply.
    pub fn operation(&self) -> u16 {
        u16_at(self.buf.as_ref(), 6)
    }

    /// MAC of the host that sent this ARP (where a reply goes).
    pub fn sender_mac(&self) -> [u8; 6] {
        bytes(self.buf.as_ref(), 8)
    }

    /// IPv4 address of the sender (0.0.0.0 in an RFC 5227 probe).
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(bytes::<4>(self.buf.as_ref(), 14))
    }

    /// MAC being resolved (zero in a request).
    pub fn target_mac(&self) -> [u8; 6] {
        bytes(self.buf.as_ref(), 18)
    }

    /// The address being asked about.
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(bytes::<4>(self.buf.as_ref(), 24))
    }

    /// Gratuitous ARP announces the sender's own address (sender IP == target IP); nobody
    /// should answer it.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip() == self.target_ip()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Arp<T> {
    /// Write the fixed Ethernet/IPv4 preamble (htype, ptype, hlen, plen).
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buf.as_mut();
        set_u16(b, 0, 1);
        set_u16(b, 2, super::ethertype::IPV4);
        set_bytes(b, 4, &[6, 4]);
    }

    /// Set request/reply ([`OP_REQUEST`]/[`OP_REPLY`]).
    pub fn set_operation(&mut self, op: u16) {
        set_u16(self.buf.as_mut(), 6, op);
    }

    /// Set the sender hardware address.
    pub fn set_sender_mac(&mut self, mac: [u8; 6]) {
        set_bytes(self.buf.as_mut(), 8, &mac);
    }

    /// Set the sender protocol address.
    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        set_bytes(self.buf.as_mut(), 14, &ip.octets());
    }

    /// Set the target hardware address.
    pub fn set_target_mac(&mut self, mac: [u8; 6]) {
        set_bytes(self.buf.as_mut(), 18, &mac);
    }

    /// Set the target protocol address.
    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        set_bytes(self.buf.as_mut(), 24, &ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse() {
        let mut b = [0u8; LEN];
        let mut a = Arp::new_unchecked(&mut b[..]);
        a.set_ethernet_ipv4();
        a.set_operation(OP_REQUEST);
        a.set_sender_mac([1, 2, 3, 4, 5, 6]);
        a.set_sender_ip(Ipv4Addr::new(10, 0, 0, 1));
        a.set_target_ip(Ipv4Addr::new(10, 0, 0, 2));
        let a = Arp::parse(&b[..]).unwrap();
        assert_eq!(a.operation(), OP_REQUEST);
        assert_eq!(a.sender_mac(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(a.sender_ip(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(a.target_mac(), [0; 6]);
        assert_eq!(a.target_ip(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(!a.is_gratuitous());
        assert_eq!(Arp::parse(&b[..27]).unwrap_err(), DropReason::MalformedArp);
    }

    #[test]
    fn rejects_non_ethernet_ipv4() {
        let mut b = [0u8; LEN];
        Arp::new_unchecked(&mut b[..]).set_ethernet_ipv4();
        for (i, v) in [(1usize, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut c = b;
            c[i] = v;
            assert_eq!(
                Arp::parse(&c[..]).unwrap_err(),
                DropReason::MalformedArp,
                "byte {i}"
            );
        }
        assert!(Arp::new_unchecked(&[0u8; 3][..])
            .sender_ip()
            .is_unspecified());
    }
}
