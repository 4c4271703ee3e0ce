//! The workload factor W of thesis §4.5.2: the fraction of this machine's capacity that is
//! still available (1 = idle, 0 = saturated). Balancers weight members by W_i / ΣW_j.
//!
//! W combines CPU load (1-minute load average over the number of CPUs) and, when a
//! connection limit is configured, established TCP connections over that limit; the
//! tighter of the two wins, so a machine that is out of either is not sent more work.

/// The inputs, read from /proc by [`sample`] or given by tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadSample {
    pub loadavg_1m: f64,
    pub cpus: u32,
    pub established: u64,
}

/// W in 0..=1.
pub fn workload_factor(s: &LoadSample, max_connections: Option<u64>) -> f64 {
    let cpu = if s.cpus == 0 { 0.0 } else { 1.0 - s.loadavg_1m / s.cpus as f64 };
    let conn = match max_connections {
        Some(max) if max > 0 => 1.0 - s.established as f64 / max as f64,
        _ => 1.0,
    };
    let w = cpu.min(conn);
    if w.is_nan() {
        0.0
    } else {
        w.clamp(0.0, 1.0)
    }
}

/// Reads /proc/loadavg, the CPU count and the established TCP connections (IPv4 + IPv6).
pub fn sample() -> LoadSample {
    let loadavg_1m = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let established = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| count_established(&t))
        .sum();
    LoadSample { loadavg_1m, cpus, established }
}

/// Rows of /proc/net/tcp whose state (4th column) is 01 = ESTABLISHED.
pub fn count_established(proc_net_tcp: &str) -> u64 {
    proc_net_tcp.lines().skip(1).filter(|l| l.split_whitespace().nth(3) == Some("01")).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_machine_is_fully_available_and_saturation_clamps_to_zero() {
        let idle = LoadSample { loadavg_1m: 0.0, cpus: 4, established: 0 };
        assert_eq!(workload_factor(&idle, None), 1.0);
        let half = LoadSample { loadavg_1m: 2.0, cpus: 4, established: 0 };
        assert!((workload_factor(&half, None) - 0.5).abs() < 1e-9);
        let over = LoadSample { loadavg_1m: 9.0, cpus: 4, established: 0 };
        assert_eq!(workload_factor(&over, None), 0.0);
    }

    #[test]
    fn the_tighter_of_cpu_and_connections_wins() {
        let s = LoadSample { loadavg_1m: 0.4, cpus: 4, established: 750 };
        assert!((workload_factor(&s, Some(1000)) - 0.25).abs() < 1e-9);
        assert!((workload_factor(&s, None) - 0.9).abs() < 1e-9);
        assert_eq!(workload_factor(&LoadSample { cpus: 0, ..s }, None), 0.0);
    }

    #[test]
    fn established_rows_are_counted_from_proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue\n   0: 0100007F:1F90 00000000:0000 0A 0\n   1: 0100007F:1F90 0100007F:C350 01 0\n   2: 0100007F:C350 0100007F:1F90 01 0\n";
        assert_eq!(count_established(t), 2);
        let s = sample();
        assert!(s.cpus >= 1);
    }
}
