//! SYN cookies: the appliance answers a client's SYN without keeping any state, and any
//! appliance of the rack holding the same secret validates the client's ACK
//! (DESIGN.md "Splice", step 1; layout in `docs/splice.md`).
//!
//! The ISN a0 that A puts in its SYN-ACK is
//!
//! ```text
//!  31                        8  7   6    4 3      1 0
//! +---------------------------+----+------+--------+----+
//! |  MAC (24 bits)            |slot| mss  | wscale |sack|
//! +---------------------------+----+------+--------+----+
//! ```
//!
//! `MAC` is the top of SipHash-2-4, keyed with the rack's cookie secret, over the client
//! and VIP addresses and ports, the client's ISN c0, the full time-slot number, the
//! eight low bits and the layout's version. A `slot` is 64 s; a cookie is good in the slot it was made and the next
//! one (64–128 s), so one bit of the slot number (its parity) tells which of the two to
//! check the MAC against; a secret that was replaced is still accepted for the slots the
//! operator configured, so a rotation does not break handshakes in flight. The option
//! bits carry what the client offered and the backend leg must repeat (A keeps nothing):
//! its MSS (rounded down to one of eight table values: the common Ethernet, PPPoE, tunnel
//! and VPN sizes, and 8960 for 9000-byte jumbo frames), its window shift (rounded down;
//! "none" included) and SACK-permitted. A forged ACK passes with probability 2⁻²⁴ per try
//! and key tried (2⁻²³ while a replaced secret is still accepted).

use siphasher::sip::SipHasher24;
use std::hash::Hasher;
use std::net::Ipv4Addr;

/// The cookie layout's version, hashed into every MAC: an appliance of another layout
/// (the one before had two slot bits and two MSS bits) finds the MAC wrong and drops the
/// ACK as a bad cookie, instead of reading its option bits with the wrong boundaries.
const LAYOUT: u8 = 2;

/// Seconds per time slot.
pub const SLOT_SECONDS: u64 = 64;
/// MSS values a cookie can carry (the client's MSS is rounded down to one of them):
/// RFC 1122's default, IPv6's minimum MTU, Linux's cookie value for odd paths, VPN and
/// tunnel paths (1360; IPv6-in-IPv4 and other 20-byte encapsulations: 1440), PPPoE
/// (1452), Ethernet (1460) and 9000-byte jumbo frames (8960). What a backend is offered is
/// further capped by `[splice] mss`.
pub const MSS_TABLE: [u16; 8] = [536, 1220, 1300, 1360, 1440, 1452, 1460, 8960];
/// Window shifts a cookie can carry; index 0 = the client offered no window scaling.
pub const WSCALE_TABLE: [Option<u8>; 8] = [None, Some(0), Some(4), Some(6), Some(7), Some(8), Some(9), Some(10)];

/// The client's and the VIP's address and port, as in the client's SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub vip: Ipv4Addr,
    pub vip_port: u16,
}

/// The options of a client's SYN that the backend leg repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: u16,
    /// The client's window shift; `None` when it offered no window scaling.
    pub wscale: Option<u8>,
    pub sack: bool,
}

/// A 128-bit SipHash key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(pub [u8; 16]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// The secret in use and, during a rotation, the one it replaced.
#[derive(Clone, Copy, Debug)]
pub struct CookieKeys {
    pub current: Key,
    /// The replaced secret and the last slot in which it is still accepted.
    pub previous: Option<(Key, u64)>,
}

/// The time slot of `unix_seconds`.
pub fn slot_of(unix_seconds: u64) -> u64 {
    unix_seconds / SLOT_SECONDS
}

/// The options a cookie can carry for what the client offered: MSS and window shift
/// rounded down to table values (a smaller MSS or shift is always safe; an MSS below the
/// table's smallest is carried as that, the RFC 1122 default every host accepts).
pub fn representable(offered: SynOptions) -> SynOptions {
    let mss = MSS_TABLE.iter().rev().copied().find(|&m| m <= offered.mss).unwrap_or(MSS_TABLE[0]);
    let wscale = offered.wscale.map(|w| WSCALE_TABLE.iter().rev().filter_map(|&t| t).find(|&t| t <= w.min(14)).unwrap_or(0));
    SynOptions { mss, wscale, sack: offered.sack }
}

fn option_bits(o: SynOptions) -> u32 {
    let o = representable(o);
    let mss = MSS_TABLE.iter().position(|&m| m == o.mss).unwrap_or(0) as u32;
    let ws = WSCALE_TABLE.iter().position(|&w| w == o.wscale).unwrap_or(0) as u32;
    (mss << 4) | (ws << 1) | u32::from(o.sack)
}

fn mac(key: &Key, t: &Tuple, c0: u32, slot: u64, low8: u32) -> u32 {
    mac_with(key, t, c0, slot, &[low8 as u8, LAYOUT])
}

/// The MAC over the connection, the slot and `tail` (this layout: the low bits and the
/// layout's version; the layout before had the low bits only).
fn mac_with(key: &Key, t: &Tuple, c0: u32, slot: u64, tail: &[u8]) -> u32 {
    let (k0, k1) = key.0.split_at(8);
    let mut h = SipHasher24::new_with_keys(u64::from_le_bytes(k0.try_into().expect("8 bytes")), u64::from_le_bytes(k1.try_into().expect("8 bytes")));
    h.write(&t.client.octets());
    h.write(&t.vip.octets());
    h.write(&t.client_port.to_be_bytes());
    h.write(&t.vip_port.to_be_bytes());
    h.write(&c0.to_be_bytes());
    h.write(&slot.to_be_bytes());
    h.write(tail);
    (h.finish() >> 40) as u32
}

/// The ISN for a SYN from `t` with ISN `c0` and options `offered`, at `slot`; and the
/// options as the cookie carries them (what the appliance must act on).
pub fn make(keys: &CookieKeys, t: &Tuple, c0: u32, offered: SynOptions, slot: u64) -> (u32, SynOptions) {
    let low8 = (((slot % 2) as u32) << 7) | option_bits(offered);
    let isn = (mac(&keys.current, t, c0, slot, low8) << 8) | low8;
    (isn, representable(offered))
}

/// Validates the ISN `isn` (the client's ACK number minus one) of a connection from `t`
/// whose ISN was `c0` (the ACK's sequence number minus one) at `now_slot`; the options
/// the cookie carries, or `None` for a forged, altered or expired cookie.
pub fn check(keys: &CookieKeys, t: &Tuple, c0: u32, isn: u32, now_slot: u64) -> Option<SynOptions> {
    let low8 = isn & 0xff;
    let parity = u64::from(low8 >> 7);
    // The slot the cookie was made in: now or the one before, whichever has its parity
    // (the MAC covers the full slot number, so an older cookie fails there).
    let made = if now_slot % 2 == parity { now_slot } else { now_slot.checked_sub(1)? };
    let mut keys_to_try = std::iter::once(keys.current).chain(keys.previous.filter(|&(_, until)| now_slot <= until).map(|(k, _)| k));
    let want = isn >> 8;
    let good = keys_to_try.any(|k| mac(&k, t, c0, made, low8) == want);
    if !good {
        return None;
    }
    let mss = MSS_TABLE[((low8 >> 4) & 0x7) as usize];
    let wscale = WSCALE_TABLE[((low8 >> 1) & 0x7) as usize];
    Some(SynOptions { mss, wscale, sack: low8 & 1 == 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K1: Key = Key(*b"rack-secret-one!");
    const K2: Key = Key(*b"rack-secret-two!");

    fn keys() -> CookieKeys {
        CookieKeys { current: K1, previous: None }
    }

    fn tuple(a: u8, p: u16) -> Tuple {
        Tuple { client: Ipv4Addr::new(198, 51, 100, a), client_port: p, vip: Ipv4Addr::new(192, 0, 2, 10), vip_port: 443 }
    }

    const LINUX: SynOptions = SynOptions { mss: 1460, wscale: Some(7), sack: true };

    #[test]
    fn options_round_down_to_what_a_cookie_carries() {
        assert_eq!(representable(LINUX), LINUX);
        assert_eq!(representable(SynOptions { mss: 1400, wscale: Some(5), sack: false }), SynOptions { mss: 1360, wscale: Some(4), sack: false });
        assert_eq!(representable(SynOptions { mss: 1452, wscale: None, sack: false }).mss, 1452, "PPPoE");
        assert_eq!(representable(SynOptions { mss: 1459, wscale: None, sack: false }).mss, 1452);
        assert_eq!(representable(SynOptions { mss: 8960, wscale: None, sack: false }).mss, 8960, "jumbo frames");
        assert_eq!(representable(SynOptions { mss: 8959, wscale: None, sack: false }).mss, 1460);
        assert_eq!(representable(SynOptions { mss: 9000, wscale: Some(14), sack: true }), SynOptions { mss: 8960, wscale: Some(10), sack: true });
        assert_eq!(representable(SynOptions { mss: 100, wscale: None, sack: false }).mss, 536);
        assert_eq!(representable(SynOptions { mss: 536, wscale: Some(3), sack: false }).wscale, Some(0));
    }

    #[test]
    fn a_cookie_is_good_for_its_slot_and_the_next_only() {
        let t = tuple(7, 40000);
        let (isn, carried) = make(&keys(), &t, 12345, LINUX, 1000);
        assert_eq!(carried, LINUX);
        assert_eq!(check(&keys(), &t, 12345, isn, 1000), Some(LINUX));
        assert_eq!(check(&keys(), &t, 12345, isn, 1001), Some(LINUX));
        assert_eq!(check(&keys(), &t, 12345, isn, 1002), None, "expired");
        assert_eq!(check(&keys(), &t, 12345, isn, 999), None, "from the future");
        assert_eq!(check(&keys(), &t, 12345, isn, 1004), None, "same slot parity, four slots later");
        assert_eq!(check(&keys(), &t, 12345, isn, 1003), None, "the other parity, three slots later");
    }

    #[test]
    fn a_rotated_secret_is_accepted_until_its_deadline() {
        let t = tuple(9, 50000);
        let old = CookieKeys { current: K1, previous: None };
        let (isn, _) = make(&old, &t, 1, LINUX, 20);
        let rotated = CookieKeys { current: K2, previous: Some((K1, 20)) };
        assert_eq!(check(&rotated, &t, 1, isn, 20), Some(LINUX));
        let later = CookieKeys { current: K2, previous: Some((K1, 20)) };
        assert_eq!(check(&later, &t, 1, isn, 21), None, "the old secret's time is over");
        assert_eq!(check(&CookieKeys { current: K2, previous: None }, &t, 1, isn, 20), None);
        // Cookies made with the new secret are good at once.
        let (isn2, _) = make(&rotated, &t, 1, LINUX, 20);
        assert_eq!(check(&rotated, &t, 1, isn2, 21), Some(LINUX));
    }

    /// A cookie of the layout before this one (two slot bits, two MSS bits, no version in
    /// the MAC), as an appliance not yet upgraded makes it: refused, in every slot phase,
    /// rather than read with this layout's field boundaries.
    #[test]
    fn a_cookie_of_the_previous_layout_is_refused() {
        let t = tuple(3, 33333);
        for slot in 1000..1004u64 {
            for mss2 in 0..4u32 {
                // Slot mod 4 in bits 7-6, the MSS index in bits 5-4, shift 7, SACK.
                let low8 = ((slot % 4) as u32) << 6 | mss2 << 4 | 4 << 1 | 1;
                let isn = mac_with(&K1, &t, 777, slot, &[low8 as u8]) << 8 | low8;
                assert_eq!(check(&keys(), &t, 777, isn, slot), None, "slot {slot}, MSS index {mss2}");
                assert_eq!(check(&keys(), &t, 777, isn, slot + 1), None, "slot {slot} + 1, MSS index {mss2}");
            }
        }
    }

    #[test]
    fn slot_zero_has_no_previous_slot() {
        let t = tuple(1, 1);
        let (isn, _) = make(&keys(), &t, 5, LINUX, 0);
        assert_eq!(check(&keys(), &t, 5, isn, 0), Some(LINUX));
        assert_eq!(check(&keys(), &t, 5, isn, 1), Some(LINUX));
    }

    proptest! {
        /// Any SYN's cookie validates with its options; another client ISN, another tuple
        /// or a flipped ISN bit does not (a chance match is 2^-24: a seeded run sees none).
        #[test]
        fn cookies_validate_only_what_they_were_made_for(
            a in any::<u8>(), p in any::<u16>(), c0 in any::<u32>(), slot in 1u64..1_000_000,
            mss in 0u16..10000, ws in proptest::option::of(0u8..15), sack in any::<bool>(),
            bit in 0u32..32, other in any::<u32>(), later in 0u64..2,
        ) {
            let t = tuple(a, p);
            let offered = SynOptions { mss, wscale: ws, sack };
            let (isn, carried) = make(&keys(), &t, c0, offered, slot);
            prop_assert_eq!(carried, representable(offered));
            prop_assert!(carried.mss <= mss.max(536));
            prop_assert_eq!(check(&keys(), &t, c0, isn, slot + later), Some(carried));
            prop_assert_eq!(check(&keys(), &t, c0, isn ^ (1 << bit), slot + later), None);
            if other != c0 {
                prop_assert_eq!(check(&keys(), &t, other, isn, slot), None);
            }
            let moved = Tuple { client_port: p.wrapping_add(1), ..t };
            prop_assert_eq!(check(&keys(), &moved, c0, isn, slot), None);
            prop_assert_eq!(check(&CookieKeys { current: K2, previous: None }, &t, c0, isn, slot), None);
        }
    }
}
