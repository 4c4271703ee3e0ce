//! The flow hash that picks a member: which header fields count, by policy.
//!
//! The policies mirror Linux bonding's `xmit_hash_policy`, because the members of a VIP are
//! treated like the links of a bond (see the module docs of [`super`] for the fragment
//! rule and its trade-off):
//!
//! | policy | fields | for non-IP frames |
//! | --- | --- | --- |
//! | [`HashPolicy::L2`] (`layer2`) | destination MAC, source MAC, EtherType | same |
//! | [`HashPolicy::L23`] (`layer2+3`) | the L2 fields + source and destination IP address | L2 fields |
//! | [`HashPolicy::L34`] (`layer3+4`) | IP addresses + protocol + TCP/UDP ports (ports 0 for fragments) | L2 fields |
//!
//! The hash is keyed by a seed from the rack configuration: every appliance of the rack
//! must use the same seed (and the same table) so that a flow lands on the same member
//! whichever appliance sees it. A secret seed also keeps outsiders from crafting flows
//! that all land on one member. The hash is direction-sensitive (balancing sees one
//! direction), deterministic, allocation-free, and distinct from the NIC's Toeplitz RSS
//! hash and from [`FlowKey::hash`], so member choice is not correlated with the RSS queue.

use std::net::IpAddr;

use crate::packet::{ip_proto, parse_frame, FlowKey, Parsed, L2};
use crate::stats::DropReason;

/// Which header fields the flow hash reads (Linux bonding's `xmit_hash_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashPolicy {
    /// MACs and EtherType. Everything from one router to the appliance has the same MACs,
    /// so behind a gateway this sends all traffic to one member; meant for L2 neighbours.
    L2,
    /// MACs and IP addresses: all flows between two hosts go to one member.
    L23,
    /// IP addresses, protocol and TCP/UDP ports: the finest spread; fragments hash without
    /// ports (see the fragment rule in [`super`]).
    L34,
}

impl HashPolicy {
    /// The policy for a configuration name: the short forms `l2`, `l23`, `l34` or Linux
    /// bonding's `layer2`, `layer2+3`, `layer3+4`.
    pub fn from_name(name: &str) -> Option<HashPolicy> {
        match name {
            "l2" | "layer2" => Some(HashPolicy::L2),
            "l23" | "layer2+3" => Some(HashPolicy::L23),
            "l34" | "layer3+4" => Some(HashPolicy::L34),
            _ => None,
        }
    }

    /// The short configuration name (`l2`, `l23`, `l34`).
    pub fn name(self) -> &'static str {
        match self {
            HashPolicy::L2 => "l2",
            HashPolicy::L23 => "l23",
            HashPolicy::L34 => "l34",
        }
    }
}

/// Whether [`HashPolicy::L34`] hashes UDP ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UdpPorts {
    /// UDP datagrams hash with their ports, fragments without (Linux bonding's rule). A
    /// UDP conversation whose datagrams are sometimes fragmented can be split across two
    /// members.
    #[default]
    Hash,
    /// UDP always hashes as if fragmented (addresses and protocol only), so every
    /// datagram of a conversation, fragmented or not, lands on one member. For UDP
    /// services that fragment (large DNS answers, some VPNs) and keep per-client state.
    Ignore,
}

/// The configured flow hash: policy, rack-wide seed and the UDP-ports choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowHasher {
    /// Which fields are hashed.
    pub policy: HashPolicy,
    /// Rack-wide seed (from the configuration; the same on every appliance).
    pub seed: u64,
    /// Whether L34 uses UDP ports.
    pub udp_ports: UdpPorts,
}

impl FlowHasher {
    /// A hasher with UDP ports hashed ([`UdpPorts::Hash`]).
    pub const fn new(policy: HashPolicy, seed: u64) -> FlowHasher {
        FlowHasher {
            policy,
            seed,
            udp_ports: UdpPorts::Hash,
        }
    }

    /// The same hasher with another UDP-ports choice.
    pub const fn with_udp_ports(self, udp_ports: UdpPorts) -> FlowHasher {
        FlowHasher { udp_ports, ..self }
    }

    /// Hash a frame already classified by [`parse_frame`]; `frame` is the buffer `parsed`
    /// came from. Never fails: frames without the policy's fields hash on their L2 fields.
    #[inline]
    pub fn hash(&self, parsed: &Parsed, frame: &[u8]) -> u64 {
        if self.policy == HashPolicy::L2 {
            return self.hash_l2(&parsed.l2);
        }
        // FlowKey applies the fragment rule: ports are 0 for every fragment.
        match FlowKey::from_parsed(parsed, frame) {
            None => self.hash_l2(&parsed.l2),
            Some(key) if self.policy == HashPolicy::L23 => self.hash_l23(&parsed.l2, &key),
            Some(key) => self.hash_l34(&key),
        }
    }

    /// Hash an IPv4 frame from fields the caller already has (the balance role's fast
    /// path, which does not build a [`Parsed`]): the same value as [`FlowHasher::hash`]
    /// gives for that frame. `frame` starts with its Ethernet header (the MACs are read
    /// only by the `l2` and `l23` policies); `key` follows the fragment rule (ports 0 for
    /// fragments and port-less protocols).
    #[inline(always)]
    pub fn hash_v4(&self, frame: &[u8], key: &FlowKey) -> u64 {
        if self.policy == HashPolicy::L34 {
            return self.hash_l34(key);
        }
        let mac = |o: usize| -> [u8; 6] { frame.get(o..o + 6).and_then(|m| m.try_into().ok()).unwrap_or([0; 6]) };
        let l2 = L2 { dst: mac(0), src: mac(6), vlan: None, inner_vlan: None, ethertype: crate::packet::ethertype::IPV4, l3_offset: 0 };
        match self.policy {
            HashPolicy::L23 => self.hash_l23(&l2, key),
            _ => self.hash_l2(&l2),
        }
    }

    /// Parse and hash (for tools and tests; the lcore already has a [`Parsed`]).
    pub fn hash_frame(&self, frame: &[u8]) -> Result<u64, DropReason> {
        let parsed = parse_frame(frame)?;
        Ok(self.hash(&parsed, frame))
    }

    fn hash_l2(&self, l2: &L2) -> u64 {
        let dst = mac_bits(l2.dst) | (u64::from(l2.ethertype) << 48);
        let h = absorb(self.seed, self.seed, dst, mac_bits(l2.src));
        finish(h, self.seed)
    }

    fn hash_l23(&self, l2: &L2, key: &FlowKey) -> u64 {
        let dst = mac_bits(l2.dst) | (u64::from(l2.ethertype) << 48);
        let h = absorb(self.seed, self.seed, dst, mac_bits(l2.src));
        finish(absorb_addrs(h, self.seed, key), self.seed)
    }

    /// The L34 hash of a flow key (ports already 0 for fragments and port-less
    /// protocols; zeroed here too for UDP under [`UdpPorts::Ignore`]).
    #[inline(always)]
    pub fn hash_l34(&self, key: &FlowKey) -> u64 {
        let ports = if key.protocol == ip_proto::UDP && self.udp_ports == UdpPorts::Ignore {
            0
        } else {
            (u64::from(key.src_port) << 16) | u64::from(key.dst_port)
        };
        let tail = (u64::from(key.protocol) << 32) | ports;
        // IPv4, the common case, fits one absorb: two multiplies per flow instead of four.
        if let (IpAddr::V4(s), IpAddr::V4(d)) = (key.src, key.dst) {
            return finish(absorb(self.seed, self.seed, v4_pair(s, d), tail ^ V4_TAG), self.seed);
        }
        let h = absorb_addrs(self.seed, self.seed, key);
        finish(absorb(h, self.seed, tail, 0), self.seed)
    }
}

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xd6e8_feb8_6659_fd93;
const K3: u64 = 0xa076_1d64_78bd_642f;

/// Folded multiply (wyhash/foldhash style): one 64×64→128 multiply, halves xor-ed. Every
/// input bit reaches every output bit in one step, which is what makes a two-word absorb
/// plus one finishing multiply a well-mixed hash.
#[inline(always)]
pub(crate) fn fold_mul(a: u64, b: u64) -> u64 {
    let m = u128::from(a).wrapping_mul(u128::from(b));
    (m as u64) ^ ((m >> 64) as u64)
}

/// Absorb two words into the state. The seed enters both factors, so without the seed
/// nobody can pick an input that zeroes a factor (which would collide every flow).
#[inline(always)]
fn absorb(h: u64, seed: u64, a: u64, b: u64) -> u64 {
    fold_mul(a ^ h ^ K1, b ^ seed ^ K2)
}

#[inline(always)]
fn finish(h: u64, seed: u64) -> u64 {
    fold_mul(h ^ seed ^ K3, K1)
}

/// Marks IPv4 inputs, so an IPv4 flow and an IPv6 one whose words happen to match do not
/// collide by construction.
const V4_TAG: u64 = 0x0000_ffff_0000_0000 << 16;

#[inline(always)]
fn v4_pair(s: std::net::Ipv4Addr, d: std::net::Ipv4Addr) -> u64 {
    (u64::from(u32::from(s)) << 32) | u64::from(u32::from(d))
}

#[inline(always)]
fn absorb_addrs(h: u64, seed: u64, key: &FlowKey) -> u64 {
    if let (IpAddr::V4(s), IpAddr::V4(d)) = (key.src, key.dst) {
        return absorb(h, seed, v4_pair(s, d), V4_TAG);
    }
    let (s, d) = (addr_bits(&key.src), addr_bits(&key.dst));
    let h = absorb(h, seed, s as u64, (s >> 64) as u64);
    absorb(h, seed, d as u64, (d >> 64) as u64)
}

#[inline(always)]
fn mac_bits(mac: [u8; 6]) -> u64 {
    let mut w = [0u8; 8];
    w[..6].copy_from_slice(&mac);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn addr_bits(a: &IpAddr) -> u128 {
    match a {
        // IPv4-mapped form, as FlowKey does: 1.2.3.4 and ::ffff:1.2.3.4 are one host.
        IpAddr::V4(v4) => 0xffff_0000_0000u128 | u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::packet::ipv6::{self, Ipv6};
    use crate::packet::testutil::*;
    use crate::packet::L4;
    use std::collections::HashSet;

    const SEED: u64 = 0x5eed_0001;

    fn h(policy: HashPolicy, frame: &[u8]) -> u64 {
        FlowHasher::new(policy, SEED).hash_frame(frame).unwrap()
    }

    /// IPv4 flags/offset words of a three-fragment datagram: first (MF, offset 0), middle
    /// (MF, offset 185 × 8 = 1480), last (offset 370, MF clear).
    const V4_FRAGS: [u16; 3] = [0x2000, 0x2000 | 185, 370];

    /// The three fragments of one IPv4/TCP-or-UDP datagram. Later fragments carry payload
    /// where the first carries the L4 header: `junk` fills the port positions, so a hash
    /// that read "ports" from them would differ from the first fragment's.
    fn v4_datagram(s: [u8; 4], d: [u8; 4], ports: (u16, u16), junk: u16) -> [Vec<u8>; 3] {
        V4_FRAGS.map(|frag| {
            let (sp, dp) = if frag & 0x1fff == 0 {
                ports
            } else {
                (junk, junk.rotate_left(7))
            };
            ipv4_tcp_frame(None, s, d, sp, dp, frag)
        })
    }

    /// An IPv6/UDP frame turned into a fragment: a Fragment header (offset in 8-byte
    /// units, M flag) is inserted before the UDP header.
    pub(crate) fn v6_fragment(
        s: &str,
        d: &str,
        ports: (u16, u16),
        offset: u16,
        more: bool,
    ) -> Vec<u8> {
        let mut f = ipv6_udp_frame(s, d, ports.0, ports.1);
        let l3 = 14;
        let frag_word = (offset << 3) | u16::from(more);
        let mut hdr = vec![ip_proto::UDP, 0];
        hdr.extend_from_slice(&frag_word.to_be_bytes());
        hdr.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        f.splice(l3 + ipv6::HEADER_LEN..l3 + ipv6::HEADER_LEN, hdr);
        let mut ip = Ipv6::new_unchecked(&mut f[l3..]);
        ip.set_next_header(ip_proto::IPV6_FRAG);
        ip.set_payload_len(ip.payload_len() as u16 + 8);
        f
    }

    #[test]
    fn every_fragment_of_a_v4_datagram_hashes_alike() {
        let hasher = FlowHasher::new(HashPolicy::L34, SEED);
        let mut firsts = HashSet::new();
        for i in 0..500u32 {
            let s = (0x0a00_0000 + i).to_be_bytes();
            let frames = v4_datagram(s, [10, 9, 9, 9], (40000 + i as u16, 53), i as u16 ^ 0xbeef);
            let kinds: Vec<L4> = frames.iter().map(|f| parse_frame(f).unwrap().l4).collect();
            assert_eq!(
                kinds,
                [
                    L4::Fragment { first: true },
                    L4::Fragment { first: false },
                    L4::Fragment { first: false }
                ]
            );
            let hashes: Vec<u64> = frames
                .iter()
                .map(|f| hasher.hash_frame(f).unwrap())
                .collect();
            assert!(
                hashes.iter().all(|&x| x == hashes[0]),
                "datagram {i}: {hashes:x?}"
            );
            firsts.insert(hashes[0]);
        }
        // Different datagrams still spread (the rule drops ports, not addresses).
        assert_eq!(firsts.len(), 500);
    }

    #[test]
    fn every_fragment_of_a_v6_datagram_hashes_alike() {
        let hasher = FlowHasher::new(HashPolicy::L34, SEED);
        let first = v6_fragment("2001:db8::1", "2001:db8::2", (5000, 53), 0, true);
        let middle = v6_fragment("2001:db8::1", "2001:db8::2", (0xdead, 0xbeef), 181, true);
        let last = v6_fragment("2001:db8::1", "2001:db8::2", (0x1111, 0x2222), 362, false);
        for f in [&first, &middle, &last] {
            assert!(parse_frame(f).unwrap().is_fragment());
        }
        let want = hasher.hash_frame(&first).unwrap();
        assert_eq!(hasher.hash_frame(&middle).unwrap(), want);
        assert_eq!(hasher.hash_frame(&last).unwrap(), want);
        // An atomic fragment (offset 0, M clear) is a whole datagram: ports count.
        let atomic = v6_fragment("2001:db8::1", "2001:db8::2", (5000, 53), 0, false);
        assert!(!parse_frame(&atomic).unwrap().is_fragment());
        assert_ne!(hasher.hash_frame(&atomic).unwrap(), want);
    }

    #[test]
    fn l34_uses_ports_of_whole_packets() {
        let a = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 0x4000);
        let b = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 0, 0, 2], 40001, 80, 0x4000);
        let c = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 81, 0x4000);
        let hashes: HashSet<u64> = [&a, &b, &c].iter().map(|f| h(HashPolicy::L34, f)).collect();
        assert_eq!(hashes.len(), 3);
        // MACs do not count under L34.
        let mut other_macs = a.clone();
        other_macs[..12].copy_from_slice(&[7; 12]);
        assert_eq!(h(HashPolicy::L34, &a), h(HashPolicy::L34, &other_macs));
    }

    /// The documented trade-off of the default: an unfragmented datagram and a fragmented
    /// one of the same UDP conversation hash differently; `UdpPorts::Ignore` joins them.
    #[test]
    fn udp_ports_ignore_keeps_a_udp_conversation_whole() {
        let (s, d) = ("2001:db8::1", "2001:db8::2");
        let whole = ipv6_udp_frame(s, d, 5000, 53);
        let frag = v6_fragment(s, d, (5000, 53), 0, true);
        let default = FlowHasher::new(HashPolicy::L34, SEED);
        assert_ne!(default.hash_frame(&whole), default.hash_frame(&frag));
        let joined = default.with_udp_ports(UdpPorts::Ignore);
        assert_eq!(joined.hash_frame(&whole), joined.hash_frame(&frag));
        assert_eq!(
            joined.hash_frame(&ipv6_udp_frame(s, d, 5001, 53)),
            joined.hash_frame(&whole)
        );
        // TCP keeps its ports under UdpPorts::Ignore.
        let t1 = ipv4_tcp_frame(None, [1, 1, 1, 1], [2, 2, 2, 2], 1, 80, 0);
        let t2 = ipv4_tcp_frame(None, [1, 1, 1, 1], [2, 2, 2, 2], 2, 80, 0);
        assert_ne!(joined.hash_frame(&t1), joined.hash_frame(&t2));
    }

    #[test]
    fn l23_reads_macs_and_addresses_not_ports() {
        let a = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 0);
        let other_ports = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 0);
        let other_src = ipv4_tcp_frame(None, [10, 0, 0, 3], [10, 0, 0, 2], 40000, 80, 0);
        let mut other_mac = a.clone();
        other_mac[11] ^= 1;
        assert_eq!(h(HashPolicy::L23, &a), h(HashPolicy::L23, &other_ports));
        assert_ne!(h(HashPolicy::L23, &a), h(HashPolicy::L23, &other_src));
        assert_ne!(h(HashPolicy::L23, &a), h(HashPolicy::L23, &other_mac));
    }

    #[test]
    fn l2_reads_macs_and_ethertype_only() {
        let a = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 0);
        let b = ipv4_tcp_frame(Some(9), [10, 0, 0, 3], [10, 0, 0, 4], 1, 2, 0);
        assert_eq!(h(HashPolicy::L2, &a), h(HashPolicy::L2, &b));
        let v6 = ipv6_udp_frame("::1", "::2", 1, 2);
        assert_ne!(h(HashPolicy::L2, &a), h(HashPolicy::L2, &v6));
        let mut swapped = a.clone();
        swapped[..6].copy_from_slice(&MAC_A);
        swapped[6..12].copy_from_slice(&MAC_B);
        assert_ne!(h(HashPolicy::L2, &a), h(HashPolicy::L2, &swapped));
    }

    #[test]
    fn non_ip_falls_back_to_l2() {
        let arp = arp_request_frame(None);
        let lldp = eth(None, 0x88cc);
        for p in [HashPolicy::L23, HashPolicy::L34] {
            assert_eq!(h(p, &arp), h(HashPolicy::L2, &arp));
            assert_eq!(h(p, &lldp), h(HashPolicy::L2, &lldp));
        }
        assert_ne!(
            h(HashPolicy::L2, &lldp),
            h(HashPolicy::L2, &eth(None, 0x88b5))
        );
    }

    #[test]
    fn seed_matters_and_errors_pass_through() {
        let f = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 0, 0, 2], 40000, 80, 0);
        for p in [HashPolicy::L2, HashPolicy::L23, HashPolicy::L34] {
            let a = FlowHasher::new(p, 1).hash_frame(&f).unwrap();
            let b = FlowHasher::new(p, 2).hash_frame(&f).unwrap();
            assert_ne!(a, b, "{p:?}");
        }
        assert_eq!(
            FlowHasher::new(HashPolicy::L34, 1).hash_frame(&f[..13]),
            Err(DropReason::TruncatedEthernet)
        );
    }

    #[test]
    fn policy_names() {
        for p in [HashPolicy::L2, HashPolicy::L23, HashPolicy::L34] {
            assert_eq!(HashPolicy::from_name(p.name()), Some(p));
        }
        assert_eq!(HashPolicy::from_name("layer3+4"), Some(HashPolicy::L34));
        assert_eq!(HashPolicy::from_name("layer2+3"), Some(HashPolicy::L23));
        assert_eq!(HashPolicy::from_name("encap3+4"), None);
    }

    /// Bit-level mixing: flipping any one input bit of the L34 key flips each output bit
    /// about half the time (strict avalanche within ±10 %).
    #[test]
    fn l34_avalanche() {
        let hasher = FlowHasher::new(HashPolicy::L34, SEED);
        let mut state = 1u64;
        let mut flips = [0u32; 64];
        let trials = 2000;
        for _ in 0..trials {
            state = splitmix(state);
            let base = key_from(state);
            let bit = (state >> 59) as u32; // 0..32: a port bit to flip
            let mut k = base;
            if bit < 16 {
                k.src_port ^= 1 << bit;
            } else {
                k.dst_port ^= 1 << (bit - 16);
            }
            let d = hasher.hash_l34(&base) ^ hasher.hash_l34(&k);
            for (i, f) in flips.iter_mut().enumerate() {
                *f += ((d >> i) & 1) as u32;
            }
        }
        for (i, f) in flips.iter().enumerate() {
            let frac = f64::from(*f) / f64::from(trials);
            assert!((0.45..=0.55).contains(&frac), "bit {i}: {frac}");
        }
    }

    pub(crate) fn splitmix(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A pseudo-random TCP flow toward one VIP (clients vary, VIP:443 fixed).
    pub(crate) fn key_from(r: u64) -> FlowKey {
        FlowKey {
            src: IpAddr::V4(std::net::Ipv4Addr::from((r >> 32) as u32)),
            dst: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10)),
            protocol: ip_proto::TCP,
            src_port: r as u16,
            dst_port: 443,
        }
    }

    #[test]
    fn the_fast_path_hash_equals_the_parsed_one_for_every_policy() {
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for i in 0..64u8 {
            frames.push(ipv4_tcp_frame(None, [10, 0, i, 1], [192, 0, 2, 10], 1000 + u16::from(i), 80, 0));
            frames.extend(v4_datagram([10, 1, i, 1], [192, 0, 2, 20], (5000 + u16::from(i), 53), 0xbeef));
        }
        for policy in [HashPolicy::L2, HashPolicy::L23, HashPolicy::L34] {
            let h = FlowHasher::new(policy, SEED);
            for f in &frames {
                let p = crate::packet::parse_frame(f).unwrap();
                let key = FlowKey::from_parsed(&p, f).unwrap();
                assert_eq!(h.hash_v4(f, &key), h.hash(&p, f), "{policy:?}");
            }
        }
    }
}
