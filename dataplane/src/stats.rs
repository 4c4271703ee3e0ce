//! Per-lcore counters and per-burst latency histograms.
//!
//! Each lcore owns one `LcoreStats`; nothing here is shared on the fast path. The control
//! thread reads snapshots that the lcore publishes (see `port::lcore`) and merges them.

use hdrhistogram::Histogram;

/// Why a frame was dropped. Every drop on the fast path is counted under exactly one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header (or an 802.1Q tag that is cut off).
    TruncatedEthernet = 0,
    /// ARP frame shorter than an Ethernet/IPv4 ARP body, or not Ethernet/IPv4 ARP.
    MalformedArp,
    /// IPv4 header truncated, IHL < 5, total length inconsistent with the frame.
    MalformedIpv4,
    /// IPv4 header checksum wrong.
    BadIpv4Checksum,
    /// IPv6 header truncated or payload length inconsistent with the frame.
    MalformedIpv6,
    /// TCP header truncated, data offset < 5 or beyond the segment, option overrun.
    MalformedTcp,
    /// UDP header truncated or length field inconsistent.
    MalformedUdp,
    /// ICMP message truncated.
    MalformedIcmp,
    /// An IP fragment where the role cannot handle fragments.
    Fragment,
    /// Addressed to the appliance but nothing answers it (e.g. not an echo request).
    LocalUnhandled,
    /// Not IPv4/IPv6 (ARP, other EtherTypes) where the role needs a flow.
    NotIp,
    /// The role has no egress for this frame (e.g. port not in a pair).
    NoRoute,
    /// The TX queue did not accept the frame (ring full).
    TxFull,
    /// No mbuf could be allocated for a generated frame.
    NoMbuf,
    /// A frame for the control thread was larger than a punt message holds.
    PuntTooBig,
    /// The control thread's queue was full (it is behind); the frame was not handed over.
    PuntQueueFull,
    /// For a balanced service (VIP) that has no live member.
    NoMember,
    /// Not for a balanced service, and the role does not forward other traffic.
    NotVip,
    /// A handshake's last ACK whose SYN cookie does not validate (forged, altered,
    /// expired, or a segment of a connection the appliance does not know).
    BadCookie,
    /// A segment of a spliced service's port for which no splice exists (not a SYN, not a
    /// cookie ACK), or one the splice's state has no use for.
    NoSplice,
    /// A new connection refused because the splice table (or its service's share, or the
    /// NAT ports, or the handshakes in progress) is full; the client got a RST.
    SpliceFull,
    /// A frame for another worker lcore (`Verdict::Handoff`) whose inbox was full.
    HandoffFull,
    /// For a port whose link is down (as the control side last read it).
    LinkDown,
}

impl DropReason {
    pub const COUNT: usize = 23;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::TruncatedEthernet,
        DropReason::MalformedArp,
        DropReason::MalformedIpv4,
        DropReason::BadIpv4Checksum,
        DropReason::MalformedIpv6,
        DropReason::MalformedTcp,
        DropReason::MalformedUdp,
        DropReason::MalformedIcmp,
        DropReason::Fragment,
        DropReason::LocalUnhandled,
        DropReason::NotIp,
        DropReason::NoRoute,
        DropReason::TxFull,
        DropReason::NoMbuf,
        DropReason::PuntTooBig,
        DropReason::PuntQueueFull,
        DropReason::NoMember,
        DropReason::NotVip,
        DropReason::BadCookie,
        DropReason::NoSplice,
        DropReason::SpliceFull,
        DropReason::HandoffFull,
        DropReason::LinkDown,
    ];

    /// Stable snake_case name used by ctl, metrics and reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::TruncatedEthernet => "truncated_ethernet",
            DropReason::MalformedArp => "malformed_arp",
            DropReason::MalformedIpv4 => "malformed_ipv4",
            DropReason::BadIpv4Checksum => "bad_ipv4_checksum",
            DropReason::MalformedIpv6 => "malformed_ipv6",
            DropReason::MalformedTcp => "malformed_tcp",
            DropReason::MalformedUdp => "malformed_udp",
            DropReason::MalformedIcmp => "malformed_icmp",
            DropReason::Fragment => "fragment",
            DropReason::LocalUnhandled => "local_unhandled",
            DropReason::NotIp => "not_ip",
            DropReason::NoRoute => "no_route",
            DropReason::TxFull => "tx_full",
            DropReason::NoMbuf => "no_mbuf",
            DropReason::PuntTooBig => "punt_too_big",
            DropReason::PuntQueueFull => "punt_queue_full",
            DropReason::NoMember => "no_member",
            DropReason::NotVip => "not_vip",
            DropReason::BadCookie => "bad_cookie",
            DropReason::NoSplice => "no_splice",
            DropReason::SpliceFull => "splice_full",
            DropReason::HandoffFull => "handoff_full",
            DropReason::LinkDown => "link_down",
        }
    }
}

/// Drop counters indexed by `DropReason`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters(pub [u64; DropReason::COUNT]);

impl DropCounters {
    #[inline]
    pub fn count(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }
    /// `n` frames dropped for `reason` at once.
    #[inline]
    pub fn add(&mut self, reason: DropReason, n: u64) {
        self.0[reason as usize] += n;
    }
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn merge(&mut self, other: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += *b;
        }
    }
    /// Non-zero reasons with their counts, in declaration order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(move |r| (*r, self.get(*r))).filter(|(_, n)| *n > 0)
    }
}

/// Counters one lcore keeps for itself.
#[derive(Clone, Debug, Default)]
pub struct LcoreCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames answered by the appliance itself (ARP replies, ICMP echo replies).
    pub local_replies: u64,
    pub polls: u64,
    pub empty_polls: u64,
    /// Times the idle back-off slept.
    pub idle_sleeps: u64,
    /// Frames handed to the control thread (in-band heartbeats, ARP replies).
    pub punted: u64,
    /// Frames the control thread asked this lcore to send (in-band heartbeats, ARP).
    pub control_tx: u64,
    /// Frames a role originated (SYN-ACKs, backend SYNs, ACKs, resets) and queued to send.
    pub emitted: u64,
    /// `tx_burst` calls repeated because a TX ring took only part of a batch.
    pub tx_retries: u64,
    /// Frames passed to another worker lcore that holds their state (`Verdict::Handoff`).
    pub handed_off: u64,
    /// Frames another worker lcore passed to this one, handled here.
    pub handed_in: u64,
    pub drops: DropCounters,
}

impl LcoreCounters {
    pub fn merge(&mut self, o: &LcoreCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.local_replies += o.local_replies;
        self.polls += o.polls;
        self.empty_polls += o.empty_polls;
        self.idle_sleeps += o.idle_sleeps;
        self.punted += o.punted;
        self.control_tx += o.control_tx;
        self.emitted += o.emitted;
        self.tx_retries += o.tx_retries;
        self.handed_off += o.handed_off;
        self.handed_in += o.handed_in;
        self.drops.merge(&o.drops);
    }
}

/// Histogram of per-burst processing time in TSC cycles (1 cycle .. 1 s at 4 GHz).
pub fn new_cycle_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 4_000_000_000, 3).expect("static histogram bounds are valid")
}

/// The percentiles every report prints.
pub const REPORT_QUANTILES: [(f64, &str); 4] = [(0.50, "p50"), (0.90, "p90"), (0.99, "p99"), (0.999, "p99.9")];

/// p50/p90/p99/p99.9/max of a histogram, as (label, value) pairs.
pub fn summarize(h: &Histogram<u64>) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> =
        REPORT_QUANTILES.iter().map(|(q, name)| (*name, h.value_at_quantile(*q))).collect();
    out.push(("max", h.max()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_with_a_distinct_name() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL must be in declaration order");
        }
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn counters_merge_and_report_nonzero_reasons() {
        let mut a = LcoreCounters::default();
        a.drops.count(DropReason::TxFull);
        a.rx_packets = 3;
        let mut b = LcoreCounters::default();
        b.drops.count(DropReason::TxFull);
        b.drops.count(DropReason::NotIp);
        b.rx_packets = 4;
        a.merge(&b);
        assert_eq!(a.rx_packets, 7);
        assert_eq!(a.drops.total(), 3);
        let nz: Vec<_> = a.drops.nonzero().collect();
        assert_eq!(nz, vec![(DropReason::NotIp, 1), (DropReason::TxFull, 2)]);
    }

    #[test]
    fn summary_quantiles_are_ordered() {
        let mut h = new_cycle_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let s = summarize(&h);
        let vals: Vec<u64> = s.iter().map(|(_, v)| *v).collect();
        assert!(vals.windows(2).all(|w| w[0] <= w[1]), "{s:?}");
        assert!((4_900..=5_100).contains(&vals[0]), "p50 {}", vals[0]);
        assert_eq!(s.last().unwrap().0, "max");
    }
}
