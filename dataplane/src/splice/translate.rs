//! The rewrite of one segment of a spliced connection (DESIGN.md "Splice", step 4).
//!
//! The appliance A answered the client C's handshake with ISN a0 and opened the backend
//! leg to S with C's own ISN, so only the server's sequence space moves: with s0 the ISN S
//! chose, Δ = a0 − s0. Toward S acknowledgement numbers and SACK edges lose Δ (both are
//! in the space of the data S sent, which C sees shifted); toward C sequence numbers gain
//! Δ, while acknowledgement numbers and SACK edges stay as they are (they cover C's own
//! bytes, numbered alike on both legs). Windows are rescaled from the sender's
//! advertised shift to the one its peer expects (rounded down, see [`rescale`]);
//! timestamps move by the offset between A's clock and S's. Addresses and ports are
//! rewritten for FullNAT or transparent mode. Every change updates the IPv4 and TCP
//! checksums incrementally (RFC 1624, over the 16-bit words the changed bytes fall in,
//! whatever their alignment, summed as words in the frame's byte order and folded once per
//! segment; an option field at an odd offset is folded on its own), so the cost does not grow with
//! the payload.

use crate::packet::checksum;
use crate::stats::DropReason;
use std::net::Ipv4Addr;

/// Which way a segment travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the backend.
    ToServer,
    /// From the backend to the client.
    ToClient,
}

/// An address and port as they must appear on the wire after the rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// The numbers that relate the two legs of a splice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// Δ = a0 − s0 (mod 2³²).
    pub delta: u32,
    /// A's timestamp clock minus S's at the handshake; `None` when timestamps were not
    /// negotiated (then no segment carries them).
    pub ts_delta: Option<u32>,
    /// The window shift S advertised to A (S's windows arrive in it).
    pub ws_server: u8,
    /// The window shift A promised C (C reads S's windows in it).
    pub ws_promised: u8,
}

/// Rewrites the TCP segment in `ip` (an IPv4 packet, options allowed, possibly followed
/// by link padding beyond its total length) for `dir`: source and destination become
/// `src` and `dst`, and the sequence space, windows, SACK blocks and timestamps are
/// translated by `o`. Both checksums stay valid if they were.
#[inline]
pub fn rewrite(ip: &mut [u8], dir: Direction, src: Endpoint, dst: Endpoint, o: &Offsets) -> Result<(), DropReason> {
    let ihl = usize::from(*ip.first().ok_or(DropReason::MalformedIpv4)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2).ok_or(DropReason::MalformedIpv4)?, *ip.get(3).ok_or(DropReason::MalformedIpv4)?]));
    if ihl < 20 || total < ihl + 20 || total > ip.len() {
        return Err(DropReason::MalformedIpv4);
    }
    let (hdr, rest) = ip.split_at_mut(ihl);
    let tcp = &mut rest[..total - ihl];
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || doff > tcp.len() {
        return Err(DropReason::MalformedTcp);
    }

    // Addresses: in the IPv4 header and in the TCP pseudo-header. Both sums are kept in
    // the frame's byte order (see `Native`), so the fields are read and written as words.
    let addrs = Native::change(rd32(hdr, 12), u32::from_ne_bytes(src.addr.octets())) + Native::change(rd32(hdr, 16), u32::from_ne_bytes(dst.addr.octets()));
    hdr[12..16].copy_from_slice(&src.addr.octets());
    hdr[16..20].copy_from_slice(&dst.addr.octets());
    let ip_sum = Native::of(rd16(hdr, 10)) + addrs;
    hdr[10..12].copy_from_slice(&ip_sum.finish().to_ne_bytes());

    let (sp, dp) = (src.port.to_be_bytes(), dst.port.to_be_bytes());
    let ports = u32::from_ne_bytes([sp[0], sp[1], dp[0], dp[1]]);
    let mut sum = Native::of(rd16(tcp, 16)) + addrs + Native::change(rd32(tcp, 0), ports);
    wr32(tcp, 0, ports);
    match dir {
        Direction::ToServer => sum = sum + set_be32(tcp, 8, |ack| ack.wrapping_sub(o.delta)),
        Direction::ToClient => {
            sum = sum + set_be32(tcp, 4, |seq| seq.wrapping_add(o.delta));
            // SYN segments carry unscaled windows; the handshake is A's, never relayed.
            let old = rd16(tcp, 14);
            let win = rescale(u16::from_be(old), o.ws_server, o.ws_promised).to_be();
            sum = sum + Native::change16(old, win);
            tcp[14..16].copy_from_slice(&win.to_ne_bytes());
        }
    }

    // Options: SACK edges and timestamps.
    let mut at = 20;
    while at < doff {
        let kind = tcp[at];
        match kind {
            0 => break,
            1 => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = tcp.get(at + 1) else { break };
        let len = usize::from(len);
        if len < 2 || at + len > doff {
            break;
        }
        match (kind, len) {
            // SACK edges live in the acknowledgement number's space: moved toward S only.
            (5, l) if (l - 2) % 8 == 0 && dir == Direction::ToServer => {
                for edge in (at + 2..at + l).step_by(4) {
                    sum = sum + set_be32(tcp, edge, |v| v.wrapping_sub(o.delta));
                }
            }
            (8, 10) => {
                if let Some(d) = o.ts_delta {
                    sum = sum + match dir {
                        // C echoes A's clock: S expects its own.
                        Direction::ToServer => set_be32(tcp, at + 6, |ecr| ecr.wrapping_sub(d)),
                        // S's clock shown to C as A's.
                        Direction::ToClient => set_be32(tcp, at + 2, |val| val.wrapping_add(d)),
                    };
                }
            }
            _ => {}
        }
        at += len;
    }
    tcp[16..18].copy_from_slice(&sum.finish().to_ne_bytes());
    Ok(())
}

/// A window of `win` units of 2^`from` bytes, in units of 2^`to` bytes, rounded **down**
/// and capped at the field's maximum: the client never sees more room than the backend
/// offered. (Rounding up, to keep the right edge from ever moving left, let the client
/// send up to 2^`to` − 1 bytes past the backend's real window; the backend dropped them,
/// and under load each such overshoot waited for a retransmission timeout. A right edge
/// that moves left by less than one unit is a shrink every sender copes with.)
pub fn rescale(win: u16, from: u8, to: u8) -> u16 {
    let bytes = u64::from(win) << from.min(14);
    let unit = 1u64 << to.min(14);
    u16::try_from(bytes / unit).unwrap_or(u16::MAX)
}

/// The 4 bytes at `at` as a word in memory order.
#[inline(always)]
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The 2 bytes at `at` as a word in memory order.
#[inline(always)]
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// Replaces the big-endian number at `at` (at any offset into the segment) by `f` of it;
/// what the change adds to the checksum.
#[inline(always)]
fn set_be32(tcp: &mut [u8], at: usize, f: impl FnOnce(u32) -> u32) -> Native {
    let old = rd32(tcp, at);
    let new = f(u32::from_be(old)).to_be();
    wr32(tcp, at, new);
    let c = Native::change(old, new);
    // The checksum's words start at even offsets: a field at an odd one has its bytes in
    // the other halves of those words, i.e. byte-swapped (RFC 1071, byte order
    // independence), which is the same as swapping the halves of the folded sum.
    if at % 2 == 1 {
        Native(u64::from(c.fold().swap_bytes()))
    } else {
        c
    }
}

/// A one's-complement sum over the bytes as they lie in memory (RFC 1071 §2(B): the sum
/// does not depend on byte order, so words read natively give the checksum as it is
/// stored, with no swaps), unfolded: RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), with the
/// `~m + m'` of every changed field added up and folded once at the end.
#[derive(Clone, Copy)]
struct Native(u64);

impl std::ops::Add for Native {
    type Output = Native;
    #[inline(always)]
    fn add(self, o: Native) -> Native {
        Native(self.0 + o.0)
    }
}

impl Native {
    /// Starts from the checksum field HC as stored. The 0xffff added (≡ 0 in one's
    /// complement) keeps the sum above 0 whatever the frame holds, so it folds to
    /// 1..=0xffff and [`finish`](Self::finish) never yields the 0xffff that no full
    /// computation produces.
    #[inline(always)]
    fn of(stored: u16) -> Native {
        Native(u64::from(!stored) + 0xffff)
    }

    /// A 32-bit field changes from `old` to `new`: ~m + m', two words each (a 32-bit
    /// word folds to the sum of its halves). For a field at an even offset; `set_be32`
    /// swaps the folded change of one at an odd offset.
    #[inline(always)]
    fn change(old: u32, new: u32) -> Native {
        Native(u64::from(!old) + u64::from(new))
    }

    #[inline(always)]
    fn change16(old: u16, new: u16) -> Native {
        Native(u64::from(!old) + u64::from(new))
    }

    #[inline(always)]
    fn fold(self) -> u16 {
        checksum::fold(self.0)
    }

    /// HC' as stored.
    #[inline(always)]
    fn finish(self) -> u16 {
        !self.fold()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{ip_proto, Ipv4, Tcp, TcpOption};
    use proptest::prelude::*;

    /// A TCP segment with the given options (padded with NOPs before them, `lead` of them,
    /// to try every alignment) and payload, checksums valid.
    fn segment(seq: u32, ack: u32, win: u16, lead: usize, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut o = vec![1u8; lead];
        o.extend_from_slice(opts);
        while o.len() % 4 != 0 {
            o.push(0);
        }
        let doff = 20 + o.len();
        let total = 20 + doff + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, ip_proto::TCP, 0, 0, 198, 51, 100, 7, 192, 0, 2, 10];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&80u16.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ack.to_be_bytes());
        p.push(((doff / 4) as u8) << 4);
        p.push(0x10);
        p.extend_from_slice(&win.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&o);
        p.extend_from_slice(payload);
        fill(&mut p);
        p
    }

    /// Both checksums computed from scratch.
    fn fill(p: &mut [u8]) {
        Ipv4::new_unchecked(&mut p[..]).fill_checksum();
        p[36] = 0;
        p[37] = 0;
        let c = full_tcp(p);
        p[36..38].copy_from_slice(&c.to_be_bytes());
    }

    fn full_tcp(p: &[u8]) -> u16 {
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let mut c = p.to_vec();
        c[36] = 0;
        c[37] = 0;
        checksum::l4_checksum_v4(src, dst, ip_proto::TCP, &c[20..])
    }

    fn sack(blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut o = vec![5, (2 + 8 * blocks.len()) as u8];
        for (l, r) in blocks {
            o.extend_from_slice(&l.to_be_bytes());
            o.extend_from_slice(&r.to_be_bytes());
        }
        o
    }

    fn ts(val: u32, ecr: u32) -> Vec<u8> {
        let mut o = vec![8, 10];
        o.extend_from_slice(&val.to_be_bytes());
        o.extend_from_slice(&ecr.to_be_bytes());
        o
    }

    const NAT: Endpoint = Endpoint { addr: Ipv4Addr::new(10, 2, 0, 1), port: 61000 };
    const SERVER: Endpoint = Endpoint { addr: Ipv4Addr::new(10, 2, 0, 21), port: 8080 };
    const CLIENT_VIEW: Endpoint = Endpoint { addr: Ipv4Addr::new(10, 0, 0, 100), port: 80 };
    const CLIENT: Endpoint = Endpoint { addr: Ipv4Addr::new(10, 0, 0, 11), port: 40000 };

    #[test]
    fn a_segment_toward_the_server_loses_delta_on_ack_and_sack() {
        let o = Offsets { delta: 1000, ts_delta: Some(50), ws_server: 7, ws_promised: 7 };
        let opts = [ts(500, 9000), sack(&[(5000, 6000)])].concat();
        let mut p = segment(111, 2000, 300, 2, &opts, b"GET / HTTP/1.1\r\n");
        rewrite(&mut p, Direction::ToServer, NAT, SERVER, &o).unwrap();
        assert_eq!(u32::from_be_bytes(p[24..28].try_into().unwrap()), 111, "seq unchanged");
        assert_eq!(u32::from_be_bytes(p[28..32].try_into().unwrap()), 1000, "ack - delta");
        assert_eq!(u16::from_be_bytes([p[34], p[35]]), 300, "window of C unchanged");
        assert_eq!(&p[12..20], &[10, 2, 0, 1, 10, 2, 0, 21]);
        assert_eq!(u16::from_be_bytes([p[20], p[21]]), 61000);
        let tcp = Tcp::parse(&p[20..]).unwrap();
        let opts: Vec<TcpOption<'_>> = tcp.options().collect();
        assert!(opts.contains(&TcpOption::Timestamps { tsval: 500, tsecr: 8950 }), "{opts:?}");
        let sacks: Vec<(u32, u32)> = opts.iter().filter_map(|o| if let TcpOption::Sack(b) = o { Some(b.iter()) } else { None }).flatten().collect();
        assert_eq!(sacks, [(4000, 5000)]);
        assert!(checksum::verify(&p[..20]));
        assert_eq!(full_tcp(&p), u16::from_be_bytes([p[36], p[37]]));
    }

    /// S's SACK blocks name bytes of C's, numbered alike on both legs: C must get them
    /// unchanged (shifting them by Δ made C ignore every SACK of an upload, so that each
    /// loss waited for a retransmission timeout: found by the 1 % loss test).
    #[test]
    fn a_segment_toward_the_client_gains_delta_on_seq_and_keeps_its_ack_and_sack() {
        let o = Offsets { delta: 1000, ts_delta: None, ws_server: 7, ws_promised: 7 };
        let mut p = segment(111, 2000, 300, 0, &sack(&[(5000, 6000), (7000, 8000)]), b"");
        rewrite(&mut p, Direction::ToClient, CLIENT_VIEW, CLIENT, &o).unwrap();
        assert_eq!(u32::from_be_bytes(p[24..28].try_into().unwrap()), 1111, "seq + delta");
        assert_eq!(u32::from_be_bytes(p[28..32].try_into().unwrap()), 2000, "ack unchanged");
        let tcp = Tcp::parse(&p[20..]).unwrap();
        let sacks: Vec<(u32, u32)> = tcp.options().filter_map(|o| if let TcpOption::Sack(b) = o { Some(b.iter().collect::<Vec<_>>()) } else { None }).flatten().collect();
        assert_eq!(sacks, [(5000, 6000), (7000, 8000)], "same space as the ack");
        assert_eq!(full_tcp(&p), u16::from_be_bytes([p[36], p[37]]));
    }

    #[test]
    fn windows_are_rescaled_rounding_down_and_capped() {
        assert_eq!(rescale(100, 7, 7), 100);
        assert_eq!(rescale(100, 7, 5), 400);
        assert_eq!(rescale(100, 5, 7), 25);
        assert_eq!(rescale(101, 5, 7), 25, "rounded down: never more than offered");
        assert_eq!(rescale(3, 5, 7), 0, "less than one unit: zero");
        assert_eq!(rescale(u16::MAX, 9, 0), u16::MAX, "capped");
        assert_eq!(rescale(0, 3, 2), 0);
    }

    #[test]
    fn short_or_inconsistent_packets_are_refused() {
        let o = Offsets { delta: 1, ts_delta: None, ws_server: 0, ws_promised: 0 };
        let p = segment(1, 2, 3, 0, &[], b"");
        assert!(rewrite(&mut p[..30].to_vec(), Direction::ToClient, NAT, SERVER, &o).is_err());
        let mut q = p.clone();
        q[32] = 0x20; // data offset 8 bytes
        assert_eq!(rewrite(&mut q, Direction::ToClient, NAT, SERVER, &o), Err(DropReason::MalformedTcp));
        let mut r = p.clone();
        r[2..4].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(rewrite(&mut r, Direction::ToClient, NAT, SERVER, &o), Err(DropReason::MalformedIpv4));
    }

    proptest! {
        /// For random Δ (wrap-around included), timestamp offsets, window scales, SACK
        /// blocks, option alignments and payloads: every number is what the peer's TCP
        /// expects, and the incremental checksums equal a full recomputation.
        #[test]
        fn rewrites_match_the_peers_expectations_and_checksums_stay_exact(
            seq in any::<u32>(), ack in any::<u32>(), win in any::<u16>(),
            delta in any::<u32>(), tsd in proptest::option::of(any::<u32>()),
            ws_server in 0u8..15, ws_promised in 0u8..15,
            lead in 0usize..4, with_ts in any::<bool>(),
            blocks in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..4),
            tsval in any::<u32>(), tsecr in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            to_client in any::<bool>(),
        ) {
            let mut opts = Vec::new();
            if with_ts { opts.extend(ts(tsval, tsecr)); }
            if !blocks.is_empty() { opts.extend(sack(&blocks)); }
            let p0 = segment(seq, ack, win, lead, &opts, &payload);
            let mut p = p0.clone();
            let o = Offsets { delta, ts_delta: tsd, ws_server, ws_promised };
            let dir = if to_client { Direction::ToClient } else { Direction::ToServer };
            rewrite(&mut p, dir, NAT, SERVER, &o).unwrap();
            prop_assert!(checksum::verify(&p[..20]), "IPv4 checksum");
            prop_assert_eq!(full_tcp(&p), u16::from_be_bytes([p[36], p[37]]), "TCP checksum");
            let rd = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
            // SACK edges are in the acknowledgement number's space: S's data (shifted by Δ
            // as C sees it) toward S, C's own bytes (the same on both legs) toward C.
            let shift = |v: u32| if to_client { v } else { v.wrapping_sub(delta) };
            if to_client {
                prop_assert_eq!(rd(&p, 24), seq.wrapping_add(delta));
                prop_assert_eq!(rd(&p, 28), ack);
                let w = u16::from_be_bytes([p[34], p[35]]);
                let offered = u64::from(win) << ws_server;
                let shown = u64::from(w) << ws_promised;
                prop_assert!(shown <= offered, "never more room than offered: {} > {}", shown, offered);
                // Rounded down by less than one unit of the promised shift (unless capped).
                prop_assert!(w == u16::MAX || offered - shown < (1u64 << ws_promised));
            } else {
                prop_assert_eq!(rd(&p, 24), seq);
                prop_assert_eq!(rd(&p, 28), ack.wrapping_sub(delta));
                prop_assert_eq!(&p[34..36], &p0[34..36]);
            }
            // Options at the same offsets: SACK edges in the ack's space, timestamps
            // translated.
            let tcp = Tcp::parse(&p[20..]).unwrap();
            for opt in tcp.options() {
                match opt {
                    TcpOption::Sack(got) => {
                        let got: Vec<(u32, u32)> = got.iter().collect();
                        let want: Vec<(u32, u32)> = blocks.iter().map(|&(l, r)| (shift(l), shift(r))).collect();
                        prop_assert_eq!(got, want);
                    }
                    TcpOption::Timestamps { tsval: v, tsecr: e } => {
                        let (wv, we) = match (tsd, to_client) {
                            (None, _) => (tsval, tsecr),
                            (Some(d), true) => (tsval.wrapping_add(d), tsecr),
                            (Some(d), false) => (tsval, tsecr.wrapping_sub(d)),
                        };
                        prop_assert_eq!((v, e), (wv, we));
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(&p[p.len() - payload.len()..], &payload[..], "payload untouched");
        }
    }
}
