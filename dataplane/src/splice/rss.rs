//! FullNAT source ports that a NIC's RSS brings back to the lcore that chose them.
//!
//! A backend's reply to `nat:port` lands on the RX queue that the NIC's receive-side
//! scaling picks: the Toeplitz hash of the reply's IPv4/TCP tuple under the port's RSS key,
//! looked up in its redirection table (RETA). The lcore that opens a backend leg chooses
//! the NAT port, the one part of that tuple that is free, so it takes one whose reply
//! hashes to a queue it polls itself: both legs of the connection then arrive where its
//! splice is, and nothing is handed between lcores (`Verdict::Handoff` remains the fallback
//! for ports whose RSS cannot be read, such as net_tap, and for the rare connection for
//! which no free port qualifies). Pure: the key and the RETA are read from the port by the
//! control side.

use std::net::Ipv4Addr;

/// The Toeplitz hash of the 12-byte IPv4 + TCP/UDP input (source address, destination
/// address, source port, destination port, as on the wire), table-driven: the hash is
/// linear in its input bits, so it is the XOR of one precomputed word per input byte.
#[derive(Clone)]
pub struct Toeplitz {
    /// `tables[i][b]`: the hash contribution of byte value `b` at input position `i`.
    tables: Box<[[u32; 256]; 12]>,
}

impl std::fmt::Debug for Toeplitz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Toeplitz { .. }")
    }
}

/// Key bytes an IPv4 4-tuple hash needs (12 input bytes + 4).
pub const MIN_KEY: usize = 16;

impl Toeplitz {
    /// The hash under `key` (at least [`MIN_KEY`] bytes; NICs use 40 or 52); `None` when
    /// the key is too short.
    pub fn new(key: &[u8]) -> Option<Toeplitz> {
        if key.len() < MIN_KEY {
            return None;
        }
        let mut tables = Box::new([[0u32; 256]; 12]);
        for (i, table) in tables.iter_mut().enumerate() {
            for (b, slot) in table.iter_mut().enumerate() {
                let mut input = [0u8; 12];
                input[i] = b as u8;
                *slot = toeplitz_bits(key, &input);
            }
        }
        Some(Toeplitz { tables })
    }

    /// The hash of `src:sport → dst:dport`.
    #[inline]
    pub fn hash_v4(&self, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> u32 {
        let mut input = [0u8; 12];
        input[0..4].copy_from_slice(&src.octets());
        input[4..8].copy_from_slice(&dst.octets());
        input[8..10].copy_from_slice(&sport.to_be_bytes());
        input[10..12].copy_from_slice(&dport.to_be_bytes());
        input.iter().zip(self.tables.iter()).fold(0, |h, (&b, t)| h ^ t[usize::from(b)])
    }
}

/// The Toeplitz hash bit by bit (the definition): for every set input bit `k`, XOR in the
/// 32 key bits starting at bit `k`.
fn toeplitz_bits(key: &[u8], input: &[u8]) -> u32 {
    let key_bit = |k: usize| key.get(k / 8).is_some_and(|b| b & (0x80 >> (k % 8)) != 0);
    let mut h = 0u32;
    for k in 0..input.len() * 8 {
        if input[k / 8] & (0x80 >> (k % 8)) != 0 {
            h ^= (0..32).fold(0u32, |w, j| w << 1 | u32::from(key_bit(k + j)));
        }
    }
    h
}

/// One lcore's view of a port's RSS: the hash, the redirection table, and which of the
/// port's RX queues this lcore polls.
#[derive(Clone, Debug)]
pub struct RssSteer {
    hash: Toeplitz,
    /// RX queue per RETA entry (the NIC indexes it with the hash's low bits: the size is a
    /// power of two).
    reta: Vec<u16>,
    /// Bit `q`: this lcore polls RX queue `q` (queues ≥ 64 are never this lcore's).
    mine: u64,
}

impl RssSteer {
    /// `None` without a usable key, with a RETA whose size is not a power of two (NICs
    /// index it with the hash's low bits), or when this lcore polls none of the queues.
    pub fn new(key: &[u8], reta: Vec<u16>, my_queues: &[u16]) -> Option<RssSteer> {
        RssSteer::with_hash(Toeplitz::new(key)?, reta, my_queues)
    }

    /// As [`RssSteer::new`] with the hash already built (one per port, cloned per lcore).
    pub fn with_hash(hash: Toeplitz, reta: Vec<u16>, my_queues: &[u16]) -> Option<RssSteer> {
        let mine = my_queues.iter().filter(|&&q| q < 64).fold(0u64, |m, &q| m | 1 << q);
        if !reta.len().is_power_of_two() || mine == 0 {
            return None;
        }
        Some(RssSteer { hash, reta, mine })
    }

    /// The RX queue the NIC gives `src:sport → dst:dport`.
    #[inline]
    pub fn queue_of(&self, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> u16 {
        let h = self.hash.hash_v4(src, dst, sport, dport);
        self.reta[h as usize & (self.reta.len() - 1)]
    }

    /// Whether a backend's reply (`backend → nat`) reaches a queue this lcore polls.
    #[inline]
    pub fn reply_is_mine(&self, backend: Ipv4Addr, backend_port: u16, nat: Ipv4Addr, nat_port: u16) -> bool {
        let q = self.queue_of(backend, nat, backend_port, nat_port);
        q < 64 && self.mine & (1 << q) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The key of Microsoft's RSS verification suite (also many NICs' default).
    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4,
        0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_verification_suites_ipv4_tcp_hashes() {
        // (source, source port, destination, destination port, hash with TCP ports).
        let cases = [
            ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x51cc_c178u32),
            ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xc626_b0ea),
            ("24.19.198.95", 12898, "12.22.207.184", 38024, 0x5c2b_394a),
            ("38.27.205.30", 48228, "209.142.163.6", 2217, 0xafc7_327f),
            ("153.39.163.191", 44251, "202.188.127.2", 1303, 0x10e8_28a2),
        ];
        let t = Toeplitz::new(&MS_KEY).unwrap();
        for (src, sport, dst, dport, want) in cases {
            assert_eq!(t.hash_v4(ip(src), ip(dst), sport, dport), want, "{src}:{sport} → {dst}:{dport}");
        }
        // The address-only hash of the first case, through the bitwise definition.
        let mut input = [0u8; 8];
        input[..4].copy_from_slice(&ip("66.9.149.187").octets());
        input[4..].copy_from_slice(&ip("161.142.100.80").octets());
        assert_eq!(toeplitz_bits(&MS_KEY, &input), 0x323e_8fc2);
        assert!(Toeplitz::new(&MS_KEY[..MIN_KEY - 1]).is_none());
    }

    proptest! {
        #[test]
        fn the_tables_equal_the_definition(key in proptest::collection::vec(any::<u8>(), 16..=52), a in any::<u32>(), b in any::<u32>(), sp in any::<u16>(), dp in any::<u16>()) {
            let t = Toeplitz::new(&key).unwrap();
            let mut input = [0u8; 12];
            input[0..4].copy_from_slice(&a.to_be_bytes());
            input[4..8].copy_from_slice(&b.to_be_bytes());
            input[8..10].copy_from_slice(&sp.to_be_bytes());
            input[10..12].copy_from_slice(&dp.to_be_bytes());
            prop_assert_eq!(t.hash_v4(Ipv4Addr::from(a), Ipv4Addr::from(b), sp, dp), toeplitz_bits(&key, &input));
        }
    }

    #[test]
    fn a_reply_is_mine_exactly_when_its_queue_is_one_i_poll() {
        // Four queues, RETA of 128 entries round-robin (DPDK's default), this lcore polls 1 and 3.
        let reta: Vec<u16> = (0..128).map(|i| i % 4).collect();
        let s = RssSteer::new(&MS_KEY, reta, &[1, 3]).unwrap();
        let (backend, nat) = (ip("10.1.0.21"), ip("10.1.0.2"));
        let mut mine = 0;
        for p in 20_000..24_000u16 {
            let q = s.queue_of(backend, nat, 8080, p);
            assert_eq!(s.reply_is_mine(backend, 8080, nat, p), q == 1 || q == 3);
            mine += usize::from(s.reply_is_mine(backend, 8080, nat, p));
        }
        // About half of the ports qualify.
        assert!((1700..2300).contains(&mine), "{mine} of 4000");
        assert!(RssSteer::new(&MS_KEY, vec![0, 1], &[]).is_none(), "polls no queue");
        assert!(RssSteer::new(&MS_KEY, Vec::new(), &[0]).is_none(), "no RETA");
        assert!(RssSteer::new(&MS_KEY, vec![0; 100], &[0]).is_none(), "a RETA the low bits cannot index");
    }
}
