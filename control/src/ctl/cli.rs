//! `tapsplice ctl --socket PATH [--json] <command>`: one request, a readable table (or the
//! raw JSON result), a clear one-line error and a non-zero exit on failure.
//!
//! Exit status: 0 done; 1 the appliance answered an error; 2 usage (including `fence`
//! without `--yes-really`); 3 the appliance could not be reached or did not speak the
//! protocol.

use super::client::{self, ClientError};
use super::proto::*;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `tapsplice ctl`.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct CtlArgs {
    /// The appliance's ctl socket (the [ctl] socket of its rack file; default
    /// /run/tapsplice/<node id>.sock).
    #[arg(long)]
    pub socket: PathBuf,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: CtlCmd,
}

/// The ctl commands.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum CtlCmd {
    /// Node, role, version, uptime, ports up/down and traffic totals.
    Status,
    /// Peers and their failure-detector state.
    Peers,
    /// Per port: link, packets, bytes, missed, errors, per-queue RX.
    Ports,
    /// Per worker lcore: counters and drop reasons.
    Stats,
    /// Per-burst processing time: quantiles and buckets (ns).
    Histogram,
    /// Recent events (detector decisions, fencing, failovers), oldest first.
    Events,
    /// [[server]] pairs: primary, backup, their states and the takeover phase.
    Servers,
    /// Balance role: per service and member: state, weights, table share, packets, bytes (splice role: per pool and backend).
    Members,
    /// Splice role: the connections (client, VIP, backend, NAT tuples, Δ, state, age, bytes).
    Splices {
        /// Only this client: ADDR or ADDR:PORT.
        #[arg(long)]
        client: Option<String>,
        /// Only this backend: ADDR or ADDR:PORT.
        #[arg(long)]
        backend: Option<String>,
        /// Only this state: routing, connecting, established, closed.
        #[arg(long)]
        state: Option<String>,
        /// At most this many rows (default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Fence NODE: cut it off and power it off through its fence device.
    Fence {
        /// Node id to fence.
        node: String,
        /// Confirm: fencing powers the node off.
        #[arg(long)]
        yes_really: bool,
    },
}

impl CtlCmd {
    pub fn command(&self) -> Command {
        match self {
            CtlCmd::Status => Command::Status,
            CtlCmd::Peers => Command::Peers,
            CtlCmd::Ports => Command::Ports,
            CtlCmd::Stats => Command::Stats,
            CtlCmd::Histogram => Command::Histogram,
            CtlCmd::Events => Command::Events,
            CtlCmd::Servers => Command::Servers,
            CtlCmd::Members => Command::Members,
            CtlCmd::Splices { client, backend, state, limit } => {
                Command::Splices(SplicesQuery { client: client.clone(), backend: backend.clone(), state: state.clone(), limit: *limit })
            }
            CtlCmd::Fence { node, .. } => Command::Fence { node: node.clone() },
        }
    }
}

/// Exit statuses of `tapsplice ctl`.
pub const EXIT_REMOTE_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;

/// Entry point for `main`: runs the command, prints to stdout/stderr.
pub fn ctl_main(args: CtlArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = execute(&args, &mut stdout.lock(), &mut stderr.lock());
    ExitCode::from(code)
}

/// Runs one ctl command, writing the result to `out` and errors to `err`; returns the
/// exit status.
pub fn execute(args: &CtlArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let cmd = args.cmd.command();
    if let CtlCmd::Fence { node, yes_really: false } = &args.cmd {
        let _ = writeln!(
            err,
            "tapsplice: ctl fence: fencing powers {node} off (and promotes its backup); repeat with --yes-really to do it"
        );
        return EXIT_USAGE;
    }
    match client::request(&args.socket, &cmd) {
        Ok(result) => {
            let text = if args.json {
                serde_json::to_string_pretty(&result).unwrap_or_else(|_| result.to_string()) + "\n"
            } else {
                render(&cmd, &result)
            };
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
            0
        }
        Err(ClientError::Remote(e)) => {
            if args.json {
                let _ = writeln!(out, "{}", serde_json::json!({ "error": { "code": e.code, "message": e.message } }));
            }
            let _ = writeln!(err, "tapsplice: ctl {}: the appliance answered {}: {}", cmd.name(), e.code, e.message);
            EXIT_REMOTE_ERROR
        }
        Err(e) => {
            let _ = writeln!(err, "tapsplice: ctl {}: {e}", cmd.name());
            EXIT_UNREACHABLE
        }
    }
}

/// The human rendering of a command's result; a result this build cannot read is shown
/// as JSON.
pub fn render(cmd: &Command, result: &Value) -> String {
    fn as_<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
        serde_json::from_value(v.clone()).ok()
    }
    let text = match cmd {
        Command::Status => as_(result).map(|r| render_status(&r)),
        Command::Ports => as_(result).map(|r| render_ports(&r)),
        Command::Stats => as_(result).map(|r| render_stats(&r)),
        Command::Histogram => as_(result).map(|r| render_histogram(&r)),
        Command::Events => as_(result).map(|r| render_events(&r)),
        Command::Peers => as_(result).map(|r| render_peers(&r)),
        Command::Servers => as_(result).map(|r| render_servers(&r)),
        Command::Members => as_(result).map(|r| render_members(&r)),
        Command::Splices(_) => as_(result).map(|r| render_splices(&r)),
        Command::Fence { node } => Some(render_fence(node, result)),
    };
    text.unwrap_or_else(|| serde_json::to_string_pretty(result).unwrap_or_default() + "\n")
}

// ---------------------------------------------------------------------------------------
// Tables

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with aligned columns, two spaces apart, headers in capitals.
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(cols: &[(&str, Align)]) -> Table {
        Table {
            headers: cols.iter().map(|c| c.0.to_string()).collect(),
            align: cols.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut s = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, (w, align)) in width.iter().zip(&self.align).enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = w.saturating_sub(c.chars().count());
                if i > 0 {
                    l.push_str("  ");
                }
                match align {
                    Align::Left => {
                        l.push_str(c);
                        l.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        l.push_str(&" ".repeat(pad));
                        l.push_str(c);
                    }
                }
            }
            s.push_str(l.trim_end());
            s.push('\n');
        };
        line(&self.headers);
        for r in &self.rows {
            line(r);
        }
        s
    }
}

/// Key/value lines with aligned values.
fn kv(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v) in pairs {
        let _ = writeln!(s, "{k:<w$}  {v}");
    }
    s
}

// ---------------------------------------------------------------------------------------
// Number formatting

/// 1234567 → "1,234,567".
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    let first = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    out.push_str(&digits[..first]);
    for group in digits.as_bytes()[first..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

/// Three significant digits with an SI prefix: 999 → "999", 1234 → "1.23 k", 98765432 →
/// "98.8 M".
fn si(v: f64, unit: &str) -> String {
    const PREFIX: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    let mut x = v;
    let mut i = 0;
    while x >= 999.5 && i < PREFIX.len() - 1 {
        x /= 1000.0;
        i += 1;
    }
    if i == 0 {
        return format!("{} {unit}", v.round() as u64);
    }
    let num = if x >= 99.95 {
        format!("{x:.0}")
    } else if x >= 9.995 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    format!("{num} {}{unit}", PREFIX[i])
}

/// Bytes with decimal SI units: "512 B", "1.23 kB", "45.6 GB".
pub fn fmt_bytes(n: u64) -> String {
    si(n as f64, "B")
}

/// Nanoseconds as "850 ns", "12.3 µs", "1.23 ms", "2.00 s".
pub fn fmt_ns(ns: u64) -> String {
    let x = ns as f64;
    let three = |v: f64| {
        if v >= 99.95 {
            format!("{v:.0}")
        } else if v >= 9.995 {
            format!("{v:.1}")
        } else {
            format!("{v:.2}")
        }
    };
    if ns < 1_000 {
        format!("{ns} ns")
    } else if x < 999_500.0 {
        format!("{} µs", three(x / 1e3))
    } else if x < 999_500_000.0 {
        format!("{} ms", three(x / 1e6))
    } else {
        format!("{} s", three(x / 1e9))
    }
}

/// Link speed: 10000 → "10G", 100 → "100M", 2500 → "2.5G", 0 → "-".
pub fn fmt_speed(mbps: u32) -> String {
    match mbps {
        0 => "-".into(),
        m if m % 1000 == 0 => format!("{}G", m / 1000),
        m if m > 1000 => format!("{:.1}G", m as f64 / 1000.0),
        m => format!("{m}M"),
    }
}

/// Durations: "12.3s", "5m07s", "2h03m04s", "3d04h05m".
pub fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let t = secs as u64;
    let (d, h, m, s) = (t / 86_400, t / 3600 % 24, t / 60 % 60, t % 60);
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else {
        format!("{m}m{s:02}s")
    }
}

/// Milliseconds ago: "never", "12 ms", "1.50 s", "5m07s".
pub fn fmt_age_ms(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.2} s", ms as f64 / 1000.0),
        Some(ms) => fmt_duration(ms as f64 / 1000.0),
    }
}

/// Milliseconds since the epoch as "2024-05-01 12:34:56.789Z".
pub fn fmt_time_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000)
}

// ---------------------------------------------------------------------------------------
// Renderers

pub fn render_status(r: &StatusResult) -> String {
    let ports = if r.ports.down.is_empty() {
        format!("{} of {} up", r.ports.up, r.ports.total)
    } else {
        format!("{} of {} up (down: {})", r.ports.up, r.ports.total, r.ports.down.join(", "))
    };
    let t = &r.totals;
    kv(&[
        ("node", r.node.clone()),
        ("role", r.role.clone()),
        ("version", format!("{} (ctl protocol v{})", r.version, r.proto)),
        ("uptime", fmt_duration(r.uptime_s)),
        ("ports", ports),
        ("lcores", r.lcores.to_string()),
        ("peers", r.peers.to_string()),
        ("rx", format!("{} packets  {}", fmt_count(t.rx_packets), fmt_bytes(t.rx_bytes))),
        ("tx", format!("{} packets  {}", fmt_count(t.tx_packets), fmt_bytes(t.tx_bytes))),
        ("missed", fmt_count(t.rx_missed)),
        ("errors", fmt_count(t.errors)),
        ("drops", fmt_count(t.drops)),
        ("control", render_loop(&r.control_loop, r.snapshot_age_ms)),
    ])
}

/// The control loop's punctuality: the largest gap, how many were late or stalls, and how
/// old the figures are (a control thread stalled now shows there first).
fn render_loop(c: &crate::loop_watch::LoopStats, age_ms: f64) -> String {
    if c.period_ms <= 0.0 {
        // An appliance that has not published yet, or one that predates the field.
        return "loop not reported".to_string();
    }
    let age = if age_ms > 1000.0 { format!("; NOT RUNNING for {:.1} s (snapshot age)", age_ms / 1e3) } else { format!("; snapshot {age_ms:.0} ms old") };
    format!("{} (see events){age}", c.describe())
}

pub const PORTS_COLUMNS: [&str; 13] =
    ["PORT", "DEVICE", "MAC", "LINK", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "MISSED", "RX ERR", "TX ERR", "NOMBUF", "RX PER QUEUE"];

pub fn render_ports(r: &PortsResult) -> String {
    use Align::*;
    let aligns = [Left, Left, Left, Left, Right, Right, Right, Right, Right, Right, Right, Right, Left];
    let cols: Vec<(&str, Align)> = PORTS_COLUMNS.iter().copied().zip(aligns).collect();
    let mut t = Table::new(&cols);
    for p in &r.ports {
        let link = if p.link.up { format!("up {}", fmt_speed(p.link.speed_mbps)) } else { "down".to_string() };
        t.row(vec![
            p.name.clone(),
            p.device.clone(),
            if p.mac.is_empty() { "-".to_string() } else { p.mac.clone() },
            link.trim_end_matches(" -").to_string(),
            fmt_count(p.rx_packets),
            fmt_bytes(p.rx_bytes),
            fmt_count(p.tx_packets),
            fmt_bytes(p.tx_bytes),
            fmt_count(p.rx_missed),
            fmt_count(p.rx_errors),
            fmt_count(p.tx_errors),
            fmt_count(p.rx_nombuf),
            p.rx_queue_packets.iter().map(|n| fmt_count(*n)).collect::<Vec<_>>().join(" / "),
        ]);
    }
    let mut s = t.render();
    if r.ports.is_empty() {
        s.push_str("(no ports)\n");
    }
    for p in &r.ports {
        if let Some(b) = &p.bond {
            s.push_str(&render_bond(&p.name, b));
        }
    }
    s
}

/// A bond's members under the ports table: link, whether the bond uses it, its counters
/// and, for 802.3ad, the LACP states and the partner.
fn render_bond(name: &str, b: &BondInfo) -> String {
    let mut s = match &b.primary {
        Some(p) => format!("\nbond {name} ({}, primary {p}, moved {}×):\n", b.mode, b.primary_moves),
        None if b.mode == "balance-xor" => format!("\nbond {name} ({}, member link changes signalled {}×):\n", b.mode, b.primary_moves),
        None => format!("\nbond {name} ({}):\n", b.mode),
    };
    if b.members.is_empty() {
        s.push_str("  (no members)\n");
    }
    for m in &b.members {
        let link = if m.link_up { "up" } else { "down" };
        let used = if m.active { "active" } else { "inactive" };
        let _ = write!(s, "  {:<10} {:<14} link {:<4} {:<8} rx {} tx {}", m.name, m.device, link, used, fmt_count(m.rx_packets), fmt_count(m.tx_packets));
        if b.mode == "802.3ad" {
            let flags = |f: &[String]| if f.is_empty() { "-".to_string() } else { f.join(",") };
            let _ = write!(s, "  actor {}  partner {} {}", flags(&m.actor), m.partner_system.as_deref().unwrap_or("none"), flags(&m.partner));
        }
        s.push('\n');
    }
    s
}

pub const STATS_COLUMNS: [&str; 11] =
    ["LCORE", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "REPLIES", "POLLS", "BUSY", "IDLE SLEEPS", "HANDED OFF/IN", "DROPS"];
pub const DROPS_COLUMNS: [&str; 3] = ["DROP REASON", "TOTAL", "PER LCORE"];

pub fn render_stats(r: &StatsResult) -> String {
    use Align::*;
    let cols: Vec<(&str, Align)> = STATS_COLUMNS.iter().copied().zip([Left, Right, Right, Right, Right, Right, Right, Right, Right, Right, Right]).collect();
    let mut t = Table::new(&cols);
    for l in &r.lcores {
        let busy = match l.polls {
            0 => "-".to_string(),
            polls => {
                let busy = l.polls.saturating_sub(l.empty_polls);
                let pct = 100.0 * busy as f64 / polls as f64;
                if busy > 0 && pct < 0.1 {
                    "<0.1%".to_string()
                } else {
                    format!("{pct:.1}%")
                }
            }
        };
        t.row(vec![
            l.lcore.to_string(),
            fmt_count(l.rx_packets),
            fmt_bytes(l.rx_bytes),
            fmt_count(l.tx_packets),
            fmt_bytes(l.tx_bytes),
            fmt_count(l.local_replies),
            fmt_count(l.polls),
            busy,
            fmt_count(l.idle_sleeps),
            format!("{}/{}", fmt_count(l.handed_off), fmt_count(l.handed_in)),
            fmt_count(l.drops.values().sum()),
        ]);
    }
    let mut s = t.render();
    if r.lcores.is_empty() {
        s.push_str("(no worker lcores)\n");
    }
    s.push('\n');
    let mut d = Table::new(&[(DROPS_COLUMNS[0], Left), (DROPS_COLUMNS[1], Right), (DROPS_COLUMNS[2], Left)]);
    for (reason, total) in &r.drops {
        let per: Vec<String> = r
            .lcores
            .iter()
            .filter_map(|l| l.drops.get(reason).filter(|n| **n > 0).map(|n| format!("{}: {}", l.lcore, fmt_count(*n))))
            .collect();
        d.row(vec![reason.clone(), fmt_count(*total), per.join(", ")]);
    }
    s.push_str(&d.render());
    if r.drops.is_empty() {
        s.push_str("(no drops)\n");
    }
    if !r.splice.is_empty() {
        let events: Vec<String> = r.splice.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}={}", fmt_count(*n))).collect();
        let _ = writeln!(s, "\nsplice: {}", if events.is_empty() { "(nothing yet)".to_string() } else { events.join(" ") });
    }
    if !r.splice_services.is_empty() {
        use Align::*;
        let mut t = Table::new(&[("SERVICE", Left), ("ACTIVE", Right), ("ESTABLISHED", Right), ("REFUSED", Right), ("RESETS", Right), ("TO SERVER", Right), ("TO CLIENT", Right)]);
        for (name, c) in &r.splice_services {
            let n = |k: &str| c.get(k).copied().unwrap_or(0);
            let refused = n("refused_full") + n("refused_no_backend") + n("refused_tuple_taken") + n("syns_no_backend") + n("backends_exhausted");
            t.row(vec![
                name.clone(),
                fmt_count(n("active")),
                fmt_count(n("established")),
                fmt_count(refused),
                fmt_count(n("resets")),
                fmt_bytes(n("to_server_bytes")),
                fmt_bytes(n("to_client_bytes")),
            ]);
        }
        s.push('\n');
        s.push_str(&t.render());
    }
    s
}

pub const HISTOGRAM_COLUMNS: [&str; 4] = ["UP TO", "BURSTS", "SHARE", "DISTRIBUTION"];

pub fn render_histogram(r: &HistogramResult) -> String {
    let mut s = kv(&[
        ("bursts", fmt_count(r.count)),
        ("p50", fmt_ns(r.p50)),
        ("p90", fmt_ns(r.p90)),
        ("p99", fmt_ns(r.p99)),
        ("p99.9", fmt_ns(r.p999)),
        ("max", fmt_ns(r.max)),
    ]);
    s.push('\n');
    use Align::*;
    let mut t = Table::new(&[(HISTOGRAM_COLUMNS[0], Right), (HISTOGRAM_COLUMNS[1], Right), (HISTOGRAM_COLUMNS[2], Right), (HISTOGRAM_COLUMNS[3], Left)]);
    let total: u64 = r.buckets.iter().map(|b| b.count).sum();
    let peak = r.buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    for b in &r.buckets {
        let share = if total == 0 { 0.0 } else { 100.0 * b.count as f64 / total as f64 };
        let bar = "#".repeat(((b.count as f64 / peak as f64) * 40.0).ceil() as usize);
        t.row(vec![fmt_ns(b.le), fmt_count(b.count), format!("{share:.2}%"), bar]);
    }
    s.push_str(&t.render());
    if r.buckets.is_empty() {
        s.push_str("(no bursts recorded)\n");
    }
    s
}

pub const EVENTS_COLUMNS: [&str; 4] = ["TIME (UTC)", "KIND", "NODE", "MESSAGE"];

pub fn render_events(r: &EventsResult) -> String {
    use Align::*;
    let mut t = Table::new(&[(EVENTS_COLUMNS[0], Left), (EVENTS_COLUMNS[1], Left), (EVENTS_COLUMNS[2], Left), (EVENTS_COLUMNS[3], Left)]);
    for e in &r.events {
        t.row(vec![fmt_time_utc(e.ts_unix_ms), e.kind.clone(), e.node.clone().unwrap_or_else(|| "-".into()), e.message.clone()]);
    }
    let mut s = t.render();
    if r.events.is_empty() {
        s.push_str("(no events)\n");
    }
    s
}

pub const PEERS_COLUMNS: [&str; 8] = ["PEER", "CLASS", "STATE", "INCARNATION", "LAST HEARD", "RECEIVED", "MISSED", "WORKLOAD"];

pub fn render_peers(r: &PeersResult) -> String {
    use Align::*;
    let aligns = [Left, Left, Left, Right, Right, Right, Right, Right];
    let cols: Vec<(&str, Align)> = PEERS_COLUMNS.iter().copied().zip(aligns).collect();
    let mut t = Table::new(&cols);
    for p in &r.peers {
        t.row(vec![
            p.node.clone(),
            p.class.clone(),
            p.state.clone(),
            p.incarnation.to_string(),
            fmt_age_ms(p.last_heard_ms),
            fmt_count(p.heartbeats_received),
            fmt_count(p.heartbeats_missed),
            p.workload.map(|w| format!("{w:.2}")).unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut s = t.render();
    if r.peers.is_empty() {
        s.push_str("(no peers)\n");
    }
    s
}

pub const SERVERS_COLUMNS: [&str; 6] = ["PAIR", "PRIMARY", "BACKUP", "PHASE", "STATES", "WHY"];

pub fn render_servers(r: &ServersResult) -> String {
    let cols: Vec<(&str, Align)> = SERVERS_COLUMNS.iter().map(|&c| (c, Align::Left)).collect();
    let mut t = Table::new(&cols);
    for p in &r.pairs {
        t.row(vec![
            p.name.clone(),
            p.primary.clone(),
            p.backup.clone(),
            p.phase.to_string(),
            format!("{}/{}", p.primary_state, p.backup_state),
            if p.reason.is_empty() { "-".into() } else { p.reason.clone() },
        ]);
    }
    let mut s = t.render();
    if r.pairs.is_empty() {
        s.push_str("(no [[server]] pairs)\n");
    }
    s
}

pub const MEMBERS_COLUMNS: [&str; 10] = ["SERVICE", "MEMBER", "PEER", "STATE", "MAC", "WEIGHT", "EFFECTIVE", "SHARE", "PACKETS", "BYTES"];

pub fn render_members(r: &MembersResult) -> String {
    use Align::*;
    let aligns = [Left, Left, Left, Left, Left, Right, Right, Right, Right, Right];
    let mut cols: Vec<(&str, Align)> = MEMBERS_COLUMNS.iter().copied().zip(aligns).collect();
    // Splice backends: their open connections too.
    let connections = r.members.iter().any(|m| m.connections.is_some());
    if connections {
        cols.push(("CONNS", Right));
    }
    let mut t = Table::new(&cols);
    for m in &r.members {
        let mut row = vec![
            m.service.clone(),
            m.member.clone(),
            m.peer.clone().unwrap_or_else(|| "-".into()),
            m.state.clone(),
            m.mac.clone().unwrap_or_else(|| "-".into()),
            m.weight.to_string(),
            m.effective_weight.to_string(),
            format!("{:.1}%", m.share * 100.0),
            fmt_count(m.packets),
            fmt_count(m.bytes),
        ];
        if connections {
            row.push(m.connections.map_or_else(|| "-".into(), fmt_count));
        }
        t.row(row);
    }
    let mut s = String::new();
    for v in &r.services {
        let _ = writeln!(
            s,
            "service {} ({}): {} live member(s), table {} slots, {} rebuild(s), {} frame(s) dropped without a member",
            v.service, v.vip, v.live_members, v.table_size, v.rebuilds, v.no_member_drops
        );
    }
    s.push_str(&t.render());
    if r.members.is_empty() {
        s.push_str("(no balanced services)\n");
    }
    s
}

pub fn render_splices(r: &SplicesResult) -> String {
    use Align::*;
    let mut t = Table::new(&[
        ("SERVICE", Left),
        ("POOL", Left),
        ("CLIENT", Left),
        ("VIP", Left),
        ("BACKEND", Left),
        ("NAT", Left),
        ("STATE", Left),
        ("DELTA", Right),
        ("TS", Left),
        ("WS C/S", Left),
        ("AGE", Right),
        ("IDLE", Right),
        ("TO SERVER", Right),
        ("TO CLIENT", Right),
    ]);
    for x in &r.splices {
        t.row(vec![
            x.service.clone(),
            x.pool.clone(),
            x.client.clone(),
            x.vip.clone(),
            x.backend.clone(),
            x.nat.clone(),
            x.state.clone(),
            x.delta.to_string(),
            if x.timestamps { "yes" } else { "no" }.into(),
            format!("{}/{}", x.ws_client, x.ws_server),
            format!("{}s", x.age_s),
            format!("{}s", x.idle_s),
            fmt_count(x.bytes_to_server),
            fmt_count(x.bytes_to_client),
        ]);
    }
    let mut s = t.render();
    let _ = writeln!(s, "{} shown, {} matching", r.splices.len(), r.matched);
    s
}

pub fn render_fence(node: &str, result: &Value) -> String {
    let r: FenceResult = serde_json::from_value(result.clone()).unwrap_or_default();
    if r.outcome.is_empty() {
        return format!("fence {node}: done\n{}\n", serde_json::to_string_pretty(result).unwrap_or_default());
    }
    let mut s = format!("fence {}: {}", if r.node.is_empty() { node } else { &r.node }, r.outcome);
    if let Some(ms) = r.duration_ms {
        let _ = write!(s, " in {}", fmt_ns(ms.saturating_mul(1_000_000)));
    }
    if !r.message.is_empty() {
        let _ = write!(s, ": {}", r.message);
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn stats_show_the_splice_counters_when_there_are_any() {
        let mut r = StatsResult::default();
        assert!(!render_stats(&r).contains("splice:"), "no splice role, no line");
        r.splice = [("established", 3u64), ("refused_full", 0), ("active", 2)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let text = render_stats(&r);
        assert!(text.contains("splice: active=2 established=3\n"), "{text}");
        // An older appliance's answer has no `splice`: it reads as empty.
        let old: StatsResult = serde_json::from_str(r#"{"lcores": [], "drops": {}}"#).unwrap();
        assert!(old.splice.is_empty());
        let back: StatsResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.splice, r.splice);
        // Per service: a table, refusals of every kind summed.
        let c = |v: &[(&str, u64)]| v.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        r.splice_services.insert("web".into(), c(&[("active", 2), ("established", 3), ("refused_full", 1), ("syns_no_backend", 4), ("to_server_bytes", 2048)]));
        let text = render_stats(&r);
        let row = text.lines().find(|l| l.starts_with("web")).unwrap_or_else(|| panic!("{text}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[..5], ["web", "2", "3", "5", "0"], "{text}");
        assert!(text.contains("SERVICE") && text.contains("TO SERVER"), "{text}");
        let back: StatsResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.splice_services, r.splice_services);
    }

    #[test]
    fn members_show_open_connections_for_splice_backends_only() {
        use crate::balancer::MemberView;
        let m = |member: &str, connections: Option<u64>| MemberView { service: "web".into(), member: member.into(), state: "up".into(), weight: 1, connections, ..Default::default() };
        let balance = MembersResult { members: vec![m("10.0.0.21", None)], ..Default::default() };
        assert!(!render_members(&balance).contains("CONNS"), "balance members keep no per-flow state");
        let splice = MembersResult { members: vec![m("10.1.0.21", Some(12)), m("10.1.0.22", Some(0))], ..Default::default() };
        let text = render_members(&splice);
        let row = |addr: &str| text.lines().find(|l| l.contains(addr)).unwrap_or_else(|| panic!("{text}")).split_whitespace().last().unwrap().to_string();
        assert!(text.contains("CONNS"), "{text}");
        assert_eq!((row("10.1.0.21"), row("10.1.0.22")), ("12".to_string(), "0".to_string()));
        let back: MembersResult = serde_json::from_str(&serde_json::to_string(&splice).unwrap()).unwrap();
        assert_eq!(back, splice);
    }

    #[test]
    fn counts_bytes_and_times_are_readable() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_count(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1234), "1.23 kB");
        assert_eq!(fmt_bytes(98_765_432), "98.8 MB");
        assert_eq!(fmt_bytes(999_999), "1.00 MB");
        assert_eq!(fmt_bytes(123_456_789_012), "123 GB");
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(12_345), "12.3 µs");
        assert_eq!(fmt_ns(1_234_567), "1.23 ms");
        assert_eq!(fmt_ns(2_000_000_000), "2.00 s");
        assert_eq!(fmt_speed(10_000), "10G");
        assert_eq!(fmt_speed(2_500), "2.5G");
        assert_eq!(fmt_speed(100), "100M");
        assert_eq!(fmt_duration(12.34), "12.3s");
        assert_eq!(fmt_duration(307.0), "5m07s");
        assert_eq!(fmt_duration(7384.0), "2h03m04s");
        assert_eq!(fmt_duration(273_900.0), "3d04h05m");
        assert_eq!(fmt_age_ms(None), "never");
        assert_eq!(fmt_age_ms(Some(1500)), "1.50 s");
        assert_eq!(fmt_time_utc(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(fmt_time_utc(1_709_251_199_123), "2024-02-29 23:59:59.123Z");
    }

    #[test]
    fn bonds_are_shown_under_the_ports_with_their_members() {
        let member = |name: &str, up: bool, state: u8| BondMemberInfo {
            name: name.into(),
            device: format!("net_tap_{name}"),
            link_up: up,
            active: up,
            rx_packets: 1234,
            tx_packets: 5,
            actor: lacp_flags(state),
            partner: lacp_flags(state),
            partner_system: up.then(|| "02:00:00:00:0b:00".to_string()),
        };
        let r = PortsResult {
            ports: vec![PortInfo {
                name: "uplink".into(),
                device: "net_bonding_uplink".into(),
                bond: Some(BondInfo { mode: "802.3ad".into(), members: vec![member("up0", true, 0x3d), member("up1", false, 0x45)], ..Default::default() }),
                ..Default::default()
            }],
        };
        let text = render_ports(&r);
        assert!(text.contains("bond uplink (802.3ad):"), "{text}");
        let up0 = text.lines().find(|l| l.trim_start().starts_with("up0")).unwrap();
        assert!(up0.contains("link up") && up0.contains("active") && up0.contains("rx 1,234"), "{up0}");
        assert!(up0.contains("actor active,aggregation,sync,collecting,distributing"), "{up0}");
        assert!(up0.contains("partner 02:00:00:00:0b:00"), "{up0}");
        let up1 = text.lines().find(|l| l.trim_start().starts_with("up1")).unwrap();
        assert!(up1.contains("link down") && up1.contains("inactive") && up1.contains("partner none active,aggregation,defaulted"), "{up1}");
        assert_eq!(lacp_flags(0xff).len(), 8);
        let ab = BondInfo { mode: "active-backup".into(), members: vec![], primary: Some("up1".into()), primary_moves: 2 };
        assert!(render_bond("uplink", &ab).contains("bond uplink (active-backup, primary up1, moved 2×):"));
        assert!(lacp_flags(0).is_empty());
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&[("A", Align::Left), ("NUM", Align::Right)]);
        t.row(vec!["long-name".into(), "1".into()]);
        t.row(vec!["x".into(), "1,000".into()]);
        assert_eq!(t.render(), "A            NUM\nlong-name      1\nx          1,000\n");
    }

    #[derive(Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: TopCmd,
    }
    #[derive(clap::Subcommand)]
    enum TopCmd {
        Ctl(CtlArgs),
    }

    #[test]
    fn clap_parses_the_subcommands() {
        let p = |a: &[&str]| Top::try_parse_from(a).map(|t| match t.cmd {
            TopCmd::Ctl(c) => c,
        });
        let c = p(&["t", "ctl", "--socket", "/s", "--json", "status"]).unwrap();
        assert_eq!((c.socket, c.json, c.cmd), (PathBuf::from("/s"), true, CtlCmd::Status));
        let c = p(&["t", "ctl", "--socket", "/s", "fence", "srv1", "--yes-really"]).unwrap();
        assert_eq!(c.cmd, CtlCmd::Fence { node: "srv1".into(), yes_really: true });
        assert!(p(&["t", "ctl", "status"]).is_err(), "--socket is required");
        assert!(p(&["t", "ctl", "--socket", "/s", "fence"]).is_err(), "fence needs a node");
        for name in ["peers", "ports", "stats", "histogram", "events"] {
            assert_eq!(p(&["t", "ctl", "--socket", "/s", name]).unwrap().cmd.command().name(), name);
        }
    }

    #[test]
    fn fence_without_confirmation_is_a_usage_error_and_sends_nothing() {
        let args = CtlArgs {
            socket: "/nonexistent/ctl.sock".into(),
            json: false,
            cmd: CtlCmd::Fence { node: "srv1".into(), yes_really: false },
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(execute(&args, &mut out, &mut err), EXIT_USAGE);
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("--yes-really") && err.lines().count() == 1, "{err}");
    }

    #[test]
    fn missing_socket_is_one_line_and_exit_3() {
        let args = CtlArgs { socket: "/nonexistent/ctl.sock".into(), json: false, cmd: CtlCmd::Status };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(execute(&args, &mut out, &mut err), EXIT_UNREACHABLE);
        let err = String::from_utf8(err).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("tapsplice: ctl status: no ctl socket at /nonexistent/ctl.sock"), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn unreadable_results_fall_back_to_json() {
        let v = serde_json::json!({"ports": "not a list"});
        assert!(render(&Command::Ports, &v).contains("\"not a list\""));
    }
}
