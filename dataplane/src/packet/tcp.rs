//! TCP header (RFC 9293) and its options.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::field::{set_u16, set_u32, set_u8, sub, sub_mut, u16_at, u32_at, u8_at};
use super::ip_proto;
use crate::stats::DropReason;

/// Header length without options.
pub const MIN_HEADER_LEN: usize = 20;

/// TCP flag bits (low byte of the flags word; NS is not modelled).
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// Option kinds the appliance interprets.
pub mod option_kind {
    /// End of option list.
    pub const END: u8 = 0;
    /// Padding.
    pub const NOP: u8 = 1;
    /// Maximum segment size.
    pub const MSS: u8 = 2;
    /// Window scale.
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted.
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks.
    pub const SACK: u8 = 5;
    /// Timestamps.
    pub const TIMESTAMPS: u8 = 8;
}

/// Zero-copy TCP header view over the segment (the IP payload, trimmed to IP length, so
/// that the segment length used by the checksum is the buffer length).
#[derive(Clone, Copy, Debug)]
pub struct Tcp<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Tcp<T> {
    /// Validate the data offset and walk the options once, so that
    /// [`Tcp::options`] afterwards never meets an error. Overrunning options make the
    /// whole segment `MalformedTcp`: the peer and a middlebox would disagree on them.
    pub fn parse(buf: T) -> Result<Self, DropReason> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(DropReason::MalformedTcp);
        }
        let hl = (b[12] >> 4) as usize * 4;
        if hl < MIN_HEADER_LEN || hl > b.len() {
            return Err(DropReason::MalformedTcp);
        }
        for o in TcpOptions::new(&b[MIN_HEADER_LEN..hl]) {
            o?;
        }
        Ok(Tcp { buf })
    }

    /// A view without validation, for building a header in a zeroed buffer.
    pub fn new_unchecked(buf: T) -> Self {
        Tcp { buf }
    }

    /// Give the buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        u16_at(self.b(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    /// Sequence number.
    pub fn seq(&self) -> u32 {
        u32_at(self.b(), 4)
    }

    /// Acknowledgment number (meaningful when the ACK flag is set).
    pub fn ack(&self) -> u32 {
        u32_at(self.b(), 8)
    }

    /// Header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        (u8_at(self.b(), 12) >> 4) as usize * 4
    }

    /// Flag byte; test with the [`flags`] constants.
    pub fn flags(&self) -> u8 {
        u8_at(self.b(), 13)
    }

    /// SYN flag: connection set-up.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// ACK flag.
    pub fn ack_flag(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// FIN flag: orderly close.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// RST flag: abort.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// Receive window (unscaled).
    pub fn window(&self) -> u16 {
        u16_at(self.b(), 14)
    }

    /// Checksum field as received.
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), 16)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        u16_at(self.b(), 18)
    }

    /// Raw option bytes.
    pub fn option_bytes(&self) -> &[u8] {
        sub(self.b(), MIN_HEADER_LEN, self.header_len())
    }

    /// The options, already validated by `parse` (so errors cannot occur and are not
    /// surfaced; on an unchecked view iteration simply stops at the first bad option).
    pub fn options(&self) -> impl Iterator<Item = TcpOption<'_>> {
        TcpOptions::new(self.option_bytes()).map_while(Result::ok)
    }

    /// Segment data after the header and options.
    pub fn payload(&self) -> &[u8] {
        let b = self.b();
        sub(b, self.header_len(), b.len())
    }

    /// Checksum check over IPv4; the segment is the whole buffer.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.b();
        checksum::combine(
            checksum::pseudo_header_v4(src, dst, ip_proto::TCP, b.len() as u16),
            checksum::sum(b),
        ) == 0xffff
    }

    /// Checksum check over IPv6; the segment is the whole buffer.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.b();
        checksum::combine(
            checksum::pseudo_header_v6(src, dst, ip_proto::TCP, b.len() as u32),
            checksum::sum(b),
        ) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tcp<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    /// Set without checksum fix (see `update_src_port`).
    pub fn set_src_port(&mut self, p: u16) {
        set_u16(self.bm(), 0, p);
    }

    /// Set without checksum fix (see `update_dst_port`).
    pub fn set_dst_port(&mut self, p: u16) {
        set_u16(self.bm(), 2, p);
    }

    /// Set without checksum fix (see `update_seq`).
    pub fn set_seq(&mut self, v: u32) {
        set_u32(self.bm(), 4, v);
    }

    /// Set without checksum fix (see `update_ack`).
    pub fn set_ack(&mut self, v: u32) {
        set_u32(self.bm(), 8, v);
    }

    /// Header length in bytes (multiple of 4, 20..=60); clears the reserved bits.
    pub fn set_header_len(&mut self, len: usize) {
        set_u8(self.bm(), 12, ((len / 4) as u8) << 4);
    }

    /// Set the flag byte (see [`flags`]); no checksum fix.
    pub fn set_flags(&mut self, f: u8) {
        set_u8(self.bm(), 13, f);
    }

    /// Set without checksum fix (see `update_window`).
    pub fn set_window(&mut self, w: u16) {
        set_u16(self.bm(), 14, w);
    }

    /// Write the checksum field.
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.bm(), 16, c);
    }

    /// Set the urgent pointer (no checksum fix).
    pub fn set_urgent(&mut self, u: u16) {
        set_u16(self.bm(), 18, u);
    }

    /// Mutable option bytes (write them with [`TcpOption::emit`]).
    pub fn option_bytes_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        sub_mut(self.bm(), MIN_HEADER_LEN, hl)
    }

    /// Mutable segment data.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let b = self.bm();
        let end = b.len();
        sub_mut(b, hl, end)
    }

    /// Recompute the checksum over IPv4 from scratch (for generated segments).
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v4(src, dst, ip_proto::TCP, self.b());
        self.set_checksum(c);
    }

    /// Recompute the checksum over IPv6 from scratch.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v6(src, dst, ip_proto::TCP, self.b());
        self.set_checksum(c);
    }

    fn update_word16(&mut self, at: usize, v: u16) {
        let old = u16_at(self.b(), at);
        set_u16(self.bm(), at, v);
        let c = checksum::update16(self.checksum(), old, v);
        self.set_checksum(c);
    }

    fn update_word32(&mut self, at: usize, v: u32) {
        let old = u32_at(self.b(), at);
        set_u32(self.bm(), at, v);
        let c = checksum::update32(self.checksum(), old, v);
        self.set_checksum(c);
    }

    /// Set the source port keeping the checksum valid (NAT, splicing).
    pub fn update_src_port(&mut self, p: u16) {
        self.update_word16(0, p);
    }

    /// Set the destination port keeping the checksum valid.
    pub fn update_dst_port(&mut self, p: u16) {
        self.update_word16(2, p);
    }

    /// Set the sequence number keeping the checksum valid (sequence translation).
    pub fn update_seq(&mut self, v: u32) {
        self.update_word32(4, v);
    }

    /// Set the acknowledgment number keeping the checksum valid.
    pub fn update_ack(&mut self, v: u32) {
        self.update_word32(8, v);
    }

    /// Set the window keeping the checksum valid.
    pub fn update_window(&mut self, w: u16) {
        self.update_word16(14, w);
    }

    /// Fix the checksum after the IPv4 header's address changed from `old` to `new`
    /// (the pseudo-header covers it).
    pub fn update_pseudo_ipv4_addr(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let c = checksum::update_ipv4_addr(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Fix the checksum after an IPv6 address changed.
    pub fn update_pseudo_ipv6_addr(&mut self, old: &Ipv6Addr, new: &Ipv6Addr) {
        let c = checksum::update_ipv6_addr(self.checksum(), old, new);
        self.set_checksum(c);
    }
}

/// SACK blocks as a view over the option body (1 to 4 pairs of left/right edges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SackBlocks<'a> {
    raw: &'a [u8],
}

impl<'a> SackBlocks<'a> {
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.raw.len() / 8
    }

    /// Never true for a parsed SACK option (it has 1 to 4 blocks).
    pub fn is_empty(&self) -> bool {
        self.raw.len() < 8
    }

    /// `(left edge, right edge)` pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.raw
            .chunks_exact(8)
            .map(|c| (u32_at(c, 0), u32_at(c, 4)))
    }

    /// The option body bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// One TCP option. Known kinds with an unexpected length are reported as `Unknown` (and
/// so ignored), as Linux does, instead of dropping the segment: only an option that runs
/// past the header is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Maximum segment size (SYN only).
    Mss(u16),
    /// Window scale shift (SYN only).
    WindowScale(u8),
    /// SACK may be used (SYN only).
    SackPermitted,
    /// Selective acknowledgment blocks.
    Sack(SackBlocks<'a>),
    /// RFC 7323 timestamps (PAWS, RTT measurement).
    Timestamps {
        /// Sender's clock.
        tsval: u32,
        /// Echo of the peer's last tsval.
        tsecr: u32,
    },
    /// Any other kind (or a known kind with a bad length): kind and body.
    Unknown {
        /// Option kind byte.
        kind: u8,
        /// Option body (after kind and length).
        data: &'a [u8],
    },
}

impl TcpOption<'_> {
    /// Encoded length in bytes.
    pub fn wire_len(&self) -> usize {
        match self {
            TcpOption::Mss(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(s) => 2 + s.raw.len(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Encode into `out`; returns the bytes written, or `None` if `out` is too short or
    /// the option is too long to encode. Used to build SYNs and in tests.
    pub fn emit(&self, out: &mut [u8]) -> Option<usize> {
        let n = self.wire_len();
        if n > 255 {
            return None;
        }
        let o = out.get_mut(..n)?;
        o[1] = n as u8;
        match *self {
            TcpOption::Mss(m) => {
                o[0] = option_kind::MSS;
                o[2..4].copy_from_slice(&m.to_be_bytes());
            }
            TcpOption::WindowScale(s) => {
                o[0] = option_kind::WINDOW_SCALE;
                o[2] = s;
            }
            TcpOption::SackPermitted => o[0] = option_kind::SACK_PERMITTED,
            TcpOption::Sack(s) => {
                o[0] = option_kind::SACK;
                o[2..].copy_from_slice(s.raw);
            }
            TcpOption::Timestamps { tsval, tsecr } => {
                o[0] = option_kind::TIMESTAMPS;
                o[2..6].copy_from_slice(&tsval.to_be_bytes());
                o[6..10].copy_from_slice(&tsecr.to_be_bytes());
            }
            TcpOption::Unknown { kind, data } => {
                o[0] = kind;
                o[2..].copy_from_slice(data);
            }
        }
        Some(n)
    }
}

/// Iterator over raw option bytes. NOPs are skipped, End-of-List stops it; an option whose
/// length byte is missing, below 2 or past the end yields one `Err(MalformedTcp)` and then
/// the iterator is exhausted.
#[derive(Clone, Debug)]
pub struct TcpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> TcpOptions<'a> {
    /// Iterate over raw option bytes (the header between byte 20 and the data offset).
    pub fn new(option_bytes: &'a [u8]) -> Self {
        TcpOptions { rest: option_bytes }
    }
}

impl<'a> Iterator for TcpOptions<'a> {
    type Item = Result<TcpOption<'a>, DropReason>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&kind, tail) = self.rest.split_first()?;
            match kind {
                option_kind::END => {
                    self.rest = &[];
                    return None;
                }
                option_kind::NOP => {
                    self.rest = tail;
                    continue;
                }
                _ => {}
            }
            let len = match tail.first() {
                Some(&l) if l >= 2 && l as usize <= self.rest.len() => l as usize,
                _ => {
                    self.rest = &[];
                    return Some(Err(DropReason::MalformedTcp));
                }
            };
            let body = &self.rest[2..len];
            self.rest = &self.rest[len..];
            let opt = match (kind, len) {
                (option_kind::MSS, 4) => TcpOption::Mss(u16_at(body, 0)),
                (option_kind::WINDOW_SCALE, 3) => TcpOption::WindowScale(body[0]),
                (option_kind::SACK_PERMITTED, 2) => TcpOption::SackPermitted,
                (option_kind::SACK, l) if l >= 10 && (l - 2) % 8 == 0 => {
                    TcpOption::Sack(SackBlocks { raw: body })
                }
                (option_kind::TIMESTAMPS, 10) => TcpOption::Timestamps {
                    tsval: u32_at(body, 0),
                    tsecr: u32_at(body, 4),
                },
                _ => TcpOption::Unknown { kind, data: body },
            };
            return Some(Ok(opt));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Linux SYN's options: MSS 1460, SACK-permitted, timestamps, NOP, wscale 7.
    const SYN_OPTS: [u8; 20] = [
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    fn syn() -> Vec<u8> {
        let mut b = vec![0u8; 40];
        let mut t = Tcp::new_unchecked(&mut b[..]);
        t.set_src_port(43210);
        t.set_dst_port(80);
        t.set_seq(0x0102_0304);
        t.set_header_len(40);
        t.set_flags(flags::SYN);
        t.set_window(64240);
        t.option_bytes_mut().copy_from_slice(&SYN_OPTS);
        t.fill_checksum_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        b
    }

    #[test]
    fn parse_syn() {
        let b = syn();
        let t = Tcp::parse(&b[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (43210, 80));
        assert_eq!(t.seq(), 0x0102_0304);
        assert!(t.syn() && !t.ack_flag() && !t.fin() && !t.rst());
        assert_eq!(t.header_len(), 40);
        assert_eq!(t.window(), 64240);
        assert!(t.payload().is_empty());
        let o: Vec<_> = t.options().collect();
        assert_eq!(
            o,
            vec![
                TcpOption::Mss(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps {
                    tsval: 0x00010203,
                    tsecr: 0
                },
                TcpOption::WindowScale(7),
            ]
        );
        assert!(t.verify_checksum_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
        assert!(!t.verify_checksum_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn sack_and_unknown() {
        let raw = [
            1, 1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 30, 3, 9, 2, 3, 0, 0,
        ];
        let o: Vec<_> = TcpOptions::new(&raw).collect::<Result<_, _>>().unwrap();
        assert_eq!(o.len(), 3);
        match o[0] {
            TcpOption::Sack(s) => {
                assert_eq!(s.len(), 2);
                assert_eq!(s.iter().collect::<Vec<_>>(), vec![(1, 2), (3, 4)]);
            }
            ref x => panic!("{x:?}"),
        }
        assert_eq!(
            o[1],
            TcpOption::Unknown {
                kind: 30,
                data: &[9]
            }
        );
        assert_eq!(
            o[2],
            TcpOption::Unknown {
                kind: 2,
                data: &[0]
            },
            "MSS with a bad length is ignored"
        );
    }

    #[test]
    fn end_of_list_stops() {
        let raw = [0, 2, 4, 5, 0xb4];
        assert_eq!(TcpOptions::new(&raw).count(), 0);
    }

    #[test]
    fn overrun_is_error_once() {
        for raw in [
            &[2u8][..],
            &[2, 4, 5],
            &[3, 1],
            &[3, 0, 0],
            &[8, 10, 0, 0, 0],
        ] {
            let v: Vec<_> = TcpOptions::new(raw).collect();
            assert_eq!(v, vec![Err(DropReason::MalformedTcp)], "{raw:?}");
        }
    }

    #[test]
    fn malformed() {
        let b = syn();
        assert_eq!(Tcp::parse(&b[..19]).unwrap_err(), DropReason::MalformedTcp);
        assert_eq!(
            Tcp::parse(&b[..39]).unwrap_err(),
            DropReason::MalformedTcp,
            "offset past end"
        );
        let mut x = b.clone();
        x[12] = 0x40;
        assert_eq!(
            Tcp::parse(&x[..]).unwrap_err(),
            DropReason::MalformedTcp,
            "offset < 5"
        );
        let mut x = b.clone();
        x[21] = 21; // MSS length runs past the header
        assert_eq!(Tcp::parse(&x[..]).unwrap_err(), DropReason::MalformedTcp);
    }

    #[test]
    fn emit_round_trip() {
        let sack = [0u8, 0, 0, 9, 0, 0, 0, 10];
        let opts = [
            TcpOption::Mss(1400),
            TcpOption::WindowScale(14),
            TcpOption::SackPermitted,
            TcpOption::Sack(SackBlocks { raw: &sack }),
            TcpOption::Timestamps { tsval: 7, tsecr: 8 },
            TcpOption::Unknown {
                kind: 254,
                data: &[1, 2, 3],
            },
        ];
        let mut buf = [0u8; 64];
        let mut n = 0;
        for o in &opts {
            n += o.emit(&mut buf[n..]).unwrap();
        }
        let back: Vec<_> = TcpOptions::new(&buf[..n])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, opts);
        assert_eq!(TcpOption::Mss(1).emit(&mut [0u8; 3]), None);
    }

    #[test]
    fn incremental_updates() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut b = syn();
        let mut t = Tcp::parse(&mut b[..]).unwrap();
        t.update_src_port(1);
        t.update_dst_port(65535);
        t.update_seq(0xffff_fffe);
        t.update_ack(12345);
        t.update_window(0);
        assert!(t.verify_checksum_v4(s, d));
        let n = Ipv4Addr::new(192, 0, 2, 77);
        t.update_pseudo_ipv4_addr(s, n);
        assert!(t.verify_checksum_v4(n, d));
    }
}
