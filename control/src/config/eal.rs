//! DPDK-facing helpers: lcore lists, device names (PCI address or vdev) and the EAL argv.

use super::schema::RackConfig;

/// Highest lcore id plus one that Debian's DPDK is built for (`RTE_MAX_LCORE`).
pub const MAX_LCORE: u32 = 128;

/// Highest CPU id an lcore may be pinned to with `N@CPU` (`CPU_SETSIZE` - 1).
pub const MAX_CPU: u32 = 1023;

/// Parses a DPDK lcore list (`"0,1"`, `"0-3"`, `"0,2-3"`) into ids in the order written;
/// the first one is the main lcore. A single lcore may name the CPU it runs on, `N@CPU`
/// (DPDK's `--lcores` form), so that more lcores than CPUs can run: `"0@0,1@0,2@1"` is a
/// main lcore and two workers on a 2-CPU machine.
pub fn parse_lcores(s: &str) -> Result<Vec<u32>, String> {
    let mut out: Vec<u32> = Vec::new();
    if s.trim().is_empty() {
        return Err("is empty; write lcore ids like \"0,1\" or \"0-3\"".into());
    }
    let num = |t: &str| -> Result<u32, String> {
        let t = t.trim();
        // Digits only: Rust's parse takes a leading '+', which DPDK's --lcores does not.
        match t.parse::<u32>().ok().filter(|_| t.bytes().all(|b| b.is_ascii_digit())).ok_or(()) {
            Ok(n) if n < MAX_LCORE => Ok(n),
            Ok(n) => Err(format!("lcore {n} is out of range (ids are 0..={})", MAX_LCORE - 1)),
            Err(_) => Err(format!(
                "\"{t}\" is not an lcore id; write lcore ids like \"0,1\" or \"0-3\" (first = main lcore)"
            )),
        }
    };
    for part in s.split(',') {
        let part = match part.split_once('@') {
            Some((lcore, cpu)) => {
                let cpu = cpu.trim();
                if cpu.is_empty() || !cpu.bytes().all(|b| b.is_ascii_digit()) || !cpu.parse::<u32>().is_ok_and(|c| c <= MAX_CPU) {
                    return Err(format!("\"{}\": after @ comes one CPU id (0..={MAX_CPU})", part.trim()));
                }
                if lcore.contains('-') {
                    return Err(format!("\"{}\": only a single lcore can name its CPU (N@CPU)", part.trim()));
                }
                lcore
            }
            None => part,
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if a > b {
            return Err(format!(
                "range \"{}\" is empty (first lcore above the last)",
                part.trim()
            ));
        }
        for n in a..=b {
            if out.contains(&n) {
                return Err(format!("lcore {n} is listed twice"));
            }
            out.push(n);
        }
    }
    Ok(out)
}

/// What a port's `device` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A PCI device, full form `DDDD:BB:DD.F`.
    Pci(String),
    /// A virtual device (`--vdev`).
    Vdev { driver: VdevDriver, name: String },
}

/// The vdev drivers tapsplice knows; others are passed to DPDK with a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VdevDriver {
    Tap,
    Ring,
    VirtioUser,
    Vhost,
    Bonding,
    /// AF_PACKET on a kernel interface (a veth end, say): `iface=` names it.
    AfPacket,
    /// AF_XDP on a kernel interface: an XDP program steers the interface's frames into
    /// the appliance's socket before the kernel's stack sees them; `iface=` names it.
    AfXdp,
    Other,
}

impl VdevDriver {
    pub fn prefix(&self) -> &'static str {
        match self {
            VdevDriver::Tap => "net_tap",
            VdevDriver::Ring => "net_ring",
            VdevDriver::VirtioUser => "net_virtio_user",
            VdevDriver::Vhost => "net_vhost",
            VdevDriver::Bonding => "net_bonding",
            VdevDriver::AfPacket => "net_af_packet",
            VdevDriver::AfXdp => "net_af_xdp",
            VdevDriver::Other => "net_",
        }
    }
}

/// The kernel interface a socket port (net_af_packet, net_af_xdp) reads: its `iface=`.
/// `None` for every other device (a TAP's `iface=` is one the PMD creates).
pub fn socket_port_iface<'a>(device: &str, args: &'a str) -> Option<&'a str> {
    match classify_device(device) {
        Ok(DeviceKind::Vdev { driver: VdevDriver::AfPacket | VdevDriver::AfXdp, .. }) => {
            args.split(',').find_map(|kv| kv.strip_prefix("iface=")).filter(|i| !i.is_empty())
        }
        _ => None,
    }
}

/// Whether `s` is a full PCI address `DDDD:BB:DD.F` (device ≤ 1f, function ≤ 7).
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(|c| c.is_ascii_hexdigit());
    b.len() == 12
        && hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && (b'0'..=b'7').contains(&b[11])
        && u8::from_str_radix(&s[8..10], 16)
            .map(|d| d <= 0x1f)
            .unwrap_or(false)
}

fn looks_like_pci(s: &str) -> bool {
    s.contains(':')
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
}

/// Classifies a port's `device`.
pub fn classify_device(dev: &str) -> Result<DeviceKind, String> {
    if dev.is_empty() {
        return Err("must not be empty; give a PCI address (\"0000:03:00.0\") or a vdev name (\"net_tap0\")".into());
    }
    if let Some(rest) = dev.strip_prefix("net_") {
        if dev.contains(',') {
            return Err(format!(
                "\"{dev}\": put the driver arguments in `args`, not in `device`"
            ));
        }
        if rest.is_empty() || !dev.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("\"{dev}\" is not a vdev name (letters, digits and _ after \"net_\", e.g. \"net_tap0\")"));
        }
        let driver = [
            VdevDriver::VirtioUser,
            VdevDriver::Bonding,
            VdevDriver::Vhost,
            VdevDriver::Ring,
            VdevDriver::Tap,
            VdevDriver::AfPacket,
            VdevDriver::AfXdp,
        ]
        .into_iter()
        .find(|d| dev.starts_with(d.prefix()))
        .unwrap_or(VdevDriver::Other);
        return Ok(DeviceKind::Vdev {
            driver,
            name: dev.to_owned(),
        });
    }
    if looks_like_pci(dev) {
        if is_pci_address(dev) {
            return Ok(DeviceKind::Pci(dev.to_ascii_lowercase()));
        }
        let hint = if dev.len() == 7 && is_pci_address(&format!("0000:{dev}")) {
            format!(" (with its domain: \"0000:{dev}\")")
        } else {
            String::new()
        };
        return Err(format!(
            "\"{dev}\" is not a PCI address of the form DDDD:BB:DD.F{hint}"
        ));
    }
    Err(format!(
        "\"{dev}\" is neither a PCI address (\"0000:03:00.0\") nor a DPDK vdev name (net_tap0, net_ring0, net_virtio_user0, net_vhost0, ...)"
    ))
}

/// A port the roles see: a plain `[[port]]` or a `[[bond]]` over member ports.
#[derive(Clone, Copy, Debug)]
pub enum DataplanePort<'a> {
    Port(&'a super::schema::PortConfig),
    Bond(&'a super::schema::BondConfig),
}

impl DataplanePort<'_> {
    pub fn name(&self) -> &str {
        match self {
            DataplanePort::Port(p) => &p.name,
            DataplanePort::Bond(b) => &b.name,
        }
    }
}

impl RackConfig {
    /// The EAL argv: `program -l <lcores> --main-lcore <first> -m <MB> [--no-huge]
    /// --file-prefix <p> (-a <pci>[,devargs])... | --no-pci, --vdev <dev>[,args]...,
    /// bond vdevs, extra_args...`.
    pub fn eal_args(&self, program: &str) -> Vec<String> {
        let mut a: Vec<String> = vec![program.to_owned()];
        let lcores: String = self
            .eal
            .lcores
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        // `N@CPU` pins lcores to CPUs: DPDK takes that form with --lcores only.
        let flag = if lcores.contains('@') { "--lcores" } else { "-l" };
        a.extend([
            flag.into(),
            lcores,
            "--main-lcore".into(),
            self.main_lcore().to_string(),
        ]);
        a.extend(["-m".into(), self.eal.memory_mb.to_string()]);
        if !self.eal.hugepages {
            a.push("--no-huge".into());
        }
        a.extend(["--file-prefix".into(), self.eal.file_prefix.clone()]);

        // PCI allow list: the explicit entries, then every port on a PCI device.
        let mut pci: Vec<(String, String)> = Vec::new(); // (address, full argument)
        for e in &self.eal.pci_allow {
            let addr = e.split(',').next().unwrap_or("").to_ascii_lowercase();
            if !pci.iter().any(|(p, _)| *p == addr) {
                pci.push((addr, e.clone()));
            }
        }
        for p in &self.port {
            if let Ok(DeviceKind::Pci(addr)) = classify_device(&p.device) {
                let arg = if p.args.is_empty() {
                    addr.clone()
                } else {
                    format!("{addr},{}", p.args)
                };
                match pci.iter_mut().find(|(a, _)| *a == addr) {
                    Some(entry) => {
                        if !p.args.is_empty() && !entry.1.contains(',') {
                            entry.1 = arg;
                        }
                    }
                    None => pci.push((addr, arg)),
                }
            }
        }
        if pci.is_empty() {
            a.push("--no-pci".into());
        }
        for (_, arg) in pci {
            a.extend(["-a".into(), arg]);
        }

        for p in &self.port {
            if let Ok(DeviceKind::Vdev { name, .. }) = classify_device(&p.device) {
                let v = if p.args.is_empty() {
                    name
                } else {
                    format!("{name},{}", p.args)
                };
                a.extend(["--vdev".into(), v]);
            }
        }
        for b in &self.bond {
            let mut v = format!("{},mode={}", b.vdev_name(), b.mode.dpdk_mode());
            for m in &b.members {
                if let Some(p) = self.port.iter().find(|p| &p.name == m) {
                    v.push_str(&format!(",slave={}", p.device.to_ascii_lowercase()));
                }
            }
            if let Some(p) = b
                .primary
                .as_ref()
                .and_then(|n| self.port.iter().find(|p| &p.name == n))
            {
                v.push_str(&format!(",primary={}", p.device.to_ascii_lowercase()));
            }
            if b.mode != super::schema::BondMode::ActiveBackup {
                v.push_str(&format!(",xmit_policy={}", b.xmit_hash.as_str()));
            }
            a.extend(["--vdev".into(), v]);
        }
        a.extend(self.eal.extra_args.iter().cloned());
        a
    }

    /// All lcores of `eal.lcores` in the order written (empty if it does not parse; a
    /// validated configuration always parses).
    pub fn lcores(&self) -> Vec<u32> {
        parse_lcores(&self.eal.lcores).unwrap_or_default()
    }

    /// The main lcore: the first one of `eal.lcores`. It runs the control thread.
    pub fn main_lcore(&self) -> u32 {
        self.lcores().first().copied().unwrap_or(0)
    }

    /// The worker lcores: every lcore of `eal.lcores` after the first, in order.
    pub fn worker_lcores(&self) -> Vec<u32> {
        self.lcores().into_iter().skip(1).collect()
    }

    /// The dataplane ports as the roles see them, in port-index order: every `[[port]]`
    /// that is no bond's member, in file order, then every `[[bond]]` (a bond's members
    /// are driven by the bonding PMD, never by the appliance).
    pub fn dataplane_ports(&self) -> Vec<DataplanePort<'_>> {
        let member = |name: &str| self.bond.iter().any(|b| b.members.iter().any(|m| m == name));
        self.port
            .iter()
            .filter(|p| !member(&p.name))
            .map(DataplanePort::Port)
            .chain(self.bond.iter().map(DataplanePort::Bond))
            .collect()
    }

    /// The port index the roles use for the `[[port]]` or `[[bond]]` named `name` (its
    /// position in [`RackConfig::dataplane_ports`]); `None` for a bond member.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.dataplane_ports().iter().position(|p| p.name() == name)
    }

    /// Whether a `[[port]]` section is named `name` (bond member or not).
    pub fn has_port(&self, name: &str) -> bool {
        self.port.iter().any(|p| p.name == name)
    }

    /// Position of the `[[bond]]` named `name`.
    pub fn bond_index(&self, name: &str) -> Option<usize> {
        self.bond.iter().position(|b| b.name == name)
    }

    /// Whether `node.roles` contains `role`.
    pub fn has_role(&self, role: super::schema::Role) -> bool {
        self.node.roles.contains(&role)
    }

    /// `[forward] pairs` as port indexes (ports and bonds).
    pub fn forward_pairs(&self) -> Vec<(usize, usize)> {
        self.forward
            .iter()
            .flat_map(|f| f.pairs.iter())
            .filter_map(|[a, b]| Some((self.port_index(a)?, self.port_index(b)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcore_lists() {
        assert_eq!(parse_lcores("0,1").unwrap(), vec![0, 1]);
        assert_eq!(parse_lcores("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_lcores(" 2, 0-1 ").unwrap(), vec![2, 0, 1]);
        assert!(parse_lcores("").is_err());
        assert!(parse_lcores("0,0").unwrap_err().contains("twice"));
        assert!(parse_lcores("3-1").is_err());
        assert!(parse_lcores("a").is_err());
        assert!(parse_lcores("500").unwrap_err().contains("out of range"));
        assert_eq!(parse_lcores("0@0, 1@0,2@1").unwrap(), vec![0, 1, 2]);
        assert!(parse_lcores("1-2@1").unwrap_err().contains("single lcore"));
        assert!(parse_lcores("1@x").unwrap_err().contains("one CPU id"));
        assert!(parse_lcores("1@+1").unwrap_err().contains("one CPU id"));
        assert!(parse_lcores("0,+1@0").is_err());
        assert!(parse_lcores("1@0,1@1").unwrap_err().contains("twice"));
    }

    #[test]
    fn devices() {
        assert_eq!(
            classify_device("0000:03:00.0").unwrap(),
            DeviceKind::Pci("0000:03:00.0".into())
        );
        assert!(classify_device("03:00.0")
            .unwrap_err()
            .contains("0000:03:00.0"));
        assert!(classify_device("0000:03:20.0").is_err());
        assert!(classify_device("0000:03:00.8").is_err());
        assert!(matches!(
            classify_device("net_tap0").unwrap(),
            DeviceKind::Vdev {
                driver: VdevDriver::Tap,
                ..
            }
        ));
        assert!(matches!(
            classify_device("net_virtio_user3").unwrap(),
            DeviceKind::Vdev {
                driver: VdevDriver::VirtioUser,
                ..
            }
        ));
        assert!(matches!(
            classify_device("net_af_packet1").unwrap(),
            DeviceKind::Vdev {
                driver: VdevDriver::AfPacket,
                ..
            }
        ));
        assert_eq!(socket_port_iface("net_af_xdp0", "queue_count=1,iface=veth0"), Some("veth0"));
        assert_eq!(socket_port_iface("net_af_packet1", "iface=v1,qpairs=1"), Some("v1"));
        assert_eq!(socket_port_iface("net_tap0", "iface=tap0"), None, "the PMD makes a TAP's interface");
        assert_eq!(socket_port_iface("net_af_xdp0", "queue_count=1"), None);
        assert!(matches!(
            classify_device("net_af_xdp0").unwrap(),
            DeviceKind::Vdev {
                driver: VdevDriver::AfXdp,
                ..
            }
        ));
        assert!(matches!(
            classify_device("net_null0").unwrap(),
            DeviceKind::Vdev {
                driver: VdevDriver::Other,
                ..
            }
        ));
        assert!(classify_device("net_tap0,iface=x")
            .unwrap_err()
            .contains("args"));
        assert!(classify_device("eth0").is_err());
    }
}
