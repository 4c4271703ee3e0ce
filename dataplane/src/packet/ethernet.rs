//! Ethernet II with up to two VLAN tags (802.1Q, or QinQ 802.1ad/0x9100 outer + 802.1Q inner).

use super::field::{bytes, set_bytes, set_u16, u16_at};
use crate::stats::DropReason;

/// EtherType values the appliance looks at.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (QinQ outer).
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ outer tag still seen in the field.
    pub const QINQ_OLD: u16 = 0x9100;
}

/// Ethernet header length without tags.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag.
pub const VLAN_TAG_LEN: usize = 4;
/// The broadcast MAC address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

#[inline]
fn is_tag(t: u16) -> bool {
    t == ethertype::VLAN || t == ethertype::QINQ || t == ethertype::QINQ_OLD
}

/// Zero-copy Ethernet header view. Tags are resolved once at parse time so roles get the
/// L3 offset and the real EtherType without re-walking the tags on every access.
#[derive(Clone, Copy, Debug)]
pub struct Ethernet<T> {
    buf: T,
    /// Number of VLAN tags (0, 1 or 2).
    tags: u8,
}

impl<T: AsRef<[u8]>> Ethernet<T> {
    /// Validate the header and its tags. A third stacked tag is not walked: the frame is
    /// reported with EtherType `0x8100` (an "other" EtherType), so it is forwarded, never
    /// misparsed.
    pub fn parse(buf: T) -> Result<Self, DropReason> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::TruncatedEthernet);
        }
        let mut tags = 0u8;
        if is_tag(u16_at(b, 12)) {
            if b.len() < HEADER_LEN + VLAN_TAG_LEN {
                return Err(DropReason::TruncatedEthernet);
            }
            tags = 1;
            if u16_at(b, 16) == ethertype::VLAN {
                if b.len() < HEADER_LEN + 2 * VLAN_TAG_LEN {
                    return Err(DropReason::TruncatedEthernet);
                }
                tags = 2;
            }
        }
        Ok(Ethernet { buf, tags })
    }

    /// The underlying buffer (the whole frame).
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Destination MAC.
    pub fn dst(&self) -> [u8; 6] {
        bytes(self.buf.as_ref(), 0)
    }

    /// Source MAC.
    pub fn src(&self) -> [u8; 6] {
        bytes(self.buf.as_ref(), 6)
    }

    /// Number of VLAN tags in front of the EtherType (0, 1 or 2).
    pub fn tag_count(&self) -> usize {
        self.tags as usize
    }

    /// VLAN id of the outermost tag: the one the switch port sees.
    pub fn vlan_id(&self) -> Option<u16> {
        (self.tags >= 1).then(|| u16_at(self.buf.as_ref(), 14) & 0x0fff)
    }

    /// VLAN id of the inner (customer) tag of a QinQ frame.
    pub fn inner_vlan_id(&self) -> Option<u16> {
        (self.tags >= 2).then(|| u16_at(self.buf.as_ref(), 18) & 0x0fff)
    }

    /// Offset of the EtherType that describes the payload (after the tags).
    fn ethertype_offset(&self) -> usize {
        12 + VLAN_TAG_LEN * self.tags as usize
    }

    /// The EtherType of the payload, after any VLAN tags.
    pub fn ethertype(&self) -> u16 {
        u16_at(self.buf.as_ref(), self.ethertype_offset())
    }

    /// Where the L3 header starts in the frame (14, 18 or 22).
    pub fn l3_offset(&self) -> usize {
        HEADER_LEN + VLAN_TAG_LEN * self.tags as usize
    }

    /// Everything after the L2 header (L3 header, payload and any Ethernet padding).
    pub fn payload(&self) -> &[u8] {
        self.buf.as_ref().get(self.l3_offset()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ethernet<T> {
    /// Rewrite the destination MAC (replies, next hop).
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        set_bytes(self.buf.as_mut(), 0, &mac);
    }

    /// Rewrite the source MAC (frames the appliance emits).
    pub fn set_src(&mut self, mac: [u8; 6]) {
        set_bytes(self.buf.as_mut(), 6, &mac);
    }

    /// Rewrite the payload EtherType (after the tags).
    pub fn set_ethertype(&mut self, t: u16) {
        let at = self.ethertype_offset();
        set_u16(self.buf.as_mut(), at, t);
    }

    /// Change the outer VLAN id, keeping PCP/DEI. Returns false (and does nothing) on an
    /// untagged frame: adding a tag changes the frame length, which is the port layer's job.
    pub fn set_vlan_id(&mut self, vid: u16) -> bool {
        if self.tags == 0 {
            return false;
        }
        let tci = u16_at(self.buf.as_ref(), 14);
        set_u16(self.buf.as_mut(), 14, (tci & 0xf000) | (vid & 0x0fff));
        true
    }

    /// Change the inner VLAN id of a QinQ frame (false when there is none).
    pub fn set_inner_vlan_id(&mut self, vid: u16) -> bool {
        if self.tags < 2 {
            return false;
        }
        let tci = u16_at(self.buf.as_ref(), 18);
        set_u16(self.buf.as_mut(), 18, (tci & 0xf000) | (vid & 0x0fff));
        true
    }

    /// Mutable access to everything after the L2 header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.l3_offset();
        self.buf.as_mut().get_mut(at..).unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tags: &[(u16, u16)], et: u16) -> Vec<u8> {
        let mut f = vec![1, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf];
        for &(tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(&[0x45, 0, 0, 0]);
        f
    }

    #[test]
    fn untagged() {
        let f = frame(&[], ethertype::IPV4);
        let e = Ethernet::parse(&f[..]).unwrap();
        assert_eq!(e.dst(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(e.src(), [0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
        assert_eq!(e.vlan_id(), None);
        assert_eq!(e.ethertype(), ethertype::IPV4);
        assert_eq!(e.l3_offset(), 14);
        assert_eq!(e.payload()[0], 0x45);
    }

    #[test]
    fn single_tag() {
        let f = frame(&[(ethertype::VLAN, 0xa00a)], ethertype::ARP);
        let e = Ethernet::parse(&f[..]).unwrap();
        assert_eq!(e.vlan_id(), Some(10));
        assert_eq!(e.inner_vlan_id(), None);
        assert_eq!(e.ethertype(), ethertype::ARP);
        assert_eq!(e.l3_offset(), 18);
    }

    #[test]
    fn qinq() {
        let f = frame(
            &[(ethertype::QINQ, 100), (ethertype::VLAN, 200)],
            ethertype::IPV6,
        );
        let e = Ethernet::parse(&f[..]).unwrap();
        assert_eq!(e.vlan_id(), Some(100));
        assert_eq!(e.inner_vlan_id(), Some(200));
        assert_eq!(e.ethertype(), ethertype::IPV6);
        assert_eq!(e.l3_offset(), 22);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Ethernet::parse(&[0u8; 13][..]).unwrap_err(),
            DropReason::TruncatedEthernet
        );
        let f = frame(&[(ethertype::VLAN, 1)], ethertype::IPV4);
        assert_eq!(
            Ethernet::parse(&f[..17]).unwrap_err(),
            DropReason::TruncatedEthernet
        );
        assert!(Ethernet::parse(&f[..18]).is_ok());
        let f = frame(
            &[(ethertype::QINQ, 1), (ethertype::VLAN, 2)],
            ethertype::IPV4,
        );
        assert_eq!(
            Ethernet::parse(&f[..21]).unwrap_err(),
            DropReason::TruncatedEthernet
        );
    }

    #[test]
    fn setters() {
        let mut f = frame(&[(ethertype::VLAN, 0xe005)], ethertype::IPV4);
        let mut e = Ethernet::parse(&mut f[..]).unwrap();
        e.set_dst([9; 6]);
        e.set_src([8; 6]);
        assert!(e.set_vlan_id(0xabc));
        assert!(!e.set_inner_vlan_id(1));
        e.set_ethertype(ethertype::IPV6);
        let e = Ethernet::parse(&f[..]).unwrap();
        assert_eq!((e.dst(), e.src()), ([9; 6], [8; 6]));
        assert_eq!(e.vlan_id(), Some(0xabc));
        assert_eq!(u16_at(&f, 14) & 0xf000, 0xe000, "PCP/DEI kept");
        assert_eq!(
            Ethernet::parse(&f[..]).unwrap().ethertype(),
            ethertype::IPV6
        );
    }
}
