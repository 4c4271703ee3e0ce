//! Member selection for the balance role: flow hash → weighted Maglev table → member.
//!
//! Pure: no DPDK, no I/O, and nothing allocates after a table is built. The control
//! thread builds a [`SelectionTable`] from the configured members and their smoothed
//! weights (thesis §4.5: W'_i = W_i / ΣW_j; only ratios matter, so integer weights such
//! as round(1000·W'_i) will do) and hands it to the lcores, which call
//! [`SelectionTable::select`] per frame, rewrite the destination MAC to the member's and
//! transmit on the member's port. Lcores keep no per-flow state: the same table and seed
//! on every appliance of the rack send a flow to the same member.
//!
//! * [`hash`] — [`FlowHasher`]: which fields are hashed ([`HashPolicy`] `l2`/`l23`/`l34`,
//!   like Linux bonding's `xmit_hash_policy`), keyed by a rack-wide seed.
//! * [`maglev`] — [`MaglevTable`]: the weighted Maglev table, M prime ≥ 100 × members.
//!
//! # The fragment rule (l34)
//! Only the first fragment of an IP datagram carries the TCP/UDP header, so a hash that
//! read ports would send the first fragment and the later ones to different members, and
//! neither could reassemble. Under `l34` **no fragment is hashed with ports, the first one
//! included**: every fragment of a datagram (IPv4 MF set or offset ≠ 0; IPv6 Fragment
//! header that is not atomic) hashes on (source, destination, protocol) and lands on one
//! member. The rule comes from [`crate::packet::flow`]'s `FlowKey` (ports 0 for
//! fragments), so balancing and flow tables agree on what a fragment's flow is. `l2` and
//! `l23` never read ports, so the rule is moot there.
//!
//! The trade-off, which is Linux bonding's too: packets of one flow that are *sometimes*
//! fragmented hash two ways, with ports when whole and without when fragmented, and can
//! be split between two members. How that is handled:
//!
//! * **TCP**: ports are always used for whole segments. TCP stacks send with DF set
//!   (PMTU discovery) and segment to the MSS, and IPv6 routers never fragment, so
//!   fragmented TCP is rare enough that spreading by port is worth it. A rack whose path
//!   fragments TCP (a tunnel that clears DF) should use `l23`.
//! * **UDP**: by default ([`UdpPorts::Hash`]) ports are used too, which is right for
//!   request/response protocols whose datagrams are independent (DNS). For UDP services
//!   that fragment *and* keep per-conversation state, configure [`UdpPorts::Ignore`]:
//!   every UDP datagram, whole or fragmented, then hashes on addresses and protocol only,
//!   so the conversation stays on one member at the cost of a coarser spread (all UDP
//!   between two hosts goes to one member).
//! * Other protocols (ICMP, ESP...) have no ports and hash on addresses and protocol.
//!
//! Not handled here: ICMP errors about a flow (e.g. "fragmentation needed") hash on the
//! ICMP packet's own addresses, not on the flow they quote, so they may reach another
//! member than the flow's.
//!
//! # Measured
//! Tests in `maglev.rs` (`--nocapture` prints the figures), 10⁵ random client flows to one
//! VIP hashed with `l34`, members `member-0`…, M = [`table_size_for`]`(N)`:
//! * Evenness, equal weights, N = 3, 5, 10: slot counts differ by at most 1 (e.g. 100/101
//!   of 1009); flows per member within 0.8 %, 1.3 %, 1.6 % of 1/N (sampling noise;
//!   asserted ±5 %).
//! * Weights 1:2:3: slot shares 0.166/0.332/0.502; flows within 0.7 % of 1/6, 2/6, 3/6
//!   (asserted ±10 %).
//! * Remove 1 of N (weight → 0, M unchanged), N = 5, 10, 20, each member in turn: all of
//!   its flows move and at most 3.3 % of the other members' flows (asserted ≤ 4 %).
//! * Add 1 to N = 4, 9, 19 with M pinned: 21.6 %, 11.5 %, 7.8 % of flows move, of which
//!   the newcomer takes 20.0 %, 9.9 %, 4.9 %; churn among the others ≤ 2.9 % (asserted
//!   ≤ 1/(N+1) + 4 %). With M following the member count instead, 77 %, 90 %, 95 % move:
//!   pin the table size in the configuration of a rack that will grow.
//!
//! A one-off run (not a test) over 200 random key sets, slot-exact, N = 6, 11, 21: removing
//! one member moves p50 2.6/2.7/2.4 %, p99 5.8/4.5/4.1 %, worst 14/11/10 % of the others'
//! flows. The churn of Maglev's cascade is usually small but has a tail; a table of
//! 1000 × N slots cuts it to p50 ≈ 0.7 %, p99 ≤ 1.6 % (use the size override).

pub mod hash;
pub mod maglev;

pub use hash::{FlowHasher, HashPolicy, UdpPorts};
pub use maglev::{member_key, table_size_for, BuildError, MaglevTable, Member};

use crate::packet::Parsed;
use crate::role::PortIndex;

/// Where a selected member is: the lcore rewrites the destination MAC and sends on `port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberEntry {
    /// The member's MAC (the new destination MAC of the frame).
    pub mac: [u8; 6],
    /// The appliance port that reaches the member.
    pub port: PortIndex,
}

/// One configured member as the control thread describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemberSpec {
    /// Stable identity (see [`member_key`]); decides the member's slots.
    pub key: u64,
    /// Current smoothed weight; 0 while the member is down or drained.
    pub weight: u32,
    /// Where its frames go.
    pub entry: MemberEntry,
}

/// What an lcore needs to pick a member: the hash configuration, the table and the
/// members' addresses. Built by the control thread (allocates), read-only afterwards, so
/// it can be shared by every lcore and replaced as a whole when membership or weights
/// change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectionTable {
    hasher: FlowHasher,
    table: MaglevTable,
    members: Box<[MemberEntry]>,
}

impl SelectionTable {
    /// Build over `members` (every configured member, dead ones at weight 0, so that the
    /// table size stays put). `size` pins M (a prime); `None` = [`table_size_for`].
    pub fn build(
        hasher: FlowHasher,
        members: &[MemberSpec],
        size: Option<usize>,
    ) -> Result<SelectionTable, BuildError> {
        let weighted: Vec<Member> = members
            .iter()
            .map(|m| Member {
                key: m.key,
                weight: m.weight,
            })
            .collect();
        let table = match size {
            Some(size) => MaglevTable::with_size(&weighted, size)?,
            None => MaglevTable::build(&weighted)?,
        };
        Ok(SelectionTable {
            hasher,
            table,
            members: members.iter().map(|m| m.entry).collect(),
        })
    }

    /// The member for a classified frame (`frame` is the buffer `parsed` came from), with
    /// its index for per-member counters; `None` when no member has weight > 0.
    #[inline]
    pub fn select(&self, parsed: &Parsed, frame: &[u8]) -> Option<(u16, MemberEntry)> {
        self.select_hash(self.hasher.hash(parsed, frame))
    }

    /// The member for an IPv4 frame described by its MACs and flow key (see
    /// [`FlowHasher::hash_v4`]); the same choice as [`SelectionTable::select`].
    #[inline(always)]
    pub fn select_v4(&self, frame: &[u8], key: &crate::packet::FlowKey) -> Option<(u16, MemberEntry)> {
        self.select_hash(self.hasher.hash_v4(frame, key))
    }

    /// The member for an already computed flow hash.
    #[inline(always)]
    pub fn select_hash(&self, hash: u64) -> Option<(u16, MemberEntry)> {
        let index = self.table.lookup(hash)?;
        let entry = self.members.get(usize::from(index))?;
        Some((index, *entry))
    }

    /// This table with the members for which `gone` is true replaced by their owners in
    /// `fresh` (built without them, same size and members), every other slot kept: see
    /// [`MaglevTable::without`]. The members' addresses are `fresh`'s.
    pub fn without(&self, fresh: &SelectionTable, gone: impl Fn(u16) -> bool) -> Option<SelectionTable> {
        if fresh.members.len() != self.members.len() {
            return None;
        }
        Some(SelectionTable { hasher: fresh.hasher, table: self.table.without(&fresh.table, gone)?, members: fresh.members.clone() })
    }

    /// The hash configuration.
    pub fn hasher(&self) -> &FlowHasher {
        &self.hasher
    }

    /// The Maglev table (size, slots and per-member shares for the operator).
    pub fn table(&self) -> &MaglevTable {
        &self.table
    }

    /// The members' addresses, by index.
    pub fn members(&self) -> &[MemberEntry] {
        &self.members
    }
}

#[cfg(test)]
mod tests {
    use super::hash::tests::v6_fragment;
    use super::*;
    use crate::packet::parse_frame;
    use crate::packet::testutil::*;

    fn specs(weights: &[u32]) -> Vec<MemberSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| MemberSpec {
                key: member_key(format!("10.1.0.{i}").as_bytes()),
                weight,
                entry: MemberEntry {
                    mac: [0x02, 0, 0, 0, 1, i as u8],
                    port: i as u16 % 2,
                },
            })
            .collect()
    }

    fn select(t: &SelectionTable, frame: &[u8]) -> Option<(u16, MemberEntry)> {
        t.select(&parse_frame(frame).unwrap(), frame)
    }

    #[test]
    fn selects_member_entries() {
        let members = specs(&[1, 1, 1, 1]);
        let hasher = FlowHasher::new(HashPolicy::L34, 99);
        let t = SelectionTable::build(hasher, &members, None).unwrap();
        assert_eq!(t.table().size(), 401);
        assert_eq!(t.members().len(), 4);
        let mut seen = [false; 4];
        for port in 0..200u16 {
            let f = ipv4_tcp_frame(None, [10, 0, 0, 1], [10, 0, 0, 2], 30000 + port, 80, 0);
            let (i, entry) = select(&t, &f).unwrap();
            assert_eq!(entry, members[usize::from(i)].entry);
            assert_eq!(
                Some((i, entry)),
                t.select_hash(hasher.hash_frame(&f).unwrap())
            );
            seen[usize::from(i)] = true;
        }
        assert_eq!(seen, [true; 4]);
    }

    /// The fragment rule end to end: first, middle and last fragments of many datagrams
    /// (IPv4 and IPv6) go to the member of their datagram, whatever the later fragments
    /// carry where ports would be.
    #[test]
    fn fragments_of_a_datagram_go_to_one_member() {
        let members = specs(&[1, 2, 3, 4, 5]);
        let t = SelectionTable::build(FlowHasher::new(HashPolicy::L34, 7), &members, None).unwrap();
        let mut used = std::collections::HashSet::new();
        for d in 0..300u16 {
            let src = [10, 0, (d >> 8) as u8, d as u8];
            let v4 = [
                ipv4_tcp_frame(None, src, [10, 9, 9, 9], 40000 + d, 53, 0x2000),
                ipv4_tcp_frame(
                    None,
                    src,
                    [10, 9, 9, 9],
                    d.wrapping_mul(31),
                    d,
                    0x2000 | 185,
                ),
                ipv4_tcp_frame(None, src, [10, 9, 9, 9], !d, d ^ 0x5555, 370),
            ];
            let want = select(&t, &v4[0]).unwrap();
            used.insert(want.0);
            for f in &v4[1..] {
                assert_eq!(select(&t, f), Some(want), "v4 datagram {d}");
            }
            let s = format!("2001:db8::{d:x}");
            let first = v6_fragment(&s, "2001:db8::ffff", (40000 + d, 53), 0, true);
            let want = select(&t, &first).unwrap();
            for (ports, offset, more) in [((d, !d), 181, true), ((!d, d), 362, false)] {
                let f = v6_fragment(&s, "2001:db8::ffff", ports, offset, more);
                assert_eq!(select(&t, &f), Some(want), "v6 datagram {d}");
            }
        }
        assert_eq!(used.len(), 5, "datagrams still spread over members");
    }

    #[test]
    fn nobody_weighted_nobody_selected() {
        let t = SelectionTable::build(
            FlowHasher::new(HashPolicy::L23, 1),
            &specs(&[0, 0]),
            Some(251),
        )
        .unwrap();
        let f = ipv6_udp_frame("::1", "::2", 1, 2);
        assert_eq!(select(&t, &f), None);
        assert_eq!(t.table().shares(), [0, 0]);
        let mut dup = specs(&[1, 1]);
        dup[1].key = dup[0].key;
        assert_eq!(
            SelectionTable::build(FlowHasher::new(HashPolicy::L2, 1), &dup, None),
            Err(BuildError::DuplicateKey(dup[0].key))
        );
    }
}
