//! Weighted Maglev lookup table (Eisenbud et al., NSDI '16, §3.4, with weights).
//!
//! # Population
//! Every member has a preference list over the M slots, a permutation given by
//! `offset = h1(key) mod M` and `skip = h2(key) mod (M − 1) + 1`: slot j of the list is
//! `(offset + j·skip) mod M`. M is prime, so every skip is coprime with M and the list
//! visits every slot. The permutation depends only on the member's stable key and on M,
//! never on the member's position in the list or on the other members: that is where the
//! minimal disruption comes from. Members then take turns claiming the next free slot of
//! their own list until the table is full.
//!
//! **Weights** (the thesis's W'_i = W_i / ΣW_j, §4.5): each round, every member adds its
//! weight to a credit and takes a turn only when the credit reaches the largest weight,
//! w_max (then pays w_max back). The heaviest members take a turn every round and a
//! member of weight w every w_max / w rounds, so slot counts are proportional to weight
//! (the property test checks ideal − 2 ≤ slots ≤ ideal + 2 + 2N·w/ΣW). The arithmetic is
//! integer, so the table is exact and deterministic, depends only on the weight ratios
//! (scaling every weight by an integer gives the same table), and equal weights reduce to
//! the paper's algorithm. Weight 0 means no turns, no slots: a drained or dead member.
//!
//! Turns go in key order, not input order, so the table depends on the *set* of
//! (key, weight) pairs only; lookups return the member's index in the caller's list.
//!
//! # Table size and disruption
//! The permutations depend on M, so **M must not change when members come and go**: build
//! the table over the configured members with dead ones at weight 0 (rather than leaving
//! them out) and M stays put; then a member leaving moves only its own flows plus a small
//! churn. Adding a member to the configuration grows [`table_size_for`] and reshuffles
//! nearly every flow, unless the size is pinned ([`MaglevTable::with_size`]) with room
//! for growth. Measured figures are in the docs of [`super`].
//!
//! # Cost
//! Build: O(M log M) probes for equal weights (the paper's bound); with skewed weights
//! the rounds grow to at most M, each O(members), so ≤ 100·N² steps (≈ 10⁸ at the
//! 1024-member cap). Allocation happens at build only. Lookup: one multiply and one load.

use std::fmt;

use super::hash::fold_mul;

/// The table floor: a prime large enough that one or two members still get a fine grid.
pub const MIN_TABLE_SIZE: usize = 251;
/// Slots per member that [`table_size_for`] aims at (the paper's M ≥ 100·N: slot counts of
/// equal members differ by at most one, i.e. ≤ 1 % imbalance).
pub const SLOTS_PER_MEMBER: usize = 100;
/// The largest table [`MaglevTable::with_size`] accepts (2²⁴ slots, 32 MiB of `u16`).
pub const MAX_TABLE_SIZE: usize = 1 << 24;
/// The most members one table holds; bounds the build time (see module docs).
pub const MAX_MEMBERS: usize = 1024;

/// Marks a free slot during population; never a member index (MAX_MEMBERS < u16::MAX).
const FREE: u16 = u16::MAX;

/// A member of the table: a stable identity and a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// Stable identity (e.g. [`member_key`] of the member's name); decides its slots.
    pub key: u64,
    /// Relative weight; 0 = no slots (drained or down).
    pub weight: u32,
}

/// Why a table could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// More than [`MAX_MEMBERS`] members.
    TooManyMembers {
        /// Members given.
        members: usize,
    },
    /// Two members share a key: they would fight over the same slots.
    DuplicateKey(u64),
    /// An explicit table size that is not prime.
    SizeNotPrime(usize),
    /// An explicit table size below the member count or above [`MAX_TABLE_SIZE`].
    SizeOutOfRange {
        /// The size asked for.
        size: usize,
        /// The smallest acceptable size (the member count, at least 2).
        min: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::TooManyMembers { members } => {
                write!(f, "{members} members, at most {MAX_MEMBERS} are supported")
            }
            BuildError::DuplicateKey(k) => write!(f, "two members have the key {k:#018x}"),
            BuildError::SizeNotPrime(n) => write!(f, "table size {n} is not prime"),
            BuildError::SizeOutOfRange { size, min } => write!(
                f,
                "table size {size} is out of range ({min}..={MAX_TABLE_SIZE})"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// A stable 64-bit key for a member identity (name, address bytes...). Fixed function
/// and constants: every appliance of the rack, whatever its version, must derive the same
/// key from the same identity. A collision is caught at build as
/// [`BuildError::DuplicateKey`].
pub fn member_key(id: &[u8]) -> u64 {
    const KEY_SEED: u64 = 0x6d61_676c_6576_2131; // "maglev!1"
    let mut h = KEY_SEED ^ id.len() as u64;
    for chunk in id.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = fold_mul(h ^ u64::from_le_bytes(w), 0x9e37_79b9_7f4a_7c15);
    }
    fold_mul(h ^ 0xa076_1d64_78bd_642f, 0xe703_7ed1_a0b4_28db)
}

/// The default table size for `members` configured members: the smallest prime
/// ≥ max(100 × members, [`MIN_TABLE_SIZE`]).
pub fn table_size_for(members: usize) -> usize {
    next_prime(members.saturating_mul(SLOTS_PER_MEMBER).max(MIN_TABLE_SIZE))
}

/// Trial division: table sizes are ≤ 2²⁴, so at most ~2000 divisions.
// `usize::is_multiple_of` needs Rust 1.87; the workspace's minimum is 1.75.
#[allow(unknown_lints, clippy::manual_is_multiple_of)]
pub fn is_prime(n: usize) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d <= n / d {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

fn next_prime(mut n: usize) -> usize {
    while !is_prime(n) {
        n += 1;
    }
    n
}

/// The weighted Maglev table: M slots, each naming a member index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// Member index per slot; empty when no member has weight > 0.
    slots: Box<[u16]>,
    /// Slots per member index (the operator's view).
    shares: Box<[u32]>,
    /// M, also when `slots` is empty.
    size: usize,
}

impl MaglevTable {
    /// Build with M = [`table_size_for`]`(members.len())`. Count every configured member,
    /// dead ones at weight 0, so that M stays put when members fail (see module docs).
    pub fn build(members: &[Member]) -> Result<MaglevTable, BuildError> {
        Self::with_size(members, table_size_for(members.len()))
    }

    /// Build with an explicit prime size M (pinned in the configuration so that adding
    /// members does not change M).
    pub fn with_size(members: &[Member], size: usize) -> Result<MaglevTable, BuildError> {
        if members.len() > MAX_MEMBERS {
            return Err(BuildError::TooManyMembers {
                members: members.len(),
            });
        }
        let min = members.len().max(2);
        if !(min..=MAX_TABLE_SIZE).contains(&size) {
            return Err(BuildError::SizeOutOfRange { size, min });
        }
        if !is_prime(size) {
            return Err(BuildError::SizeNotPrime(size));
        }
        let order = turn_order(members)?;
        let slots = populate(members, &order, size);
        let mut shares = vec![0u32; members.len()];
        for &m in slots.iter() {
            if let Some(s) = shares.get_mut(usize::from(m)) {
                *s += 1;
            }
        }
        Ok(MaglevTable {
            slots,
            shares: shares.into_boxed_slice(),
            size,
        })
    }

    /// The member index for a flow hash; `None` when no member has weight > 0. The slot is
    /// `⌊hash · M / 2⁶⁴⌋` (Lemire's multiply-shift range reduction: no division, and
    /// uniform because the flow hash is well mixed in its high bits).
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        let slot = (u128::from(hash) * self.slots.len() as u128) >> 64;
        self.slots.get(slot as usize).copied()
    }

    /// This table with the slots of the members for which `gone` is true handed to their
    /// owners in `fresh` (a table of the same size built without them), every other slot
    /// kept. Maglev's own rebuild also moves a few percent of the remaining members' slots
    /// (its cascade); a balancer without per-flow state would break those flows for
    /// nothing, so a member that *leaves* is taken out this way: only its flows move.
    /// `None` when the sizes differ or `fresh` has no member with weight.
    pub fn without(&self, fresh: &MaglevTable, gone: impl Fn(u16) -> bool) -> Option<MaglevTable> {
        if fresh.size != self.size || fresh.slots.len() != self.size || self.slots.len() != self.size {
            return None;
        }
        let slots: Box<[u16]> = self.slots.iter().zip(fresh.slots.iter()).map(|(&old, &new)| if gone(old) { new } else { old }).collect();
        let mut shares = vec![0u32; self.shares.len().max(fresh.shares.len())];
        for &m in slots.iter() {
            if let Some(s) = shares.get_mut(usize::from(m)) {
                *s += 1;
            }
        }
        Some(MaglevTable { slots, shares: shares.into_boxed_slice(), size: self.size })
    }

    /// M, the number of slots.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Slots held by each member, by index (sums to M unless no member has weight).
    pub fn shares(&self) -> &[u32] {
        &self.shares
    }

    /// The member index of each slot (empty when no member has weight).
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }
}

/// Indices of the members with weight > 0, in key order; rejects duplicate keys (also
/// among weight-0 members: a duplicate is a configuration error either way).
fn turn_order(members: &[Member]) -> Result<Vec<u16>, BuildError> {
    let mut by_key: Vec<u16> = (0..members.len() as u16).collect();
    by_key.sort_unstable_by_key(|&i| members[usize::from(i)].key);
    if let Some(w) = by_key
        .windows(2)
        .find(|w| members[usize::from(w[0])].key == members[usize::from(w[1])].key)
    {
        return Err(BuildError::DuplicateKey(members[usize::from(w[0])].key));
    }
    by_key.retain(|&i| members[usize::from(i)].weight > 0);
    Ok(by_key)
}

/// A member's walk through its preference list during population.
struct Cursor {
    member: u16,
    weight: u64,
    credit: u64,
    /// Next slot of the preference list.
    pos: usize,
    skip: usize,
}

impl Cursor {
    fn new(index: u16, m: &Member, size: usize) -> Cursor {
        let offset = fold_mul(m.key ^ 0x243f_6a88_85a3_08d3, 0x9e37_79b9_7f4a_7c15);
        let skip = fold_mul(m.key ^ 0x1319_8a2e_0370_7344, 0xc2b2_ae3d_27d4_eb4f);
        Cursor {
            member: index,
            weight: u64::from(m.weight),
            credit: 0,
            pos: (offset % size as u64) as usize,
            skip: (skip % (size as u64 - 1)) as usize + 1,
        }
    }

    /// Claim the first free slot of the preference list. Terminates because the list
    /// visits all M slots and the caller stops once they are all taken.
    fn claim(&mut self, slots: &mut [u16]) {
        let size = slots.len();
        while slots[self.pos] != FREE {
            self.advance(size);
        }
        slots[self.pos] = self.member;
        self.advance(size);
    }

    fn advance(&mut self, size: usize) {
        self.pos += self.skip;
        if self.pos >= size {
            self.pos -= size;
        }
    }
}

fn populate(members: &[Member], order: &[u16], size: usize) -> Box<[u16]> {
    let mut cursors: Vec<Cursor> = order
        .iter()
        .map(|&i| Cursor::new(i, &members[usize::from(i)], size))
        .collect();
    let Some(w_max) = cursors.iter().map(|c| c.weight).max() else {
        return Box::new([]);
    };
    let mut slots = vec![FREE; size];
    let mut filled = 0;
    // Each round the heaviest member takes a slot, so this ends after at most M rounds.
    loop {
        for c in cursors.iter_mut() {
            c.credit += c.weight;
            if c.credit < w_max {
                continue;
            }
            c.credit -= w_max;
            c.claim(&mut slots);
            filled += 1;
            if filled == size {
                return slots.into_boxed_slice();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::hash::tests::{key_from, splitmix};
    use super::super::hash::{FlowHasher, HashPolicy};
    use super::*;
    use proptest::prelude::*;

    const FLOWS: usize = 100_000;

    fn equal(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                key: member_key(format!("member-{i}").as_bytes()),
                weight: 1,
            })
            .collect()
    }

    /// 10⁵ pseudo-random client flows to one VIP, hashed as the lcore would (L34).
    fn flow_hashes() -> Vec<u64> {
        let hasher = FlowHasher::new(HashPolicy::L34, 0x7ab5_91ce);
        let mut r = 42;
        (0..FLOWS)
            .map(|_| {
                r = splitmix(r);
                hasher.hash_l34(&key_from(r))
            })
            .collect()
    }

    /// Flows per member index.
    fn flow_counts(t: &MaglevTable, n: usize, hashes: &[u64]) -> Vec<usize> {
        let mut c = vec![0; n];
        for &h in hashes {
            c[usize::from(t.lookup(h).unwrap())] += 1;
        }
        c
    }

    /// The member key each flow lands on (keys, not indices, survive list edits).
    fn owners(t: &MaglevTable, members: &[Member], hashes: &[u64]) -> Vec<Option<u64>> {
        hashes
            .iter()
            .map(|&h| t.lookup(h).map(|i| members[usize::from(i)].key))
            .collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(table_size_for(0), 251);
        assert_eq!(table_size_for(1), 251);
        assert_eq!(table_size_for(3), 307);
        assert_eq!(table_size_for(10), 1009);
        assert_eq!(table_size_for(100), 10007);
        let primes: Vec<usize> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537) && !is_prime(65535) && !is_prime(251 * 257));
    }

    #[test]
    fn build_errors() {
        let m = equal(3);
        assert_eq!(
            MaglevTable::with_size(&m, 1000),
            Err(BuildError::SizeNotPrime(1000))
        );
        assert_eq!(
            MaglevTable::with_size(&m, 2),
            Err(BuildError::SizeOutOfRange { size: 2, min: 3 })
        );
        assert!(MaglevTable::with_size(&m, 16_777_259).is_err()); // prime > 2^24
        assert_eq!(MaglevTable::with_size(&m, 7).unwrap().shares(), [3, 2, 2]);
        let dup = [
            m[0],
            m[1],
            Member {
                key: m[0].key,
                weight: 0,
            },
        ];
        assert_eq!(
            MaglevTable::build(&dup),
            Err(BuildError::DuplicateKey(m[0].key))
        );
        assert_eq!(
            MaglevTable::build(&equal(MAX_MEMBERS + 1)),
            Err(BuildError::TooManyMembers { members: 1025 })
        );
        assert!(BuildError::SizeNotPrime(4)
            .to_string()
            .contains("not prime"));
    }

    #[test]
    fn no_weight_no_member() {
        for members in [vec![], vec![Member { key: 1, weight: 0 }; 1]] {
            let t = MaglevTable::build(&members).unwrap();
            assert_eq!(t.size(), 251);
            assert!(t.slots().is_empty());
            assert_eq!(t.lookup(0), None);
            assert_eq!(t.lookup(u64::MAX), None);
            assert!(t.shares().iter().all(|&s| s == 0));
        }
    }

    #[test]
    fn equal_weights_are_even() {
        let hashes = flow_hashes();
        for n in [3, 5, 10] {
            let t = MaglevTable::build(&equal(n)).unwrap();
            // Round-robin turns: slot counts differ by at most one.
            let (lo, hi) = (t.shares().iter().min(), t.shares().iter().max());
            assert!(hi.unwrap() - lo.unwrap() <= 1, "n={n}: {:?}", t.shares());
            let ideal = FLOWS as f64 / n as f64;
            let mut worst: f64 = 0.0;
            for (i, &c) in flow_counts(&t, n, &hashes).iter().enumerate() {
                let dev = (c as f64 - ideal).abs() / ideal;
                assert!(
                    dev <= 0.05,
                    "n={n} member {i}: {c} flows, {:.1} %",
                    dev * 100.0
                );
                worst = worst.max(dev);
            }
            eprintln!(
                "even n={n}: slots {:?}, worst flow share off by {:.2} %",
                t.shares(),
                worst * 100.0
            );
        }
    }

    #[test]
    fn weights_give_proportional_shares() {
        let mut m = equal(3);
        for (x, w) in m.iter_mut().zip([1, 2, 3]) {
            x.weight = w;
        }
        let t = MaglevTable::build(&m).unwrap();
        let size = t.size() as f64;
        let counts = flow_counts(&t, 3, &flow_hashes());
        for (i, (&share, &count)) in t.shares().iter().zip(&counts).enumerate() {
            let want = (i + 1) as f64 / 6.0;
            let slots = f64::from(share) / size;
            let flows = count as f64 / FLOWS as f64;
            assert!((slots - want).abs() <= 2.0 / size, "slots {i}: {slots}");
            assert!((flows - want).abs() / want <= 0.10, "flows {i}: {flows}");
            eprintln!("weights 1:2:3: member {i} slots {slots:.4} flows {flows:.4} want {want:.4}");
        }
        // Only ratios matter: ×7 gives the same table.
        for x in m.iter_mut() {
            x.weight *= 7;
        }
        assert_eq!(MaglevTable::build(&m).unwrap(), t);
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut m = equal(7);
        m[2].weight = 3;
        let t = MaglevTable::build(&m).unwrap();
        let hashes = flow_hashes();
        let mut reversed = m.clone();
        reversed.reverse();
        let r = MaglevTable::build(&reversed).unwrap();
        assert_eq!(owners(&t, &m, &hashes), owners(&r, &reversed, &hashes));
    }

    /// Fraction of flows that change owner between two tables.
    fn moved(before: &[Option<u64>], after: &[Option<u64>], only: impl Fn(u64) -> bool) -> f64 {
        let pairs = before
            .iter()
            .zip(after)
            .filter(|(b, _)| b.is_some_and(&only));
        let (total, moved) = pairs.fold((0, 0), |(t, m), (b, a)| (t + 1, m + usize::from(b != a)));
        moved as f64 / total as f64
    }

    /// Removing one of N members (weight → 0, M unchanged) moves all of its flows and a
    /// little of everyone else's. Measured worst case over N ∈ {5, 10, 20} and every
    /// removed member: see the module docs of `balance`.
    #[test]
    fn removal_moves_little_else() {
        let hashes = flow_hashes();
        let mut worst: f64 = 0.0;
        for n in [5, 10, 20] {
            let m = equal(n);
            let t = MaglevTable::build(&m).unwrap();
            let before = owners(&t, &m, &hashes);
            for gone in 0..n {
                let mut down = m.clone();
                down[gone].weight = 0;
                let after_t = MaglevTable::build(&down).unwrap();
                let after = owners(&after_t, &down, &hashes);
                // Same table whether the dead member stays at weight 0 or is deleted with M
                // pinned: a weight-0 member plays no part.
                let mut deleted = m.clone();
                deleted.remove(gone);
                let del_t = MaglevTable::with_size(&deleted, t.size()).unwrap();
                assert_eq!(owners(&del_t, &deleted, &hashes), after);
                let key = m[gone].key;
                assert_eq!(moved(&before, &after, |k| k == key), 1.0);
                worst = worst.max(moved(&before, &after, |k| k != key));
            }
        }
        eprintln!(
            "remove 1 of N: worst {:.2} % of the others' flows moved",
            worst * 100.0
        );
        assert!(worst <= 0.04, "{worst}");
    }

    /// Adding a member with M pinned moves ≈ 1/(N+1) of the flows (those it takes) plus a
    /// small churn; without the pin, M changes and nearly everything moves.
    #[test]
    fn addition_moves_about_its_share() {
        let hashes = flow_hashes();
        let mut worst_churn: f64 = 0.0;
        for n in [4, 9, 19] {
            let grown = equal(n + 1);
            let m = &grown[..n];
            let size = table_size_for(n + 1);
            let before = owners(&MaglevTable::with_size(m, size).unwrap(), m, &hashes);
            let after = owners(
                &MaglevTable::with_size(&grown, size).unwrap(),
                &grown,
                &hashes,
            );
            let all = moved(&before, &after, |_| true);
            let share = 1.0 / (n + 1) as f64;
            let newcomer = grown[n].key;
            let taken = after.iter().filter(|&&k| k == Some(newcomer)).count() as f64;
            let taken = taken / FLOWS as f64;
            assert!((taken - share).abs() / share <= 0.05, "n={n}: took {taken}");
            assert!(all <= share + 0.04, "n={n}: {all} moved");
            worst_churn = worst_churn.max(all - taken);
            // Unpinned: M follows the member count, the permutations change with it and
            // nearly every flow moves.
            assert_ne!(table_size_for(n), size);
            let old = owners(&MaglevTable::build(m).unwrap(), m, &hashes);
            let new = owners(&MaglevTable::build(&grown).unwrap(), &grown, &hashes);
            let reshuffled = moved(&old, &new, |_| true);
            eprintln!(
                "add to {n}: pinned {:.2} % moved ({:.2} % taken), unpinned {:.1} %",
                all * 100.0,
                taken * 100.0,
                reshuffled * 100.0
            );
            assert!(reshuffled > 0.5, "n={n}: {reshuffled}");
        }
        eprintln!(
            "add 1: worst churn beyond the newcomer's share {:.2} %",
            worst_churn * 100.0
        );
    }

    fn members_strategy() -> impl Strategy<Value = Vec<Member>> {
        let weight = prop_oneof![Just(0u32), 1u32..10, 0u32..1000, any::<u32>()];
        proptest::collection::btree_map(any::<u64>(), weight, 0..40).prop_map(|m| {
            m.into_iter()
                .map(|(key, weight)| Member { key, weight })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn populated_deterministic_proportional(
            members in members_strategy(),
            probes in proptest::collection::vec(any::<u64>(), 64),
        ) {
            let t = MaglevTable::build(&members).unwrap();
            prop_assert_eq!(&MaglevTable::build(&members).unwrap(), &t);
            let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
            let n = members.len();
            if total == 0 {
                prop_assert!(t.slots().is_empty());
                for h in probes {
                    prop_assert_eq!(t.lookup(h), None);
                }
                return Ok(());
            }
            prop_assert_eq!(t.slots().len(), t.size());
            for &s in t.slots() {
                prop_assert!(usize::from(s) < n && members[usize::from(s)].weight > 0);
            }
            // Shares: ideal − 2 ≤ slots ≤ ideal + 2 + 2N·w/ΣW (the credit scheme's bound).
            let size = t.size() as f64;
            for (m, &s) in members.iter().zip(t.shares()) {
                let frac = f64::from(m.weight) / total as f64;
                let ideal = size * frac;
                let s = f64::from(s);
                prop_assert!(s >= ideal - 2.0 && s <= ideal + 2.0 + 2.0 * n as f64 * frac,
                    "weight {} got {} slots, ideal {}", m.weight, s, ideal);
            }
            for h in probes.into_iter().chain([0, u64::MAX]) {
                let i = t.lookup(h).unwrap();
                prop_assert!(members[usize::from(i)].weight > 0);
            }
        }
    }

    #[test]
    fn a_member_taken_out_with_without_moves_only_its_own_slots() {
        for n in [3usize, 5, 10] {
            let members = equal(n);
            let m = table_size_for(n * 10);
            let old = MaglevTable::with_size(&members, m).unwrap();
            for leave in 0..n {
                let mut rest = members.clone();
                rest[leave].weight = 0;
                let fresh = MaglevTable::with_size(&rest, m).unwrap();
                let cascade = old.slots().iter().zip(fresh.slots()).filter(|(a, b)| a != b && usize::from(**a) != leave).count();
                let patched = old.without(&fresh, |i| usize::from(i) == leave).unwrap();
                for (slot, (&was, &now)) in old.slots().iter().zip(patched.slots()).enumerate() {
                    if usize::from(was) == leave {
                        assert_ne!(usize::from(now), leave, "slot {slot} still names the member that left");
                        assert_eq!(now, fresh.slots()[slot], "its slots go where the fresh table puts them");
                    } else {
                        assert_eq!(now, was, "n={n}: slot {slot} of a remaining member moved");
                    }
                }
                assert_eq!(patched.shares()[leave], 0);
                assert_eq!(patched.shares().iter().sum::<u32>() as usize, m);
                // The spread stays close to even: each survivor gets ≈ 1/(n-1).
                let ideal = m as f64 / (n - 1) as f64;
                for (i, &sh) in patched.shares().iter().enumerate().filter(|(i, _)| *i != leave) {
                    assert!((f64::from(sh) - ideal).abs() / ideal < 0.05, "n={n} member {i}: {sh} slots vs {ideal:.0}");
                }
                if leave == 0 {
                    println!("n={n}: a plain rebuild would also move {cascade} of the others' slots ({:.2} %)", 100.0 * cascade as f64 / m as f64);
                }
            }
        }
        // Different sizes cannot be patched.
        let a = MaglevTable::with_size(&equal(3), 251).unwrap();
        let b = MaglevTable::with_size(&equal(3), 257).unwrap();
        assert!(a.without(&b, |_| false).is_none());
    }
}
