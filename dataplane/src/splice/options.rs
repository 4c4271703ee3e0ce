//! The options of the handshake segments: what a SYN (or SYN-ACK) offers, and the option
//! block of the SYN-ACKs and SYNs the appliance sends.
//!
//! Only SYNs carry MSS, window scale and SACK-permitted (RFC 7323, RFC 2018); timestamps
//! are on every segment once negotiated, and the splice translates them (`translate`).
//! The block is laid out as Linux lays out its own, so that middleboxes that look at it
//! see nothing unusual: MSS, then SACK-permitted and timestamps (NOP-padded when one of
//! them is missing), then NOP and the window shift.

use crate::packet::tcp::option_kind;
use crate::packet::{TcpOption, TcpOptions};
use crate::stats::DropReason;

/// What a SYN or SYN-ACK offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOffer {
    /// `None`: no MSS option (the peer then assumes 536, RFC 1122).
    pub mss: Option<u16>,
    /// The sender's window shift; `None`: no window scaling. Shifts above 14 are taken as
    /// 14 (RFC 7323 §2.3).
    pub wscale: Option<u8>,
    pub sack: bool,
    /// TSval and TSecr when the timestamps option is present.
    pub ts: Option<(u32, u32)>,
}

impl SynOffer {
    /// Reads the options of a SYN; an option that runs past the header is `MalformedTcp`.
    /// Unknown options and known ones of a wrong length are ignored, as Linux does.
    pub fn parse(option_bytes: &[u8]) -> Result<SynOffer, DropReason> {
        let mut o = SynOffer::default();
        for opt in TcpOptions::new(option_bytes) {
            match opt? {
                TcpOption::Mss(m) => o.mss = Some(m),
                TcpOption::WindowScale(s) => o.wscale = Some(s.min(14)),
                TcpOption::SackPermitted => o.sack = true,
                TcpOption::Timestamps { tsval, tsecr } => o.ts = Some((tsval, tsecr)),
                TcpOption::Sack(_) | TcpOption::Unknown { .. } => {}
            }
        }
        Ok(o)
    }
}

/// The longest block [`write_syn_options`] writes.
pub const SYN_OPTIONS_MAX: usize = 20;

/// Writes the option block of a SYN or SYN-ACK offering `o` (MSS `o.mss`, or none) into
/// `out`; returns its length, a multiple of 4 and at most [`SYN_OPTIONS_MAX`].
pub fn write_syn_options(out: &mut [u8; SYN_OPTIONS_MAX], o: &SynOffer) -> usize {
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        out[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    if let Some(mss) = o.mss {
        let m = mss.to_be_bytes();
        put(&[option_kind::MSS, 4, m[0], m[1]]);
    }
    match (o.sack, o.ts) {
        (sack, Some((tsval, tsecr))) => {
            put(if sack { &[option_kind::SACK_PERMITTED, 2] } else { &[option_kind::NOP, option_kind::NOP] });
            put(&[option_kind::TIMESTAMPS, 10]);
            put(&tsval.to_be_bytes());
            put(&tsecr.to_be_bytes());
        }
        (true, None) => put(&[option_kind::NOP, option_kind::NOP, option_kind::SACK_PERMITTED, 2]),
        (false, None) => {}
    }
    if let Some(ws) = o.wscale {
        put(&[option_kind::NOP, option_kind::WINDOW_SCALE, 3, ws.min(14)]);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_a_linux_syn() {
        // Linux's SYN: MSS 1460, SACK-permitted, timestamps, NOP, window shift 7.
        let opts = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0, 1, 3, 3, 7];
        let o = SynOffer::parse(&opts).unwrap();
        assert_eq!(o, SynOffer { mss: Some(1460), wscale: Some(7), sack: true, ts: Some((9, 0)) });
        let mut out = [0u8; SYN_OPTIONS_MAX];
        let n = write_syn_options(&mut out, &o);
        assert_eq!(&out[..n], &opts[..], "the same layout as Linux's");
    }

    #[test]
    fn bare_syn_and_bad_options() {
        assert_eq!(SynOffer::parse(&[]).unwrap(), SynOffer::default());
        assert_eq!(SynOffer::parse(&[2, 4, 5]), Err(DropReason::MalformedTcp));
        // A window shift above 14 is taken as 14.
        assert_eq!(SynOffer::parse(&[3, 3, 20, 0]).unwrap().wscale, Some(14));
        let mut out = [0u8; SYN_OPTIONS_MAX];
        assert_eq!(write_syn_options(&mut out, &SynOffer::default()), 0);
    }

    proptest! {
        /// Every combination round-trips through the block, whose length is a whole
        /// number of words.
        #[test]
        fn written_options_read_back(mss in proptest::option::of(any::<u16>()), ws in proptest::option::of(0u8..=14),
                                     sack: bool, ts in proptest::option::of(any::<(u32, u32)>())) {
            let o = SynOffer { mss, wscale: ws, sack, ts };
            let mut out = [0u8; SYN_OPTIONS_MAX];
            let n = write_syn_options(&mut out, &o);
            prop_assert_eq!(n % 4, 0);
            prop_assert_eq!(SynOffer::parse(&out[..n]).unwrap(), o);
        }

        /// Arbitrary option bytes never panic.
        #[test]
        fn arbitrary_bytes_do_not_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = SynOffer::parse(&b);
        }
    }
}
