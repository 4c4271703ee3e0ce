//! The splice table of one lcore: every connection it splices, found by either leg's
//! tuple, with a fixed capacity and idle expiry.
//!
//! * Entries live in a slab allocated once at start-up ([`SpliceTable::new`]); a full
//!   table refuses new connections ([`SpliceTable::insert`] returns `None`, the role
//!   answers the client with a RST and counts it) and never disturbs existing ones.
//! * Each entry is reachable by two keys, the client leg's tuple (client, VIP) and the
//!   backend leg's (backend, NAT address), in one [`LegIndex`] sized for twice the
//!   capacity, so lookups and inserts never allocate; a lookup says which leg matched.
//! * The slots are aligned pairs of cache lines: the entry a lookup confirms is the line
//!   the rewrite then uses, and its byte counts are in the line next to it.
//! * Expiry is a clock hand: every [`SpliceTable::sweep`] looks at the next few slots and
//!   frees the entries whose timeout has passed. With `n` slots per sweep and a sweep
//!   every few microseconds, a table of a million entries is walked in well under a
//!   second, so an entry outlives its timeout by less than that.
//!
//! [`Entry`] is everything needed to forward a segment of the connection, in at most 64
//! bytes and `Copy`, so that replication (issue 6) can send exactly this.

use std::net::Ipv4Addr;

use super::index::LegIndex;
use crate::hugemem::{HugeSlice, Pages};
use super::translate::{Endpoint, Offsets};
use crate::role::PortIndex;

/// One side's tuple as it appears on the wire toward the appliance: the remote end's
/// address and port, and ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LegKey {
    pub remote: Ipv4Addr,
    pub local: Ipv4Addr,
    pub remote_port: u16,
    pub local_port: u16,
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// The client's handshake is done; its first request is awaited to choose the pool
    /// (no backend leg yet: only the client leg's key is in the table).
    Routing = 3,
    /// The client's handshake is done; the backend leg's SYN is out.
    Connecting = 0,
    /// Both legs are up: segments are spliced.
    Established = 1,
    /// A RST went through, or both sides finished: kept a little for stragglers.
    Closed = 2,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Routing => "routing",
            State::Connecting => "connecting",
            State::Established => "established",
            State::Closed => "closed",
        }
    }
}

/// Flag bits of [`Entry::flags`].
pub mod flag {
    /// Timestamps are on for the connection (both legs negotiated them).
    pub const TS: u8 = 0x01;
    /// The client sent its FIN.
    pub const FIN_CLIENT: u8 = 0x02;
    /// The backend sent its FIN.
    pub const FIN_SERVER: u8 = 0x04;
    /// Transparent mode: `nat` is the client's own address and port (no NAT port taken).
    pub const TRANSPARENT: u8 = 0x08;
}

/// A spliced connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub client: Endpoint,
    pub vip: Endpoint,
    pub backend: Endpoint,
    /// Our address and port on the backend leg (FullNAT), or the client's (transparent).
    pub nat: Endpoint,
    /// Δ = a0 − s0.
    pub delta: u32,
    /// A's timestamp clock minus S's; meaningful when `flags & flag::TS`.
    pub ts_delta: u32,
    /// The window shift the backend announced.
    pub ws_server: u8,
    /// The window shift promised to the client (0 when it offered no scaling).
    pub ws_promised: u8,
    pub flags: u8,
    pub state: State,
    /// Service index, the pool chosen for the connection and the backend's index in it.
    pub service: u16,
    pub pool: u16,
    pub member: u16,
    /// The client leg's next hop (the client, or its router) and port.
    pub client_mac: [u8; 6],
    pub client_if: u8,
    pub backend_if: u8,
    pub backend_mac: [u8; 6],
    /// Seconds on the lcore's clock when the last segment passed.
    pub last_seen: u32,
}

impl Entry {
    /// The translation numbers of the connection.
    pub fn offsets(&self) -> Offsets {
        Offsets {
            delta: self.delta,
            ts_delta: (self.flags & flag::TS != 0).then_some(self.ts_delta),
            ws_server: self.ws_server,
            ws_promised: self.ws_promised,
        }
    }

    pub fn client_key(&self) -> LegKey {
        LegKey { remote: self.client.addr, local: self.vip.addr, remote_port: self.client.port, local_port: self.vip.port }
    }

    pub fn backend_key(&self) -> LegKey {
        LegKey { remote: self.backend.addr, local: self.nat.addr, remote_port: self.backend.port, local_port: self.nat.port }
    }

    pub fn client_port(&self) -> PortIndex {
        PortIndex::from(self.client_if)
    }

    pub fn backend_port(&self) -> PortIndex {
        PortIndex::from(self.backend_if)
    }
}

/// Bytes each way, kept apart from the entry (not needed to forward, not replicated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub to_server: u64,
    pub to_client: u64,
    /// Seconds on the lcore's clock when the connection was set up.
    pub since: u32,
}

/// Which leg of a connection a tuple is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    /// The client's segments toward the VIP.
    Client,
    /// The backend's segments toward our NAT address.
    Backend,
}

/// An index value: the slot, and the backend leg in the top bit.
const BACKEND_LEG: u32 = 1 << 31;

/// The index value of `slot`'s `leg`.
fn value(slot: u32, leg: Leg) -> u32 {
    match leg {
        Leg::Client => slot,
        Leg::Backend => slot | BACKEND_LEG,
    }
}

/// A slot of the table: the entry in one cache line, its traffic in the next (an aligned
/// pair of lines, which the CPU's adjacent-line prefetch brings in together).
#[derive(Clone, Copy)]
#[repr(C, align(128))]
struct Slot {
    entry: Option<Entry>,
    traffic: Traffic,
}

const EMPTY: Slot = Slot { entry: None, traffic: Traffic { to_server: 0, to_client: 0, since: 0 } };

/// The table; see the module docs.
pub struct SpliceTable {
    /// On transparent huge pages (`hugemem`), like the index.
    slots: HugeSlice<Slot>,
    free: Vec<u32>,
    index: LegIndex,
    hand: usize,
}

impl SpliceTable {
    /// A table for `capacity` connections (at least 1, at most 2^31), allocated now, its
    /// index hashed with a random seed (std's `RandomState` keys: random per thread,
    /// never known outside the process).
    pub fn new(capacity: usize) -> SpliceTable {
        SpliceTable::with_seed(capacity, random_seed())
    }

    /// [`SpliceTable::new`] with a given index seed (tests).
    pub fn with_seed(capacity: usize, seed: u64) -> SpliceTable {
        SpliceTable::with_seed_on(capacity, seed, Pages::Huge)
    }

    /// [`SpliceTable::with_seed`] with its slots and index on the pages asked for
    /// (`role_cost` measures huge against small pages).
    pub fn with_seed_on(capacity: usize, seed: u64, pages: Pages) -> SpliceTable {
        let capacity = capacity.clamp(1, BACKEND_LEG as usize);
        SpliceTable {
            slots: HugeSlice::filled_on(EMPTY, capacity, pages),
            free: (0..capacity as u32).rev().collect(),
            index: LegIndex::new_on(2 * capacity, seed, pages),
            hand: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot and leg of the connection with this tuple: the one lookup per segment.
    #[inline(always)]
    pub fn find(&self, key: &LegKey) -> Option<(u32, Leg)> {
        // By value from here on: a key built field by field and read back as wider words
        // through memory stalls on store forwarding.
        let key = *key;
        let v = self.index.find(self.index.hash(key), |v| self.holds(v, &key))?;
        Some((v & !BACKEND_LEG, if v & BACKEND_LEG != 0 { Leg::Backend } else { Leg::Client }))
    }

    /// Asks the CPU for the index bucket where `key` would be (see [`LegIndex::prefetch`]).
    #[inline(always)]
    pub fn prefetch(&self, key: &LegKey) {
        self.index.prefetch(self.index.hash(*key));
    }

    /// Whether index value `v` is the connection whose `v`-leg tuple is `key`.
    #[inline(always)]
    fn holds(&self, v: u32, key: &LegKey) -> bool {
        match self.slots.get((v & !BACKEND_LEG) as usize) {
            Some(Slot { entry: Some(e), .. }) => *key == if v & BACKEND_LEG != 0 { e.backend_key() } else { e.client_key() },
            _ => false,
        }
    }

    fn has_key(&self, key: &LegKey) -> bool {
        self.find(key).is_some()
    }

    fn add_key(&mut self, key: &LegKey, value: u32) {
        let inserted = self.index.insert(self.index.hash(*key), value);
        // Sized for both legs of every slot: cannot fail.
        debug_assert!(inserted);
    }

    /// Removes `key` stored with `value` (exact: a key stored with another value, or not
    /// stored, is left alone).
    fn remove_key(&mut self, key: &LegKey, value: u32) {
        self.index.remove(self.index.hash(*key), value);
    }

    /// Adds `e`; its slot, or `None` when the table is full or either key is taken.
    pub fn insert(&mut self, e: Entry) -> Option<u32> {
        let (ck, bk) = (e.client_key(), e.backend_key());
        if ck == bk || self.has_key(&ck) || self.has_key(&bk) {
            return None;
        }
        let slot = self.free.pop()?;
        self.slots[slot as usize] = Slot { entry: Some(e), traffic: Traffic { since: e.last_seen, ..Traffic::default() } };
        self.add_key(&ck, value(slot, Leg::Client));
        self.add_key(&bk, value(slot, Leg::Backend));
        Some(slot)
    }

    #[inline]
    pub fn get(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize)?.entry.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> Option<(&mut Entry, &mut Traffic)> {
        let Slot { entry, traffic } = self.slots.get_mut(slot as usize)?;
        Some((entry.as_mut()?, traffic))
    }

    /// Adds `e` under its client leg's key only (its backend is not chosen yet); its slot,
    /// or `None` when the table is full or the key is taken.
    pub fn insert_client(&mut self, e: Entry) -> Option<u32> {
        let ck = e.client_key();
        if self.has_key(&ck) {
            return None;
        }
        let slot = self.free.pop()?;
        self.slots[slot as usize] = Slot { entry: Some(e), traffic: Traffic { since: e.last_seen, ..Traffic::default() } };
        self.add_key(&ck, value(slot, Leg::Client));
        Some(slot)
    }

    /// Gives the entry in `slot` a (new) backend leg: its old backend key, if it had one,
    /// is dropped and the new one added. False (nothing changed) when the new key belongs
    /// to another connection or the slot is empty.
    pub fn set_backend(&mut self, slot: u32, backend: Endpoint, nat: Endpoint) -> bool {
        let Some(e) = self.get(slot).copied() else {
            return false;
        };
        let new = LegKey { remote: backend.addr, local: nat.addr, remote_port: backend.port, local_port: nat.port };
        if new == e.client_key() || self.find(&new).is_some_and(|(s, _)| s != slot) {
            return false;
        }
        // Only its own backend key (one still routing has none).
        self.remove_key(&e.backend_key(), value(slot, Leg::Backend));
        if let Some(Slot { entry: Some(e), .. }) = self.slots.get_mut(slot as usize) {
            e.backend = backend;
            e.nat = nat;
        }
        self.add_key(&new, value(slot, Leg::Backend));
        true
    }

    /// Frees a slot; the entry it held.
    pub fn remove(&mut self, slot: u32) -> Option<Entry> {
        let e = self.get(slot).copied()?;
        // Only our own keys (an entry still routing has no backend key).
        self.remove_key(&e.client_key(), value(slot, Leg::Client));
        self.remove_key(&e.backend_key(), value(slot, Leg::Backend));
        self.slots[slot as usize] = EMPTY;
        self.free.push(slot);
        Some(e)
    }

    /// Looks at the next `n` slots and removes the entries `expired` says are done, calling
    /// `gone` with each (slot and entry) after it is removed.
    pub fn sweep(&mut self, n: usize, expired: impl Fn(&Entry) -> bool, mut gone: impl FnMut(u32, &Entry)) {
        for _ in 0..n.min(self.slots.len()) {
            let slot = self.hand as u32;
            self.hand = (self.hand + 1) % self.slots.len();
            if self.slots[slot as usize].entry.as_ref().is_some_and(&expired) {
                if let Some(e) = self.remove(slot) {
                    gone(slot, &e);
                }
            }
        }
    }

    /// Every live entry with its traffic (for the operator view; not on the fast path).
    pub fn iter(&self) -> impl Iterator<Item = (&Entry, &Traffic)> {
        self.slots.iter().filter_map(|s| s.entry.as_ref().map(|e| (e, &s.traffic)))
    }
}

/// 64 random bits for an index seed (the standard library's per-process hash keys, so no
/// further dependency).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7370_6c69_6365);
    h.finish()
}

/// FullNAT source ports of one lcore: a ring of free ports, so a released port is reused
/// last (the backend may still hold the old connection in TIME_WAIT).
pub struct NatPorts {
    free: std::collections::VecDeque<u16>,
}

impl NatPorts {
    /// Ports `first..=last`.
    pub fn new(first: u16, last: u16) -> NatPorts {
        NatPorts { free: (first..=last).collect() }
    }

    pub fn take(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    /// The first of the next `tries` free ports that `ok` accepts, taken out of the ring
    /// (the ports before it keep their places); `None` when none of them does.
    pub fn take_where(&mut self, tries: usize, ok: impl Fn(u16) -> bool) -> Option<u16> {
        let i = self.free.iter().take(tries).position(|&p| ok(p))?;
        self.free.remove(i)
    }

    pub fn give_back(&mut self, port: u16) {
        self.free.push_back(port);
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }
}

/// The FullNAT port range split between the worker lcores: contiguous, disjoint slices
/// (the last takes the remainder), so two lcores never pick the same source port toward a
/// backend, and the port of a backend's segment names the lcore that owns its splice
/// ([`NatSlices::owner`]): a lcore that receives another's segment hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatSlices {
    first: u16,
    last: u16,
    workers: u16,
}

impl NatSlices {
    /// `first..=last` over `workers` lcores; `None` when the range is empty or has fewer
    /// ports than there are lcores.
    pub fn new(first: u16, last: u16, workers: u16) -> Option<NatSlices> {
        let ports = u32::from(last).checked_sub(u32::from(first))? + 1;
        (workers >= 1 && ports >= u32::from(workers)).then_some(NatSlices { first, last, workers })
    }

    pub fn workers(&self) -> u16 {
        self.workers
    }

    /// Ports per slice (the last slice may have more).
    fn width(&self) -> u32 {
        (u32::from(self.last) - u32::from(self.first) + 1) / u32::from(self.workers)
    }

    /// Lcore `w`'s ports, `first..=last` (the last lcore's for `w` beyond it).
    pub fn slice(&self, w: u16) -> (u16, u16) {
        let w = w.min(self.workers - 1);
        let first = u32::from(self.first) + self.width() * u32::from(w);
        let last = if w + 1 == self.workers { u32::from(self.last) } else { first + self.width() - 1 };
        (first as u16, last as u16)
    }

    /// The lcore whose slice holds `port`; `None` outside the range.
    #[inline]
    pub fn owner(&self, port: u16) -> Option<u16> {
        if port < self.first || port > self.last {
            return None;
        }
        Some(((u32::from(port - self.first) / self.width()).min(u32::from(self.workers) - 1)) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: u8, port: u16) -> Endpoint {
        Endpoint { addr: Ipv4Addr::new(10, 0, 0, a), port }
    }

    fn entry(cport: u16, nport: u16) -> Entry {
        Entry {
            client: ep(1, cport),
            vip: ep(100, 80),
            backend: ep(20, 8080),
            nat: ep(2, nport),
            delta: 0,
            ts_delta: 0,
            ws_server: 7,
            ws_promised: 9,
            flags: 0,
            state: State::Established,
            service: 0,
            pool: 0,
            member: 0,
            client_mac: [2, 0, 0, 0, 0, 1],
            client_if: 0,
            backend_if: 1,
            backend_mac: [2, 0, 0, 0, 0, 2],
            last_seen: 0,
        }
    }

    #[test]
    fn an_entry_fits_a_cache_line() {
        assert!(std::mem::size_of::<Entry>() <= 64, "{} bytes", std::mem::size_of::<Entry>());
        assert!(std::mem::size_of::<Option<Entry>>() <= 64);
        assert_eq!(std::mem::size_of::<Slot>(), 128);
    }

    #[test]
    fn both_legs_find_the_entry_and_a_full_table_refuses() {
        let mut t = SpliceTable::new(2);
        let a = t.insert(entry(1000, 5000)).unwrap();
        let b = t.insert(entry(1001, 5001)).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.find(&entry(1000, 5000).client_key()), Some((a, Leg::Client)));
        assert_eq!(t.find(&entry(1000, 5000).backend_key()), Some((a, Leg::Backend)));
        assert_eq!(t.insert(entry(1002, 5002)), None, "full");
        assert_eq!(t.len(), 2);
        // A taken key is refused even with room.
        t.remove(b).unwrap();
        assert_eq!(t.insert(entry(1000, 5003)), None, "client leg taken");
        assert_eq!(t.insert(entry(1003, 5000)), None, "backend leg taken");
        let c = t.insert(entry(1002, 5002)).unwrap();
        assert_eq!(t.find(&entry(1001, 5001).client_key()), None, "removed keys are gone");
        assert_eq!(t.get(c).unwrap().client.port, 1002);
    }

    #[test]
    fn an_entry_gets_its_backend_leg_later_and_can_change_it() {
        let mut t = SpliceTable::new(4);
        let mut e = entry(1000, 0);
        e.backend = ep(0, 0);
        e.nat = ep(0, 0);
        let s = t.insert_client(e).unwrap();
        assert_eq!(t.insert_client(e), None, "client leg taken");
        assert_eq!(t.find(&entry(1000, 5000).backend_key()), None);
        assert!(t.set_backend(s, ep(20, 8080), ep(2, 5000)));
        assert_eq!(t.find(&entry(1000, 5000).backend_key()), Some((s, Leg::Backend)));
        // Moving to another backend drops the old key.
        assert!(t.set_backend(s, ep(21, 8080), ep(2, 5000)));
        assert_eq!(t.find(&entry(1000, 5000).backend_key()), None);
        // Another connection's backend key is refused.
        let other = t.insert(entry(1001, 5001)).unwrap();
        assert!(!t.set_backend(s, ep(20, 8080), ep(2, 5001)));
        assert_eq!(t.find(&entry(1001, 5001).backend_key()), Some((other, Leg::Backend)));
        t.remove(s).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.find(&entry(1001, 5001).backend_key()), Some((other, Leg::Backend)), "untouched");
    }

    #[test]
    fn the_sweep_walks_every_slot_and_removes_only_the_expired() {
        let mut t = SpliceTable::new(8);
        for i in 0..8 {
            let mut e = entry(1000 + i, 5000 + i);
            e.last_seen = u32::from(i);
            t.insert(e).unwrap();
        }
        let mut gone = Vec::new();
        for _ in 0..4 {
            t.sweep(2, |e| e.last_seen % 2 == 0, |_, e| gone.push(e.client.port));
        }
        gone.sort_unstable();
        assert_eq!(gone, vec![1000, 1002, 1004, 1006]);
        assert_eq!(t.len(), 4);
        assert!(t.iter().all(|(e, _)| e.last_seen % 2 == 1));
    }

    #[test]
    fn nat_ports_reuse_a_released_port_last() {
        let mut p = NatPorts::new(100, 102);
        let (a, b, c) = (p.take().unwrap(), p.take().unwrap(), p.take().unwrap());
        assert_eq!((a, b, c), (100, 101, 102));
        assert_eq!(p.take(), None);
        p.give_back(101);
        p.give_back(100);
        assert_eq!(p.take(), Some(101));
        assert_eq!(p.available(), 1);
        let mut p = NatPorts::new(100, 109);
        assert_eq!(p.take_where(4, |x| x % 3 == 0), Some(102));
        assert_eq!(p.take_where(2, |x| x == 105), None, "beyond the ports tried");
        assert_eq!((p.take(), p.take(), p.take()), (Some(100), Some(101), Some(103)), "the others keep their places");
    }

    #[test]
    fn nat_slices_are_disjoint_cover_the_range_and_name_their_owner() {
        for (first, last, workers) in [(20_000u16, 59_999u16, 1u16), (20_000, 59_999, 3), (100, 104, 5), (100, 110, 4), (0, u16::MAX, 7)] {
            let s = NatSlices::new(first, last, workers).unwrap();
            let mut next = u32::from(first);
            for w in 0..workers {
                let (a, b) = s.slice(w);
                assert_eq!(u32::from(a), next, "slices are contiguous");
                assert!(a <= b);
                for p in [a, b, a + (b - a) / 2] {
                    assert_eq!(s.owner(p), Some(w), "port {p} of {first}..={last} / {workers}");
                }
                next = u32::from(b) + 1;
            }
            assert_eq!(next, u32::from(last) + 1, "the slices cover the range");
            assert_eq!(s.owner(first.wrapping_sub(1)).filter(|_| first > 0), None);
        }
        assert_eq!(NatSlices::new(100, 102, 4), None, "fewer ports than lcores");
        assert_eq!(NatSlices::new(101, 100, 1), None, "empty range");
        assert_eq!(NatSlices::new(100, 200, 2).unwrap().owner(201), None);
    }
}
