//! The final (and on-demand) statistics report: per-port and per-lcore counters and the
//! merged per-burst latency histogram, as a human table and as JSON.

use dataplane::stats::{summarize, LcoreCounters};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Serialize, Clone, Debug, Default)]
pub struct PortReport {
    pub name: String,
    pub device: String,
    /// The port's MAC address (aa:bb:cc:dd:ee:ff).
    pub mac: String,
    pub link_up: bool,
    pub link_speed_mbps: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
    /// Packets received per RX queue (shows how RSS or the kernel spread the flows).
    pub rx_queue_packets: Vec<u64>,
    /// A bond's members and their state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bond: Option<crate::ctl::proto::BondInfo>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct LcoreReport {
    pub lcore: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub local_replies: u64,
    pub polls: u64,
    pub empty_polls: u64,
    pub idle_sleeps: u64,
    pub punted: u64,
    pub control_tx: u64,
    /// Frames the role originated (handshake answers, backend SYNs, resets).
    pub emitted: u64,
    /// `tx_burst` calls repeated because a TX ring took only part of a batch.
    pub tx_retries: u64,
    /// Frames passed to another worker lcore that holds their state (a backend's reply to its NAT port).
    pub handed_off: u64,
    /// Frames another worker lcore passed to this one.
    pub handed_in: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

impl LcoreReport {
    pub fn from_counters(lcore: u32, c: &LcoreCounters) -> LcoreReport {
        LcoreReport {
            lcore,
            rx_packets: c.rx_packets,
            tx_packets: c.tx_packets,
            rx_bytes: c.rx_bytes,
            tx_bytes: c.tx_bytes,
            local_replies: c.local_replies,
            polls: c.polls,
            empty_polls: c.empty_polls,
            idle_sleeps: c.idle_sleeps,
            punted: c.punted,
            control_tx: c.control_tx,
            emitted: c.emitted,
            tx_retries: c.tx_retries,
            handed_off: c.handed_off,
            handed_in: c.handed_in,
            drops: c.drops.nonzero().map(|(r, n)| (r.name(), n)).collect(),
        }
    }
}

/// Quantiles of a histogram, in its own unit.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct Quantiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p999: u64,
    pub max: u64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        let s = summarize(h);
        let get = |k: &str| s.iter().find(|(n, _)| *n == k).map(|(_, v)| *v).unwrap_or(0);
        Quantiles { count: h.len(), p50: get("p50"), p90: get("p90"), p99: get("p99"), p999: get("p99.9"), max: get("max") }
    }

    /// The same quantiles converted from TSC cycles to nanoseconds.
    pub fn cycles_to_ns(&self, tsc_hz: u64) -> Quantiles {
        let ns = |c: u64| if tsc_hz == 0 { 0 } else { (c as u128 * 1_000_000_000 / tsc_hz as u128) as u64 };
        Quantiles { count: self.count, p50: ns(self.p50), p90: ns(self.p90), p99: ns(self.p99), p999: ns(self.p999), max: ns(self.max) }
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Report {
    pub node: String,
    pub role: String,
    pub uptime_s: f64,
    pub tsc_hz: u64,
    pub ports: Vec<PortReport>,
    pub lcores: Vec<LcoreReport>,
    /// Per-burst processing time, all workers merged, in TSC cycles.
    pub burst_cycles: Quantiles,
    /// The same in nanoseconds.
    pub burst_ns: Quantiles,
    /// Splice role: its events summed over the lcores (`SpliceStat` names).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub splice: BTreeMap<String, u64>,
    /// Splice role: the same per service (by its name).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub splice_services: BTreeMap<String, BTreeMap<String, u64>>,
    /// Splice role: setup times (client's handshake ACK → backend's SYN-ACK).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub splice_setup_us: Option<crate::splicer::SetupSummary>,
    /// How punctually the control thread's loop ran (`loop_watch`).
    pub control_loop: crate::loop_watch::LoopStats,
}

impl Report {
    /// A human-readable rendering: ports, lcores, drop reasons, the latency histogram.
    pub fn to_text(&self, hist: Option<&Histogram<u64>>) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "node {} role {} uptime {:.1}s", self.node, self.role, self.uptime_s);
        let _ = writeln!(s, "control {} ({} rounds)", self.control_loop.describe(), self.control_loop.iterations);
        let _ = writeln!(
            s,
            "{:<10} {:>12} {:>12} {:>14} {:>14} {:>9} {:>9} {:>9}",
            "port", "rx_pkts", "tx_pkts", "rx_bytes", "tx_bytes", "missed", "rx_err", "tx_err"
        );
        for p in &self.ports {
            let _ = writeln!(
                s,
                "{:<10} {:>12} {:>12} {:>14} {:>14} {:>9} {:>9} {:>9}",
                p.name, p.rx_packets, p.tx_packets, p.rx_bytes, p.tx_bytes, p.rx_missed, p.rx_errors, p.tx_errors
            );
        }
        let _ = writeln!(
            s,
            "{:<10} {:>12} {:>12} {:>10} {:>12} {:>12}  drops",
            "lcore", "rx_pkts", "tx_pkts", "replies", "polls", "idle_sleeps"
        );
        for l in &self.lcores {
            let drops = if l.drops.is_empty() {
                "-".to_string()
            } else {
                l.drops.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            };
            let _ = writeln!(
                s,
                "{:<10} {:>12} {:>12} {:>10} {:>12} {:>12}  {}",
                l.lcore, l.rx_packets, l.tx_packets, l.local_replies, l.polls, l.idle_sleeps, drops
            );
        }
        if !self.splice.is_empty() {
            let line: Vec<String> = self.splice.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "splice: {}", if line.is_empty() { "-".to_string() } else { line.join(" ") });
        }
        for (service, c) in &self.splice_services {
            let line: Vec<String> = c.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "splice service {service}: {}", if line.is_empty() { "-".to_string() } else { line.join(" ") });
        }
        if let Some(u) = &self.splice_setup_us {
            let _ = writeln!(s, "splice setup time ({} splices): p50 < {} µs  p90 < {} µs  p99 < {} µs  max < {} µs", u.count, u.p50_us, u.p90_us, u.p99_us, u.max_us);
        }
        let b = &self.burst_ns;
        let _ = writeln!(
            s,
            "per-burst processing time ({} bursts): p50 {} ns  p90 {} ns  p99 {} ns  p99.9 {} ns  max {} ns",
            b.count, b.p50, b.p90, b.p99, b.p999, b.max
        );
        if let Some(h) = hist {
            s.push_str(&histogram_bars(h, self.tsc_hz));
        }
        s
    }
}

/// An ASCII bar chart of a cycle histogram, one row per power-of-two bucket of nanoseconds.
pub fn histogram_bars(h: &Histogram<u64>, tsc_hz: u64) -> String {
    let mut s = String::new();
    if h.is_empty() || tsc_hz == 0 {
        return s;
    }
    let to_ns = |c: u64| (c as u128 * 1_000_000_000 / tsc_hz as u128) as u64;
    let mut rows: Vec<(u64, u64)> = Vec::new(); // (upper bound ns, count)
    for v in h.iter_recorded() {
        let ns = to_ns(v.value_iterated_to()).max(1);
        let upper = ns.next_power_of_two();
        match rows.iter_mut().find(|(u, _)| *u == upper) {
            Some(r) => r.1 += v.count_at_value(),
            None => rows.push((upper, v.count_at_value())),
        }
    }
    rows.sort();
    let peak = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    let total: u64 = rows.iter().map(|r| r.1).sum();
    for (upper, n) in rows {
        let width = ((n as f64 / peak as f64) * 50.0).ceil() as usize;
        let _ = writeln!(s, "  <= {:>9} ns {:>10} {:>6.2}% {}", upper, n, 100.0 * n as f64 / total as f64, "#".repeat(width));
    }
    s
}
