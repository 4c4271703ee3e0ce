//! Semantic validation: ranges, names, references between sections, duplicates, and the
//! rules that tie roles to sections. Every finding names the key it is about; the
//! [`Index`] turns that key into a line and column.

use super::diag::{Index, Problems, Severity};
use super::eal::{classify_device, is_pci_address, parse_lcores, DeviceKind, VdevDriver};
use super::schema::*;
use super::types::Cidr;
use std::collections::HashMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::path::Path;

pub(crate) fn validate(cfg: &RackConfig, ix: &Index, p: &mut Problems<'_>) {
    let mut v = V { cfg, ix, p };
    v.node();
    v.eal();
    v.mempool_workers();
    v.ports_and_bonds();
    v.forward();
    v.peers_and_groups();
    v.fence_devices();
    v.pools();
    v.services();
    v.servers();
    v.mirrors();
    v.timers_keys_ctl();
    v.roles();
}

struct V<'a, 'p> {
    cfg: &'a RackConfig,
    ix: &'a Index,
    p: &'a mut Problems<'p>,
}

/// What a port-like name refers to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Port(usize),
    Bond(usize),
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

impl<'a, 'p> V<'a, 'p> {
    // ---- reporting -----------------------------------------------------------------------

    fn report(&mut self, offset: usize, key: &str, msg: String, sev: Severity) {
        if self.p.is_broken(key) {
            return;
        }
        let e = self.p.at(offset, key, msg, sev);
        match sev {
            Severity::Error => self.p.errors.push(e),
            Severity::Warning => self.p.warnings.push(e),
        }
    }

    /// An error about the value at `key` (or where it would be).
    fn err(&mut self, key: &str, msg: impl Into<String>) {
        let off = self.ix.offset_of(key);
        self.report(off, key, msg.into(), Severity::Error);
    }

    /// An error about `key`, shown at the place of `at` (a key that is in the file).
    fn err_near(&mut self, at: &str, key: &str, msg: impl Into<String>) {
        let off = self.ix.offset_of(at);
        self.report(off, key, msg.into(), Severity::Error);
    }

    fn warn(&mut self, key: &str, msg: impl Into<String>) {
        let off = self.ix.offset_of(key);
        self.report(off, key, msg.into(), Severity::Warning);
    }

    fn line_of(&self, key: &str) -> usize {
        self.p.lines.line_col(self.ix.offset_of(key)).0
    }

    fn present(&self, key: &str) -> bool {
        self.ix.contains(key)
    }

    /// Reports a missing required key; true if it is present.
    fn required(&mut self, key: &str) -> bool {
        if self.present(key) {
            return true;
        }
        self.err(key, "required key is missing");
        false
    }

    fn range<T: PartialOrd + Display + Copy>(&mut self, key: &str, v: T, lo: T, hi: T) -> bool {
        if v < lo || v > hi {
            self.err(key, format!("must be between {lo} and {hi} (got {v})"));
            return false;
        }
        true
    }

    fn pow2(&mut self, key: &str, v: u32, lo: u32, hi: u32) {
        if v < lo || v > hi || !v.is_power_of_two() {
            self.err(
                key,
                format!("must be a power of two between {lo} and {hi} (got {v})"),
            );
        }
    }

    fn name(&mut self, key: &str, v: &str, max: usize) -> bool {
        if !self.required(key) {
            return false;
        }
        if !name_ok(v, max) {
            self.err(key, format!("\"{v}\" is not a valid name (1 to {max} characters: letters, digits, '_', '-', '.')"));
            return false;
        }
        true
    }

    /// Reports the second and later uses of the same name.
    fn unique(&mut self, what: &str, items: Vec<(String, String)>) {
        let mut seen: HashMap<String, String> = HashMap::new();
        for (key, name) in items {
            if name.is_empty() {
                continue;
            }
            match seen.get(&name) {
                Some(first) => {
                    let line = self.line_of(first);
                    let first = first.clone();
                    self.err(
                        &key,
                        format!(
                            "duplicate {what} \"{name}\" (first used by {first} at line {line})"
                        ),
                    );
                }
                None => {
                    seen.insert(name, key);
                }
            }
        }
    }

    fn abs_path(&mut self, key: &str, p: &Path) {
        if !p.is_absolute() {
            self.err(
                key,
                format!("must be an absolute path (got \"{}\")", p.display()),
            );
        }
    }

    // ---- lookups -------------------------------------------------------------------------

    fn endpoint(&self, name: &str) -> Option<Endpoint> {
        if let Some(i) = self.cfg.port.iter().position(|p| p.name == name) {
            return Some(Endpoint::Port(i));
        }
        self.cfg
            .bond
            .iter()
            .position(|b| b.name == name)
            .map(Endpoint::Bond)
    }

    /// The bond a port is a member of.
    fn bond_of(&self, port: &str) -> Option<usize> {
        self.cfg
            .bond
            .iter()
            .position(|b| b.members.iter().any(|m| m == port))
    }

    /// Checks that `name` (at `key`) is a port or bond that roles may use.
    fn usable_endpoint(&mut self, key: &str, name: &str) -> Option<Endpoint> {
        match self.endpoint(name) {
            None => {
                self.err(key, format!("no [[port]] or [[bond]] named \"{name}\""));
                None
            }
            Some(Endpoint::Port(i)) => {
                if let Some(b) = self.bond_of(name) {
                    let bn = self.cfg.bond[b].name.clone();
                    self.err(key, format!("port \"{name}\" is a member of bond \"{bn}\" (bond[{b}]); use the bond's name"));
                    return None;
                }
                Some(Endpoint::Port(i))
            }
            e => e,
        }
    }

    fn peer(&self, id: &str) -> Option<&'a PeerConfig> {
        self.cfg.peer.iter().find(|p| p.id == id)
    }

    fn endpoint_addresses(&self) -> Vec<Cidr> {
        let mut v: Vec<Cidr> = self
            .cfg
            .port
            .iter()
            .flat_map(|p| p.addresses.iter().copied())
            .collect();
        v.extend(
            self.cfg
                .bond
                .iter()
                .flat_map(|b| b.addresses.iter().copied()),
        );
        v
    }

    // ---- sections ------------------------------------------------------------------------

    fn node(&mut self) {
        let n = &self.cfg.node;
        // 32: the heartbeat wire format's node id limit.
        if self.required("node.id") && !name_ok(&n.id, 32) {
            self.err("node.id", format!("\"{}\" is not a valid node id (1 to 32 characters: letters, digits, '_', '-', '.')", n.id));
        }
        if n.roles.is_empty() {
            self.err(
                "node.roles",
                "must name at least one role (forward, balance, splice, tap)",
            );
        }
        for (i, r) in n.roles.iter().enumerate() {
            if n.roles[..i].contains(r) {
                self.err(
                    &format!("node.roles[{i}]"),
                    format!("role \"{r}\" is listed twice"),
                );
            }
        }
    }

    fn eal(&mut self) {
        let e = &self.cfg.eal;
        match parse_lcores(&e.lcores) {
            Err(m) => self.err("eal.lcores", m),
            Ok(l) if l.len() < 2 => self.err(
                "eal.lcores",
                format!(
                    "needs at least 2 lcores, one main lcore and at least one worker (got \"{}\")",
                    e.lcores
                ),
            ),
            Ok(_) => {}
        }
        self.range("eal.memory_mb", e.memory_mb, 64, 1 << 20);
        if self.required("eal.file_prefix") {
            let ok = !e.file_prefix.is_empty()
                && e.file_prefix.len() <= 64
                && !e.file_prefix.starts_with(['-', '.'])
                && e.file_prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                self.err(
                    "eal.file_prefix",
                    format!("\"{}\" is not a valid file prefix (1 to 64 characters: letters, digits, '_', '-', '.'; not starting with '-' or '.')", e.file_prefix),
                );
            }
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        for (i, a) in e.pci_allow.iter().enumerate() {
            let key = format!("eal.pci_allow[{i}]");
            let addr = a.split(',').next().unwrap_or("");
            if !is_pci_address(addr) {
                let m = match classify_device(addr) {
                    Err(m) => m,
                    Ok(_) => format!("\"{addr}\" is not a PCI address of the form DDDD:BB:DD.F"),
                };
                self.err(&key, m);
            } else {
                seen.push((key, addr.to_ascii_lowercase()));
            }
        }
        self.unique("PCI address", seen);

        const OWNED: &[(&str, &str)] = &[
            ("-l", "eal.lcores"),
            ("--lcores", "eal.lcores"),
            ("-c", "eal.lcores"),
            (
                "--main-lcore",
                "eal.lcores (the first lcore is the main one)",
            ),
            (
                "--master-lcore",
                "eal.lcores (the first lcore is the main one)",
            ),
            ("-m", "eal.memory_mb"),
            ("--socket-mem", "eal.memory_mb"),
            ("--no-huge", "eal.hugepages = false"),
            ("--file-prefix", "eal.file_prefix"),
            ("-a", "eal.pci_allow"),
            ("--allow", "eal.pci_allow"),
            ("-w", "eal.pci_allow"),
            ("--pci-whitelist", "eal.pci_allow"),
            ("--no-pci", "eal.pci_allow (empty, with no PCI port)"),
            ("--vdev", "a [[port]] with a vdev device"),
        ];
        for (i, a) in e.extra_args.iter().enumerate() {
            let key = format!("eal.extra_args[{i}]");
            if a.trim().is_empty() {
                self.err(&key, "must not be empty");
                continue;
            }
            let owned = OWNED.iter().find(|(f, _)| {
                a == f
                    || (f.starts_with("--") && a.starts_with(&format!("{f}=")))
                    || (!f.starts_with("--") && a.starts_with(f) && !a.starts_with("--"))
            });
            if let Some((f, instead)) = owned {
                self.err(
                    &key,
                    format!("\"{f}\" is generated from the configuration; set {instead} instead"),
                );
            }
            if (a == "--in-memory" || a.starts_with("--in-memory=")) && !e.hugepages {
                self.err(&key, "--in-memory is rejected together with --no-huge by DPDK 22.11; remove it (eal.hugepages = false already keeps memory private)");
            }
        }
    }

    fn mempool_workers(&mut self) {
        let m = &self.cfg.mempool;
        self.range("mempool.mbufs", m.mbufs, 1023, 16_777_215);
        if self.range("mempool.cache", m.cache, 0, 512) && m.cache as u64 * 3 > m.mbufs as u64 * 2 {
            self.err(
                "mempool.cache",
                format!(
                    "must be at most mbufs / 1.5 = {} (DPDK's limit; got {})",
                    m.mbufs as u64 * 2 / 3,
                    m.cache
                ),
            );
        }
        self.range("mempool.data_room", m.data_room, 256, u16::MAX);
        let rx_need: u64 = self
            .cfg
            .port
            .iter()
            .map(|p| p.rx_queues as u64 * p.rx_desc as u64)
            .sum::<u64>()
            + self
                .cfg
                .bond
                .iter()
                .map(|b| b.rx_queues as u64 * b.rx_desc as u64)
                .sum::<u64>();
        // Only with sane rings: a bad rx_queues or rx_desc is reported on its own.
        let rings_ok = self
            .cfg
            .port
            .iter()
            .map(|p| (p.rx_queues, p.rx_desc))
            .chain(self.cfg.bond.iter().map(|b| (b.rx_queues, b.rx_desc)))
            .all(|(q, d)| {
                (1..=64).contains(&q) && (64..=16384).contains(&d) && d.is_power_of_two()
            });
        // Splice workers may hold frames for each other (a full inbox each).
        let workers = self.cfg.worker_lcores().len() as u64;
        let splicing = self.cfg.service.iter().any(|s| s.mode == ServiceMode::Splice);
        let inboxes = if workers > 1 && splicing { workers * dataplane::lcore_link::HANDOFF_QUEUE as u64 } else { 0 };
        if rings_ok && (m.mbufs as u64) < rx_need + inboxes {
            let plus = if inboxes > 0 { format!(", and the splice workers' handoff inboxes {inboxes}") } else { String::new() };
            self.err(
                "mempool.mbufs",
                format!("{} mbufs cannot fill the RX rings (the ports need rx_queues × rx_desc = {rx_need}{plus}); raise mbufs or lower rx_desc", m.mbufs),
            );
        }

        let w = &self.cfg.workers;
        self.range("workers.burst", w.burst, 1, 512);
        self.range("workers.idle_polls", w.idle_polls, 1, 1_000_000);
        self.range(
            "workers.idle_max_sleep_us",
            w.idle_max_sleep_us,
            0,
            1_000_000,
        );
        if let Ok(l) = parse_lcores(&self.cfg.eal.lcores) {
            let workers = l.len().saturating_sub(1);
            let queues: usize = self
                .cfg
                .port
                .iter()
                .filter(|p| self.bond_of(&p.name).is_none())
                .map(|p| p.rx_queues as usize)
                .sum::<usize>()
                + self
                    .cfg
                    .bond
                    .iter()
                    .map(|b| b.rx_queues as usize)
                    .sum::<usize>();
            if queues > 0 && workers > queues {
                self.warn("eal.lcores", format!("{workers} worker lcores but only {queues} RX queues in all; {} worker(s) will have nothing to poll", workers - queues));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn port_like(
        &mut self,
        base: &str,
        rx_queues: u16,
        rx_desc: u16,
        tx_desc: u16,
        mtu: u16,
        addresses: &[Cidr],
    ) {
        self.range(&format!("{base}.rx_queues"), rx_queues, 1, 64);
        self.pow2(&format!("{base}.rx_desc"), rx_desc as u32, 64, 16384);
        self.pow2(&format!("{base}.tx_desc"), tx_desc as u32, 64, 16384);
        if self.range(&format!("{base}.mtu"), mtu, 68, 9600) {
            let room = self.cfg.mempool.data_room as u32;
            let need = mtu as u32 + 18 + 128; // Ethernet + VLAN header, mbuf headroom
            if need > room {
                self.err(
                    &format!("{base}.mtu"),
                    format!("an MTU of {mtu} needs mempool.data_room ≥ {need} (frame + 128 B headroom; data_room is {room})"),
                );
            }
        }
        for (j, a) in addresses.iter().enumerate() {
            if a.addr.is_ipv6() {
                self.warn(
                    &format!("{base}.addresses[{j}]"),
                    format!(
                        "{a}: IPv6 addresses are accepted but not answered yet (IPv4 only for now)"
                    ),
                );
            }
        }
    }

    fn ports_and_bonds(&mut self) {
        let cfg = self.cfg;
        let mut names = Vec::new();
        let mut devices = Vec::new();
        let mut ifaces = Vec::new();
        let mut addrs = Vec::new();
        for (i, p) in cfg.port.iter().enumerate() {
            let base = format!("port[{i}]");
            let nk = format!("{base}.name");
            if self.name(&nk, &p.name, 32) {
                names.push((nk, p.name.clone()));
            }
            let dk = format!("{base}.device");
            let ak = format!("{base}.args");
            if self.required(&dk) {
                match classify_device(&p.device) {
                    Err(m) => self.err(&dk, m),
                    Ok(kind) => {
                        let canon = match &kind {
                            DeviceKind::Pci(a) => a.clone(),
                            DeviceKind::Vdev { name, .. } => name.clone(),
                        };
                        devices.push((dk.clone(), canon));
                        // A bond configures its members with its own queue counts.
                        let rx_queues = cfg.bond.iter().find(|b| b.members.contains(&p.name)).map_or(p.rx_queues, |b| b.rx_queues);
                        self.device_args(&ak, &kind, &p.args, rx_queues, &mut ifaces);
                    }
                }
            }
            self.port_like(
                &base,
                p.rx_queues,
                p.rx_desc,
                p.tx_desc,
                p.mtu,
                &p.addresses,
            );
            for (j, a) in p.addresses.iter().enumerate() {
                addrs.push((format!("{base}.addresses[{j}]"), a.addr.to_string()));
            }
        }
        for (i, b) in cfg.bond.iter().enumerate() {
            let base = format!("bond[{i}]");
            let nk = format!("{base}.name");
            if self.name(&nk, &b.name, 20) {
                names.push((nk, b.name.clone()));
            }
            if self.required(&format!("{base}.members")) && b.members.is_empty() {
                self.err(&format!("{base}.members"), "needs at least one member port");
            }
            for (j, m) in b.members.iter().enumerate() {
                let mk = format!("{base}.members[{j}]");
                if !cfg.has_port(m) {
                    let hint = if cfg.bond_index(m).is_some() {
                        " (bonds cannot be nested)"
                    } else {
                        ""
                    };
                    self.err(&mk, format!("no [[port]] named \"{m}\"{hint}"));
                    continue;
                }
                // A port belongs to at most one bond, once.
                let first = cfg
                    .bond
                    .iter()
                    .enumerate()
                    .flat_map(|(bi, bb)| {
                        bb.members
                            .iter()
                            .enumerate()
                            .map(move |(mj, n)| (bi, mj, n))
                    })
                    .find(|(_, _, n)| *n == m);
                if let Some((bi, mj, _)) = first {
                    if (bi, mj) != (i, j) {
                        self.err(
                            &mk,
                            format!(
                                "port \"{m}\" is already a member of bond[{bi}] (\"{}\")",
                                cfg.bond[bi].name
                            ),
                        );
                    }
                }
            }
            if let Some(pr) = &b.primary {
                let pk = format!("{base}.primary");
                if !b.members.contains(pr) {
                    self.err(&pk, format!("\"{pr}\" is not one of this bond's members"));
                } else if b.mode != BondMode::ActiveBackup {
                    self.warn(
                        &pk,
                        format!(
                            "only used in mode \"active-backup\" (this bond is \"{}\")",
                            b.mode.as_str()
                        ),
                    );
                }
            }
            self.port_like(
                &base,
                b.rx_queues,
                b.rx_desc,
                b.tx_desc,
                b.mtu,
                &b.addresses,
            );
            for (j, a) in b.addresses.iter().enumerate() {
                addrs.push((format!("{base}.addresses[{j}]"), a.addr.to_string()));
            }
        }
        self.unique("port or bond name", names);
        self.unique("device", devices);
        self.unique("interface name (iface=)", ifaces);
        self.unique("address", addrs);
    }

    fn device_args(
        &mut self,
        key: &str,
        kind: &DeviceKind,
        args: &str,
        rx_queues: u16,
        ifaces: &mut Vec<(String, String)>,
    ) {
        let pairs: Vec<(&str, &str)> = if args.is_empty() {
            Vec::new()
        } else {
            let mut v = Vec::new();
            for item in args.split(',') {
                match item.split_once('=') {
                    Some((k, val)) if !k.is_empty() && !item.contains(char::is_whitespace) => {
                        v.push((k, val))
                    }
                    _ => {
                        self.err(
                            key,
                            format!(
                                "\"{args}\" is not a comma-separated list of key=value arguments"
                            ),
                        );
                        return;
                    }
                }
            }
            v
        };
        let has = |k: &str| pairs.iter().any(|(pk, _)| *pk == k);
        match kind {
            DeviceKind::Pci(_) => {}
            DeviceKind::Vdev { driver, name } => match driver {
                VdevDriver::Tap | VdevDriver::AfPacket | VdevDriver::AfXdp => {
                    if *driver != VdevDriver::Tap && !has("iface") {
                        let example = if *driver == VdevDriver::AfPacket { "iface=veth0,qdisc_bypass=1" } else { "iface=veth0" };
                        self.err(key, format!("{name} needs args = \"iface=<kernel interface>\" (e.g. \"{example}\")"));
                    }
                    // A socket port has as many queue pairs as its argument says (one
                    // by default), and the appliance configures max(workers, rx_queues)
                    // pairs on it (a TX queue per worker, each RX queue polled): fewer
                    // make DPDK refuse the port at start with a line that names neither,
                    // more leave AF_PACKET sockets of the fanout group unread (their
                    // share of the frames lost) or AF_XDP queues without a socket.
                    let queue_key = match driver {
                        VdevDriver::AfPacket => Some("qpairs"),
                        VdevDriver::AfXdp => Some("queue_count"),
                        _ => None,
                    };
                    if let Some(qk) = queue_key {
                        let workers = u16::try_from(self.cfg.worker_lcores().len()).unwrap_or(u16::MAX);
                        let need = usize::from(crate::run::queue_counts(true, rx_queues, workers).0);
                        match pairs.iter().find(|(k, _)| *k == qk).map(|(_, v)| v.parse::<usize>()) {
                            Some(Err(_)) => self.err(key, format!("{qk}= must be a number of queue pairs")),
                            Some(Ok(have)) if have != need => self.err(key, format!("{qk}={have} does not match the queue pairs the port is given ({need}: one per worker lcore, at least rx_queues); set {qk}={need}")),
                            None if need > 1 => self.err(key, format!("{name} has one queue pair unless {qk}= says more; the port is given {need} (one per worker lcore, at least rx_queues): add {qk}={need}")),
                            _ => {}
                        }
                    }
                    if let Some((_, ifc)) = pairs.iter().find(|(k, _)| *k == "iface") {
                        if ifc.is_empty()
                            || *ifc == "."
                            || *ifc == ".."
                            || ifc.len() > 15
                            || !ifc
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                        {
                            self.err(key, format!("iface=\"{ifc}\" is not a valid Linux interface name (1 to 15 characters)"));
                        } else {
                            ifaces.push((key.to_owned(), ifc.to_string()));
                        }
                    }
                }
                VdevDriver::Ring => {}
                VdevDriver::VirtioUser => {
                    if !has("path") {
                        self.err(key, format!("{name} needs args = \"path=<vhost-user socket>\" (e.g. \"path=/run/tapsplice/vhost0.sock\")"));
                    }
                }
                VdevDriver::Vhost => {
                    if !has("iface") {
                        self.err(key, format!("{name} needs args = \"iface=<socket path>\" (e.g. \"iface=/run/tapsplice/vhost0.sock\")"));
                    }
                }
                VdevDriver::Bonding => {
                    if !has("mode") {
                        self.err(key, format!("{name} needs args with mode= and slave= (or declare the bond in [[bond]])"));
                    } else {
                        self.warn(key, "a bonding vdev declared as a port; prefer [[bond]], which tapsplice validates");
                    }
                }
                VdevDriver::Other => {
                    let dk = key.trim_end_matches(".args").to_owned() + ".device";
                    self.warn(&dk, format!("vdev driver of \"{name}\" is not one tapsplice is tested with (net_tap, net_ring, net_virtio_user, net_vhost, net_af_packet, net_af_xdp, net_bonding); passed to DPDK unchanged"));
                }
            },
        }
    }

    fn forward(&mut self) {
        let cfg = self.cfg;
        let has_role = cfg.node.roles.contains(&Role::Forward);
        // With a broken node.roles the roles are unknown: no role-based findings.
        let roles_known = !self.p.is_broken("node.roles");
        let Some(f) = &cfg.forward else {
            if has_role && roles_known {
                self.err_near(
                    "node.roles",
                    "forward",
                    "node.roles contains \"forward\" but the [forward] section is missing",
                );
            }
            return;
        };
        if !has_role && roles_known {
            self.err(
                "forward",
                "[forward] is set but node.roles does not contain \"forward\"",
            );
        }
        if f.pairs.is_empty() {
            self.err("forward.pairs", "needs at least one pair of ports");
        }
        let mut used: HashMap<&str, String> = HashMap::new();
        for (i, [a, b]) in f.pairs.iter().enumerate() {
            if a == b && !a.is_empty() {
                self.err(
                    &format!("forward.pairs[{i}][1]"),
                    format!("a pair needs two different ports (got \"{a}\" twice)"),
                );
                continue;
            }
            for (j, n) in [a, b].into_iter().enumerate() {
                let key = format!("forward.pairs[{i}][{j}]");
                if self.usable_endpoint(&key, n).is_none() {
                    continue;
                }
                if let Some(first) = used.get(n.as_str()) {
                    let first = first.clone();
                    self.err(&key, format!("\"{n}\" is already in a pair ({first}); a port can be in one pair only"));
                } else {
                    used.insert(n, key);
                }
            }
        }
    }

    fn peers_and_groups(&mut self) {
        let cfg = self.cfg;
        let mut ids = Vec::new();
        for (i, pe) in cfg.peer.iter().enumerate() {
            let base = format!("peer[{i}]");
            let ik = format!("{base}.id");
            if self.name(&ik, &pe.id, 32) {
                if pe.id == cfg.node.id {
                    self.err(
                        &ik,
                        format!("\"{}\" is this node's own id (node.id)", pe.id),
                    );
                }
                ids.push((ik, pe.id.clone()));
            }
            if pe.mgmt.is_none() && pe.inband_port.is_none() {
                self.err_near(
                    &base,
                    &base,
                    "needs `mgmt` or `inband_port`: a path for its heartbeats",
                );
            }
            match (&pe.inband_port, &pe.inband_address) {
                (Some(port), addr) => {
                    let has_ipv4 = match self.usable_endpoint(&format!("{base}.inband_port"), port) {
                        Some(Endpoint::Port(i)) => Some(!self.cfg.port[i].ipv4_addresses().is_empty()),
                        Some(Endpoint::Bond(b)) => Some(self.cfg.bond[b].addresses.iter().any(|c| c.ipv4().is_some())),
                        None => None,
                    };
                    if has_ipv4 == Some(false) {
                        self.err(
                            &format!("{base}.inband_port"),
                            format!("port \"{port}\" has no IPv4 address: in-band heartbeats are sent from the appliance's address on it"),
                        );
                    }
                    if matches!(addr, Some(IpAddr::V6(_))) {
                        self.err(&format!("{base}.inband_address"), "in-band heartbeats are IPv4: give the peer's IPv4 address");
                    }
                    if addr.is_none() {
                        self.err(
                            &format!("{base}.inband_address"),
                            "required with inband_port: the peer's address on that port",
                        );
                    }
                }
                (None, Some(_)) => self.err(
                    &format!("{base}.inband_address"),
                    "set inband_port too (the port on which this address is reached)",
                ),
                (None, None) => {}
            }
            if let Some(k) = pe.missed_intervals {
                self.range(&format!("{base}.missed_intervals"), k, 1, 100);
            }
        }
        self.unique("peer id", ids);
        if cfg.node.mgmt.is_none() {
            if let Some(i) = cfg.peer.iter().position(|p| p.mgmt.is_some()) {
                self.err_near(&format!("peer[{i}].mgmt"), "node.mgmt", "peers are reached over the management network; set node.mgmt to this node's address and heartbeat UDP port");
            }
        }

        let mut names = Vec::new();
        let mut member_of: HashMap<&str, String> = HashMap::new();
        for (i, g) in cfg.proxy_group.iter().enumerate() {
            let base = format!("proxy_group[{i}]");
            let nk = format!("{base}.name");
            if self.name(&nk, &g.name, 64) {
                names.push((nk, g.name.clone()));
            }
            if self.required(&format!("{base}.members")) && g.members.is_empty() {
                self.err(&format!("{base}.members"), "needs at least one member");
            }
            for (j, m) in g.members.iter().enumerate() {
                let mk = format!("{base}.members[{j}]");
                if *m != cfg.node.id {
                    match self.peer(m) {
                        None => {
                            self.err(
                                &mk,
                                format!("no [[peer]] with id \"{m}\" (and it is not node.id)"),
                            );
                            continue;
                        }
                        Some(pe) if pe.class == PeerClass::Server => {
                            self.err(&mk, format!("peer \"{m}\" has class \"server\"; proxy groups hold appliances and proxies"));
                            continue;
                        }
                        Some(_) => {}
                    }
                }
                if let Some(first) = member_of.get(m.as_str()) {
                    let first = first.clone();
                    self.err(
                        &mk,
                        format!("\"{m}\" is already a member of a proxy group ({first})"),
                    );
                } else {
                    member_of.insert(m, mk);
                }
            }
            self.range(&format!("{base}.weight"), g.weight, 1, 1000);
        }
        self.unique("proxy group name", names);
    }

    fn fence_devices(&mut self) {
        let mut names = Vec::new();
        for (i, f) in self.cfg.fence_device.iter().enumerate() {
            let base = format!("fence_device[{i}]");
            let nk = format!("{base}.name");
            if self.name(&nk, &f.name, 64) {
                names.push((nk, f.name.clone()));
            }
            let ak = format!("{base}.agent");
            if self.required(&ak) {
                self.abs_path(&ak, &f.agent);
            }
            for (k, val) in &f.parameters {
                let pk = super::diag::join_key(&format!("{base}.parameters"), k);
                if k.is_empty()
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    self.err(&pk, format!("\"{k}\" is not a fence-agent parameter name (letters, digits, '_', '-')"));
                } else if k == "action" {
                    self.err(
                        &pk,
                        "tapsplice sets action= itself (off, on, status, monitor); remove it",
                    );
                } else if k == "plug" {
                    self.warn(&pk, "plug= here applies to every server fenced by this device; per server, set [[server]] fence_plug");
                } else if matches!(k.as_str(), "password" | "passwd") {
                    self.warn(&pk, "a password in the rack file: keep the file readable by root only, or use password_script");
                }
                if val.contains(['\n', '\r']) {
                    self.err(
                        &pk,
                        "must not contain a line break (parameters are passed one per line)",
                    );
                }
            }
            self.range(&format!("{base}.timeout_ms"), f.timeout_ms, 100, 600_000);
            self.range(&format!("{base}.attempts"), f.attempts, 1, 10);
        }
        self.unique("fence device name", names);
    }

    fn pools(&mut self) {
        let cfg = self.cfg;
        let mut names = Vec::new();
        let subnets = self.endpoint_addresses();
        for (i, pl) in cfg.pool.iter().enumerate() {
            let base = format!("pool[{i}]");
            let nk = format!("{base}.name");
            if self.name(&nk, &pl.name, 64) {
                names.push((nk, pl.name.clone()));
            }
            if let Some(via) = &pl.via {
                self.usable_endpoint(&format!("{base}.via"), via);
            }
            if self.required(&format!("{base}.members")) && pl.members.is_empty() {
                self.err(&format!("{base}.members"), "needs at least one member");
            }
            let mut seen = Vec::new();
            for (j, m) in pl.members.iter().enumerate() {
                let mb = format!("{base}.members[{j}]");
                let ak = format!("{mb}.address");
                if self.required(&ak) {
                    seen.push((
                        ak.clone(),
                        format!(
                            "{}:{}",
                            m.address,
                            m.port.map(|p| p.to_string()).unwrap_or_default()
                        ),
                    ));
                    if pl.via.is_none() && !subnets.iter().any(|c| c.contains(&m.address)) {
                        self.err(&ak, format!("no port or bond has an address in a subnet containing {}; set {base}.via", m.address));
                    }
                }
                if let Some(port) = m.port {
                    self.range(&format!("{mb}.port"), port, 1, u16::MAX);
                }
                self.range(&format!("{mb}.weight"), m.weight, 0, 10_000);
                if let Some(pe) = &m.peer {
                    if self.peer(pe).is_none() {
                        self.err(
                            &format!("{mb}.peer"),
                            format!("no [[peer]] with id \"{pe}\""),
                        );
                    }
                }
            }
            self.unique("pool member", seen);
            // A balance service keeps no per-flow state: it can only hash.
            let balanced = cfg.service.iter().any(|s| s.mode == ServiceMode::Balance && s.pool.as_deref() == Some(pl.name.as_str()));
            if pl.selection == PoolSelection::LeastConnections && balanced {
                self.err(&format!("{base}.selection"), "\"least_connections\" needs per-connection state: a pool of a balance service can only use \"hash\"");
            }
        }
        self.unique("pool name", names);
    }

    fn services(&mut self) {
        let cfg = self.cfg;
        let mut names = Vec::new();
        for (i, s) in cfg.service.iter().enumerate() {
            let base = format!("service[{i}]");
            let k = |f: &str| format!("{base}.{f}");
            let nk = k("name");
            if self.name(&nk, &s.name, 64) {
                names.push((nk, s.name.clone()));
            }
            if self.required(&k("vip"))
                && (s.vip.is_unspecified()
                    || s.vip.is_multicast()
                    || s.vip == IpAddr::from([255, 255, 255, 255]))
            {
                self.err(&k("vip"), format!("{} cannot be a service address", s.vip));
            }
            if self.required(&k("ports")) && s.ports.is_empty() {
                self.err(&k("ports"), "needs at least one port");
            }
            // Overlap with an earlier service on the same address and protocol.
            for (pi, pr) in s.ports.iter().enumerate() {
                let other = cfg.service[..i].iter().enumerate().find(|(_, o)| {
                    o.vip == s.vip
                        && o.protocol == s.protocol
                        && o.ports.iter().any(|op| op.overlaps(pr))
                });
                if let Some((oi, o)) = other {
                    self.err(
                        &format!("{base}.ports[{pi}]"),
                        format!(
                            "port {pr} of {} overlaps service[{oi}] (\"{}\")",
                            s.vip, o.name
                        ),
                    );
                }
            }
            if let Some(via) = &s.via {
                self.usable_endpoint(&k("via"), via);
            }
            let mode = s.mode.as_str();
            let ignored = |v: &mut Self, f: &str, used_in: &str| {
                if v.present(&k(f)) {
                    v.warn(
                        &k(f),
                        format!("ignored in mode \"{mode}\" (used by mode \"{used_in}\")"),
                    );
                }
            };
            match s.mode {
                ServiceMode::Balance => {
                    for f in [
                        "nat",
                        "no_backend",
                        "fault_tolerance",
                        "proxy_groups",
                        "request_buffer_bytes",
                        "resplice_log_bytes",
                    ] {
                        ignored(self, f, "splice");
                    }
                }
                ServiceMode::Splice => {
                    ignored(self, "hash", "balance");
                }
                ServiceMode::Shadow => {
                    ignored(self, "hash", "balance");
                    for f in [
                        "nat",
                        "no_backend",
                        "fault_tolerance",
                        "proxy_groups",
                        "request_buffer_bytes",
                        "resplice_log_bytes",
                    ] {
                        ignored(self, f, "splice");
                    }
                }
            }
            if s.mode != ServiceMode::Balance && s.protocol != Protocol::Tcp {
                self.err(&k("protocol"), format!("mode \"{mode}\" works on TCP only"));
            }
            // The pool / server a mode needs.
            match s.mode {
                ServiceMode::Balance | ServiceMode::Splice => {
                    match &s.pool {
                        None => self.err_near(
                            &base,
                            &k("pool"),
                            format!("mode \"{mode}\" needs a pool (the [[pool]] that serves it)"),
                        ),
                        Some(p) if cfg.pool.iter().all(|pl| &pl.name != p) => {
                            self.err(&k("pool"), format!("no [[pool]] named \"{p}\""))
                        }
                        _ => {}
                    }
                    if s.server.is_some() {
                        self.err(&k("server"), format!("only mode \"shadow\" uses a [[server]] pair (this service is \"{mode}\")"));
                    }
                }
                ServiceMode::Shadow => {
                    match &s.server {
                        None => self.err_near(
                            &base,
                            &k("server"),
                            "mode \"shadow\" needs server = the [[server]] pair that serves it",
                        ),
                        Some(n) if cfg.server.iter().all(|sv| &sv.name != n) => {
                            self.err(&k("server"), format!("no [[server]] named \"{n}\""))
                        }
                        _ => {}
                    }
                    if s.pool.is_some() {
                        self.err(
                            &k("pool"),
                            "mode \"shadow\" serves a [[server]] pair, not a pool",
                        );
                    }
                }
            }
            if !s.route.is_empty() && s.mode != ServiceMode::Splice {
                self.err(
                    &k("route"),
                    format!("routing rules need mode \"splice\" (this service is \"{mode}\")"),
                );
            }
            for (ri, r) in s.route.iter().enumerate() {
                let rb = format!("{base}.route[{ri}]");
                let pk = format!("{rb}.pool");
                if self.required(&pk) && cfg.pool.iter().all(|pl| pl.name != r.pool) {
                    self.err(&pk, format!("no [[pool]] named \"{}\"", r.pool));
                }
                if r.host.is_none()
                    && r.path_prefix.is_none()
                    && r.methods.is_empty()
                    && r.dst_ports.is_empty()
                {
                    self.err_near(
                        &rb,
                        &rb,
                        "a rule needs at least one of host, path_prefix, methods, dst_ports",
                    );
                }
                if let Some(h) = &r.host {
                    let name = h.strip_prefix("*.").unwrap_or(h);
                    let ok = !name.is_empty()
                        && name.len() <= 253
                        && name.split('.').all(|l| {
                            !l.is_empty()
                                && l.len() <= 63
                                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        })
                        || name.parse::<IpAddr>().is_ok();
                    if !ok {
                        self.err(&format!("{rb}.host"), format!("\"{h}\" is not a host name (\"www.example.com\" or \"*.example.com\")"));
                    }
                }
                if let Some(pp) = &r.path_prefix {
                    if !pp.starts_with('/') {
                        self.err(
                            &format!("{rb}.path_prefix"),
                            format!("must start with '/' (got \"{pp}\")"),
                        );
                    }
                }
                for (mi, m) in r.methods.iter().enumerate() {
                    if m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()) {
                        self.err(
                            &format!("{rb}.methods[{mi}]"),
                            format!("\"{m}\" is not an HTTP method (upper case, e.g. \"GET\")"),
                        );
                    }
                }
                for (di, d) in r.dst_ports.iter().enumerate() {
                    if !s
                        .ports
                        .iter()
                        .any(|p| p.first <= d.first && d.last <= p.last)
                    {
                        self.err(
                            &format!("{rb}.dst_ports[{di}]"),
                            format!("port {d} is not among the service's ports"),
                        );
                    }
                }
            }
            for (gi, g) in s.proxy_groups.iter().enumerate() {
                if cfg.proxy_group.iter().all(|pg| &pg.name != g) {
                    self.err(
                        &format!("{base}.proxy_groups[{gi}]"),
                        format!("no [[proxy_group]] named \"{g}\""),
                    );
                }
            }
            if s.mode == ServiceMode::Splice
                && s.fault_tolerance != FaultTolerance::None
                && !cfg.peer.iter().any(|p| p.class == PeerClass::Appliance)
            {
                self.warn(&k("fault_tolerance"), "no [[peer]] of class \"appliance\" to replicate splices to; connections survive only this appliance");
            }
            let t = &s.timeouts;
            let tk = |f: &str| format!("{base}.timeouts.{f}");
            self.range(&tk("connect_ms"), t.connect_ms, 10, 60_000);
            self.range(&tk("connect_attempts"), t.connect_attempts, 1, 10);
            self.range(&tk("first_request_ms"), t.first_request_ms, 100, 600_000);
            self.range(&tk("response_ms"), t.response_ms, 10, 600_000);
            self.range(&tk("idle_ms"), t.idle_ms, 1000, 86_400_000);
            self.range(&tk("half_closed_ms"), t.half_closed_ms, 1000, 86_400_000);
            self.range(&k("max_connections"), s.max_connections, 1, 16_777_216);
            self.range(
                &k("request_buffer_bytes"),
                s.request_buffer_bytes,
                512,
                1 << 20,
            );
            self.range(
                &k("resplice_log_bytes"),
                s.resplice_log_bytes,
                4096,
                256 << 20,
            );
            let role = s.mode.role();
            if !cfg.node.roles.contains(&role) && !self.p.is_broken("node.roles") {
                self.warn(&k("mode"), format!("mode \"{mode}\" is served by the \"{role}\" role, which this node does not have; ignored here"));
            }
        }
        self.unique("service name", names);
    }

    fn servers(&mut self) {
        let cfg = self.cfg;
        let mut names = Vec::new();
        let mut peers_used: HashMap<&str, String> = HashMap::new();
        for (i, sv) in cfg.server.iter().enumerate() {
            let base = format!("server[{i}]");
            let k = |f: &str| format!("{base}.{f}");
            let nk = k("name");
            if self.name(&nk, &sv.name, 64) {
                names.push((nk, sv.name.clone()));
            }
            if self.required(&k("via")) {
                self.usable_endpoint(&k("via"), &sv.via);
            }
            for (f, id) in [("primary", &sv.primary), ("backup", &sv.backup)] {
                let key = k(f);
                if !self.required(&key) {
                    continue;
                }
                match self.peer(id) {
                    None => self.err(&key, format!("no [[peer]] with id \"{id}\"")),
                    Some(pe) if pe.class != PeerClass::Server => {
                        self.err(&key, format!("peer \"{id}\" has class \"{}\"; server pairs need class \"server\" (it runs `tapsplice agent`)", pe.class.as_str()))
                    }
                    Some(_) => {
                        if let Some(first) = peers_used.get(id.as_str()) {
                            let first = first.clone();
                            self.err(&key, format!("peer \"{id}\" is already in a server pair ({first})"));
                        } else {
                            peers_used.insert(id, key.clone());
                        }
                    }
                }
            }
            if let (Some(a), Some(b)) = (sv.primary_mac, sv.backup_mac) {
                if a == b {
                    self.err(
                        &k("backup_mac"),
                        format!("the backup's MAC must differ from the primary's ({a})"),
                    );
                }
            }
            for (f, plug_f, dev, plug) in [
                ("fence", "fence_plug", &sv.fence, &sv.fence_plug),
                (
                    "backup_fence",
                    "backup_fence_plug",
                    &sv.backup_fence,
                    &sv.backup_fence_plug,
                ),
            ] {
                match dev {
                    Some(d) if cfg.fence_device.iter().all(|fd| &fd.name != d) => {
                        self.err(&k(f), format!("no [[fence_device]] named \"{d}\""))
                    }
                    None if plug.is_some() => self.err(
                        &k(plug_f),
                        format!("set {f} too (the device this plug belongs to)"),
                    ),
                    _ => {}
                }
            }
            if sv.promote_after == PromoteAfter::PowerOff && sv.fence.is_none() {
                let at = if self.present(&k("promote_after")) {
                    k("promote_after")
                } else {
                    base.clone()
                };
                self.err_near(
                    &at,
                    &k("fence"),
                    "promote_after = \"power_off\" needs a fence device for the primary: set fence (or promote_after = \"isolation\")",
                );
            }
            self.range(
                &k("hold_buffer_bytes"),
                sv.hold_buffer_bytes,
                64 << 10,
                256 << 20,
            );
            self.range(&k("max_delay_fin_ms"), sv.max_delay_fin_ms, 1, 60_000);
            if !sv.name.is_empty()
                && !cfg
                    .service
                    .iter()
                    .any(|s| s.server.as_deref() == Some(&sv.name))
            {
                self.warn(
                    &k("name"),
                    format!(
                        "no service with mode = \"shadow\" uses server \"{}\"",
                        sv.name
                    ),
                );
            }
        }
        self.unique("server name", names);
    }

    fn mirrors(&mut self) {
        let cfg = self.cfg;
        let mut names = Vec::new();
        let mut monitors = Vec::new();
        let pair_ports: Vec<&str> = cfg
            .forward
            .iter()
            .flat_map(|f| f.pairs.iter().flatten())
            .map(String::as_str)
            .collect();
        for (i, m) in cfg.mirror.iter().enumerate() {
            let base = format!("mirror[{i}]");
            let k = |f: &str| format!("{base}.{f}");
            let nk = k("name");
            if self.name(&nk, &m.name, 64) {
                names.push((nk, m.name.clone()));
            }
            if self.required(&k("sources")) && m.sources.is_empty() {
                self.err(&k("sources"), "needs at least one source port");
            }
            for (j, s) in m.sources.iter().enumerate() {
                self.usable_endpoint(&format!("{base}.sources[{j}]"), s);
            }
            if self.required(&k("monitor"))
                && self.usable_endpoint(&k("monitor"), &m.monitor).is_some()
            {
                if m.sources.contains(&m.monitor) {
                    self.err(
                        &k("monitor"),
                        format!("\"{}\" is also a source of this mirror", m.monitor),
                    );
                } else if pair_ports.contains(&m.monitor.as_str()) {
                    self.err(&k("monitor"), format!("\"{}\" is in a forward pair; a monitor port carries mirrored copies only", m.monitor));
                } else if cfg.mirror.iter().any(|o| o.sources.contains(&m.monitor)) {
                    self.err(&k("monitor"), format!("\"{}\" is a mirror source; a monitor port carries mirrored copies only", m.monitor));
                }
                monitors.push((k("monitor"), m.monitor.clone()));
            }
            self.pow2(&k("ring_size"), m.ring_size, 64, 65536);
            if m.snaplen != 0 {
                self.range(&k("snaplen"), m.snaplen, 64, u16::MAX);
            }
        }
        self.unique("mirror name", names);
        self.unique("monitor port", monitors);
    }

    fn timers_keys_ctl(&mut self) {
        let cfg = self.cfg;
        let t = &cfg.timers;
        self.range(
            "timers.heartbeat_interval_ms",
            t.heartbeat_interval_ms,
            5,
            60_000,
        );
        self.range("timers.missed_intervals", t.missed_intervals, 1, 100);
        for (f, v) in [
            ("appliance", t.missed_by_class.appliance),
            ("proxy", t.missed_by_class.proxy),
            ("server", t.missed_by_class.server),
        ] {
            if let Some(v) = v {
                self.range(&format!("timers.missed_by_class.{f}"), v, 1, 100);
            }
        }
        if t.flap_window_ms < t.heartbeat_interval_ms || t.flap_window_ms > 3_600_000 {
            self.err(
                "timers.flap_window_ms",
                format!(
                    "must be between heartbeat_interval_ms ({}) and 3600000 (got {})",
                    t.heartbeat_interval_ms, t.flap_window_ms
                ),
            );
        }
        self.range(
            "timers.flap_max_transitions",
            t.flap_max_transitions,
            1,
            1000,
        );
        self.range(
            "timers.flap_hold_down_ms",
            t.flap_hold_down_ms,
            0,
            3_600_000,
        );
        if !(t.weight_smoothing > 0.0 && t.weight_smoothing <= 1.0) {
            self.err(
                "timers.weight_smoothing",
                format!(
                    "must be greater than 0 and at most 1 (got {})",
                    t.weight_smoothing
                ),
            );
        }
        self.range(
            "timers.resync_timeout_ms",
            t.resync_timeout_ms,
            100,
            600_000,
        );

        let keys = &cfg.keys;
        if let Some(p) = &keys.rack_key {
            self.abs_path("keys.rack_key", p);
        } else if !cfg.peer.is_empty() {
            self.err_near("peer[0]", "keys.rack_key", "peers are configured and heartbeats are authenticated with the rack key: set keys.rack_key to its file");
        }
        if let Some(p) = &keys.syn_cookie_secret {
            self.abs_path("keys.syn_cookie_secret", p);
        } else if let Some(i) = cfg
            .service
            .iter()
            .position(|s| s.mode == ServiceMode::Splice)
        {
            self.err_near(&format!("service[{i}].mode"), "keys.syn_cookie_secret", "splice services answer handshakes with SYN cookies: set keys.syn_cookie_secret to the rack's secret file");
        }
        // A cookie is good for two 64 s slots; a shorter period would retire keys while
        // cookies made with them are still valid.
        self.range(
            "keys.syn_cookie_rotation_s",
            keys.syn_cookie_rotation_s,
            64,
            86_400,
        );

        let sp = &cfg.splice;
        self.range("splice.wscale", u32::from(sp.wscale), 0, 14);
        self.range("splice.mss", u32::from(sp.mss), 536, 9000);
        self.range("splice.handshakes", sp.handshakes, 1, 1 << 20);
        if cfg.service.iter().any(|s| s.mode == ServiceMode::Splice) {
            let smallest = cfg.port.iter().map(|p| p.mtu).chain(cfg.bond.iter().map(|b| b.mtu)).min();
            if let Some(mtu) = smallest.filter(|&m| u32::from(sp.mss) + 40 > u32::from(m)) {
                self.err("splice.mss", format!("{} does not fit the smallest port MTU {mtu} (at most {}): the appliance does not re-segment", sp.mss, mtu.saturating_sub(40)));
            }
            // Each worker lcore takes its own slice of the NAT ports, and the port of a
            // backend's reply names the lcore that holds the splice.
            let workers = cfg.worker_lcores().len();
            let ports = (u32::from(sp.nat_ports.last) + 1).saturating_sub(u32::from(sp.nat_ports.first));
            let split = u16::try_from(workers).ok().and_then(|w| dataplane::splice::table::NatSlices::new(sp.nat_ports.first, sp.nat_ports.last, w));
            if workers > 1 && split.is_none() {
                self.err("splice.nat_ports", format!("{ports} ports cannot be split between {workers} worker lcores (each takes its own slice)"));
            }
            if let Some(i) = cfg.service.iter().position(|s| s.mode == ServiceMode::Splice && s.nat == NatMode::Transparent).filter(|_| workers > 1) {
                self.err(
                    &format!("service[{i}].nat"),
                    format!("transparent splicing needs one worker lcore (eal.lcores names {workers}): a backend's reply to the client's own address names no lcore, so it cannot be handed to the one that holds the splice; use \"fullnat\""),
                );
            }
        }

        let s = &cfg.ctl.socket;
        self.abs_path("ctl.socket", s);
        if s.as_os_str().len() > 107 {
            self.err(
                "ctl.socket",
                format!(
                    "is {} bytes long; a Unix socket path must be at most 107",
                    s.as_os_str().len()
                ),
            );
        }
        if cfg.metrics.enabled && !cfg.metrics.listen.ip().is_loopback() {
            self.warn(
                "metrics.listen",
                format!(
                    "{} is not a loopback address: the metrics are exposed to the network",
                    cfg.metrics.listen
                ),
            );
        }
    }

    /// Every role needs something to do.
    fn roles(&mut self) {
        let cfg = self.cfg;
        if self.p.is_broken("node.roles") {
            return;
        }
        for (i, r) in cfg.node.roles.iter().enumerate() {
            let key = format!("node.roles[{i}]");
            let ok = match r {
                Role::Forward => true, // checked with [forward]
                Role::Balance => cfg.service.iter().any(|s| s.mode == ServiceMode::Balance),
                Role::Splice => cfg.service.iter().any(|s| s.mode == ServiceMode::Splice),
                Role::Tap => {
                    !cfg.mirror.is_empty()
                        || cfg.service.iter().any(|s| s.mode == ServiceMode::Shadow)
                }
            };
            if !ok {
                let need = match r {
                    Role::Balance => "a [[service]] with mode = \"balance\"",
                    Role::Splice => "a [[service]] with mode = \"splice\"",
                    _ => "a [[mirror]] or a [[service]] with mode = \"shadow\"",
                };
                self.err(&key, format!("role \"{r}\" needs {need}"));
            }
        }
    }
}
