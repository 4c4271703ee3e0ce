//! The connection index of a splice table: a leg's tuple → the slot of its connection,
//! both legs of every connection in one array, found with (nearly always) one cache line.
//!
//! * The array is a power of two of 64-byte buckets. A bucket holds seven cells, each a
//!   32-bit tag (the high half of the key's hash, never 0: 0 marks a free cell) and a
//!   32-bit value (the caller's: the table stores slot and leg).
//! * A key lives in its home bucket (the hash's low bits) or, when that is full, in the
//!   next bucket with room. Every bucket an insert passes counts it in `overflow`, so a
//!   lookup stops at the first bucket whose count is 0, and a removal walks the same path
//!   and undoes its counts exactly: no tombstones, no slow-down with churn (the scheme of
//!   Facebook's F14 tables).
//! * Keys are not stored. A lookup hands each candidate value whose tag matches to the
//!   caller, which confirms it against the entry the value names: the entry is read anyway
//!   to forward the segment, and a tag match on another key happens for about one lookup
//!   in 2^31 per occupied cell it looks at (the tag's low bit is always set).
//! * Sized for at most half of its cells in use, a home bucket overflows rarely; see the
//!   unit tests for the probe lengths at full load.
//!
//! The hash is a folded multiply of the tuple with a per-table random seed, so that a
//! remote host cannot choose tuples that pile into one bucket chain. Why not hashbrown:
//! its lookup (SipHash-free but generic: control-byte group, then the key array, then
//! the value) was a third of the splice fast path's cost (`docs/splice.md`, "Fast path").

use super::table::LegKey;
use crate::hugemem::{HugeSlice, Pages};

const CELLS: usize = 7;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u32; CELLS],
    /// Keys that passed this bucket on insert: their home is this bucket or one before
    /// it, and they live after it.
    overflow: u32,
    values: [u32; CELLS],
    _pad: u32,
}

impl Bucket {
    /// Bit i set when cell i holds `tag` (the overflow word never does: its bit is off).
    #[inline(always)]
    fn tag_matches(&self, tag: u32) -> u32 {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{__m128i, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_loadu_si128, _mm_movemask_ps, _mm_set1_epi32};
            // SAFETY: SSE2 is part of x86_64; the pointer is the whole bucket's (repr(C),
            // 64 bytes, `tags` first), so the two loads read its first 32 bytes: the seven
            // tags and `overflow`.
            unsafe {
                let want = _mm_set1_epi32(tag as i32);
                let p = (self as *const Bucket).cast::<__m128i>();
                let lo = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(_mm_loadu_si128(p), want))) as u32;
                let hi = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(_mm_loadu_si128(p.add(1)), want))) as u32;
                (lo | hi << 4) & 0x7f
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            (0..CELLS).fold(0, |m, i| m | u32::from(self.tags[i] == tag) << i)
        }
    }
}

/// See the module docs.
pub struct LegIndex {
    /// On transparent huge pages (`hugemem`): a cold lookup then misses no TLB entry.
    buckets: HugeSlice<Bucket>,
    mask: usize,
    seed: [u64; 3],
    len: usize,
}

impl LegIndex {
    /// An index with room for `keys` keys at no more than half load, hashed with `seed`.
    pub fn new(keys: usize, seed: u64) -> LegIndex {
        LegIndex::new_on(keys, seed, Pages::Huge)
    }

    /// As [`LegIndex::new`], its buckets on the pages asked for.
    pub fn new_on(keys: usize, seed: u64, pages: Pages) -> LegIndex {
        let buckets = (keys.max(1) * 2).div_ceil(CELLS).next_power_of_two();
        // Three words from one seed (splitmix64 steps), the multiplier words odd and with
        // high bits set so that no input makes a product trivially zero.
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let seed = [next(), next() | 1 << 63 | 1, next() | 1 << 63 | 1];
        LegIndex { buckets: HugeSlice::filled_on(Bucket::default(), buckets, pages), mask: buckets - 1, seed, len: 0 }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash of a leg's tuple (bucket from the low bits, tag from the high ones).
    #[inline(always)]
    pub fn hash(&self, k: LegKey) -> u64 {
        let addrs = u64::from(u32::from(k.remote)) << 32 | u64::from(u32::from(k.local));
        let ports = u64::from(k.remote_port) << 16 | u64::from(k.local_port);
        let h = folded_multiply(addrs ^ self.seed[0], ports ^ self.seed[1]);
        folded_multiply(h, self.seed[2])
    }

    /// Asks the CPU to bring the home bucket of `hash` into the cache (for a lookup a few
    /// frames later).
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let b = &self.buckets[hash as usize & self.mask] as *const Bucket as *const i8;
            // SAFETY: a prefetch hint of an address inside our own array; it reads nothing.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(b) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// The first value stored under `hash` that `is` confirms.
    #[inline(always)]
    pub fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag_of(hash);
        let mut b = hash as usize & self.mask;
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            // All seven tags at once, then only the (nearly always single) match: a loop
            // over the cells would mispredict its exit once per lookup.
            let mut matches = bucket.tag_matches(tag);
            while matches != 0 {
                let i = matches.trailing_zeros() as usize;
                matches &= matches - 1;
                if is(bucket.values[i]) {
                    return Some(bucket.values[i]);
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// Stores `value` under `hash`; false when every cell is taken (the caller sizes the
    /// index so that this cannot happen).
    pub fn insert(&mut self, hash: u64, value: u32) -> bool {
        if self.len == self.buckets.len() * CELLS {
            return false;
        }
        let tag = tag_of(hash);
        let mut b = hash as usize & self.mask;
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(i) = bucket.tags.iter().position(|&t| t == 0) {
                bucket.tags[i] = tag;
                bucket.values[i] = value;
                self.len += 1;
                return true;
            }
            bucket.overflow += 1;
            b = (b + 1) & self.mask;
        }
    }

    /// Removes `value` stored under `hash`; false when it is not there.
    pub fn remove(&mut self, hash: u64, value: u32) -> bool {
        let tag = tag_of(hash);
        let home = hash as usize & self.mask;
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let bucket = &mut self.buckets[b];
            if let Some(i) = (0..CELLS).find(|&i| bucket.tags[i] == tag && bucket.values[i] == value) {
                bucket.tags[i] = 0;
                self.len -= 1;
                // Undo the counts the insert left on the buckets it passed.
                let mut p = home;
                while p != b {
                    self.buckets[p].overflow -= 1;
                    p = (p + 1) & self.mask;
                }
                return true;
            }
            if bucket.overflow == 0 {
                return false;
            }
            b = (b + 1) & self.mask;
        }
        false
    }

    /// Buckets a lookup of `hash` reads before it can stop (1 when its home bucket never
    /// overflowed), for the tests' probe-length figures.
    #[cfg(test)]
    fn probe_length(&self, hash: u64) -> usize {
        let mut b = hash as usize & self.mask;
        let mut n = 1;
        while self.buckets[b].overflow != 0 && n < self.buckets.len() {
            b = (b + 1) & self.mask;
            n += 1;
        }
        n
    }
}

/// The tag of a hash: its high half, never 0 (0 marks a free cell).
#[inline(always)]
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

/// The 128-bit product of `a` and `b`, its halves xored: every input bit reaches the
/// middle bits of the result.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b);
    (m as u64) ^ ((m >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    fn key(i: u32) -> LegKey {
        LegKey { remote: Ipv4Addr::from(0x0a00_0000 | i >> 8), local: Ipv4Addr::new(10, 0, 0, 100), remote_port: 1024 + (i & 0xff) as u16 * 64, local_port: 80 }
    }

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }

    #[test]
    fn at_full_load_keys_are_found_and_probes_stay_short() {
        let n = 100_000;
        let mut ix = LegIndex::new(n, 42);
        for i in 0..n as u32 {
            assert!(ix.insert(ix.hash(key(i)), i));
        }
        assert_eq!(ix.len(), n);
        let (mut long, mut longest) = (0, 0);
        for i in 0..n as u32 {
            let h = ix.hash(key(i));
            assert_eq!(ix.find(h, |v| v == i), Some(i));
            let p = ix.probe_length(h);
            long += usize::from(p > 1);
            longest = longest.max(p);
        }
        // 7-cell buckets at most half full (here 44 %): by Poisson about 1 % of the
        // buckets overflow, and the keys whose lookup passes one are a few percent.
        assert!(long < n / 20, "{long} of {n} lookups read more than one bucket");
        // Runs of overflowing buckets stay short (5 with this seed).
        assert!(longest <= 8, "a lookup read {longest} buckets");
        // Keys never inserted are not found: no stored value's tag matches theirs (a
        // confirmation that accepts any stored value would take a false match).
        let stray = (n as u32..n as u32 + 10_000).filter(|&i| ix.find(ix.hash(key(i)), |v| v < n as u32).is_some()).count();
        assert_eq!(stray, 0, "tags matched keys never inserted");
    }

    #[test]
    fn similar_tuples_spread_over_the_buckets() {
        // Clients that differ only in their port (one host behind a NAT, say).
        let ix = LegIndex::new(1 << 16, 7);
        let mut per_bucket = vec![0u32; ix.buckets.len()];
        for port in 0..=u16::MAX {
            let k = LegKey { remote: Ipv4Addr::new(192, 0, 2, 1), local: Ipv4Addr::new(10, 0, 0, 100), remote_port: port, local_port: 443 };
            per_bucket[ix.hash(k) as usize & ix.mask] += 1;
        }
        let worst = *per_bucket.iter().max().unwrap();
        // 65536 keys over 32768 buckets: 2 on average; a poor hash would stack dozens.
        assert!(worst <= 12, "a bucket got {worst} of 65536 keys");
    }

    #[test]
    fn a_full_index_refuses_and_every_key_stays_reachable() {
        let mut ix = LegIndex::new(7, 1);
        let cells = ix.buckets.len() * CELLS;
        for i in 0..cells as u32 {
            assert!(ix.insert(ix.hash(key(i)), i));
        }
        assert!(!ix.insert(ix.hash(key(9999)), 9999));
        for i in 0..cells as u32 {
            assert_eq!(ix.find(ix.hash(key(i)), |v| v == i), Some(i));
        }
        for i in 0..cells as u32 {
            assert!(ix.remove(ix.hash(key(i)), i));
        }
        assert!(ix.is_empty());
        assert!(ix.buckets.iter().all(|b| b.overflow == 0 && b.tags == [0; CELLS]));
    }

    #[test]
    fn colliding_keys_are_told_apart_by_the_caller() {
        // Same hash, two values: find hands both candidates to the confirmation.
        let mut ix = LegIndex::new(16, 3);
        let h = ix.hash(key(1));
        assert!(ix.insert(h, 10));
        assert!(ix.insert(h, 11));
        assert_eq!(ix.find(h, |v| v == 11), Some(11));
        assert_eq!(ix.find(h, |v| v == 10), Some(10));
        assert!(ix.remove(h, 10));
        assert!(!ix.remove(h, 10));
        assert_eq!(ix.find(h, |v| v == 10), None);
        assert_eq!(ix.find(h, |v| v == 11), Some(11));
    }

    proptest! {
        /// Any sequence of inserts and removes, against a map: the same keys are found,
        /// and the overflow counts come back to zero when the index is emptied.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<bool>(), 0u32..300), 1..2000)) {
            // A small index with a deliberately poor spread (few buckets) so that chains
            // and wrap-around at the array's end are exercised.
            let mut ix = LegIndex::new(40, 5);
            let mut model: HashMap<u32, ()> = HashMap::new();
            for (add, k) in ops {
                let h = ix.hash(key(k)) & !(ix.mask as u64) | (k as u64 % 3).wrapping_sub(1) & ix.mask as u64;
                if add && !model.contains_key(&k) {
                    if model.len() < ix.buckets.len() * CELLS {
                        prop_assert!(ix.insert(h, k));
                        model.insert(k, ());
                    } else {
                        prop_assert!(!ix.insert(h, k));
                    }
                } else if !add {
                    prop_assert_eq!(ix.remove(h, k), model.remove(&k).is_some());
                }
                prop_assert_eq!(ix.len(), model.len());
            }
            for k in 0..300u32 {
                let h = ix.hash(key(k)) & !(ix.mask as u64) | (k as u64 % 3).wrapping_sub(1) & ix.mask as u64;
                prop_assert_eq!(ix.find(h, |v| v == k), model.contains_key(&k).then_some(k));
            }
            for k in model.keys().copied().collect::<Vec<_>>() {
                let h = ix.hash(key(k)) & !(ix.mask as u64) | (k as u64 % 3).wrapping_sub(1) & ix.mask as u64;
                prop_assert!(ix.remove(h, k));
            }
            prop_assert!(ix.buckets.iter().all(|b| b.overflow == 0 && b.tags == [0; CELLS]));
        }
    }
}
