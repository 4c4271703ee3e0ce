//! From a validated rack configuration to what `run` does: EAL arguments, ports, workers
//! and the role wiring. Pure, so it is unit-tested without DPDK.

use crate::config::{classify_device, is_pci_address, socket_port_iface, BondMode, DataplanePort, DeviceKind, RackConfig, Role, VdevDriver};
use std::net::Ipv4Addr;

/// Port index as roles see it (position in [`RackConfig::dataplane_ports`]: the ports that
/// are no bond's member, then the bonds).
pub type PortIndex = u16;

/// Everything `run` needs, derived from the rack configuration.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub node_id: String,
    pub role: String,
    pub eal_args: Vec<String>,
    pub file_prefix: String,
    pub hugepages: bool,
    pub memory_mb: u32,
    /// Worker lcore ids (the main lcore runs the control thread).
    pub workers: Vec<u32>,
    pub mbufs: u32,
    pub mempool_cache: u32,
    pub data_room: u16,
    pub burst: u16,
    pub idle_backoff: bool,
    pub idle_polls: u32,
    pub idle_max_sleep_us: u32,
    pub ports: Vec<PlanPort>,
    /// Forward role: pairs of port indexes.
    pub pairs: Vec<(PortIndex, PortIndex)>,
    /// `[ctl] socket`.
    pub ctl_socket: std::path::PathBuf,
    /// Heartbeats and failure detection; `None` for a rack without `[[peer]]`.
    pub membership: Option<crate::membership::MembershipPlan>,
    /// Nodes `tapsplice ctl fence` can power off, with their fence devices.
    pub fence_targets: Vec<crate::fencing::FenceTarget>,
    /// Balance role: the balanced services.
    pub balance: Vec<crate::balancer::ServicePlan>,
    /// Splice role: its services, settings and cookie secret.
    pub splice: Option<crate::splicer::SplicePlan>,
    /// `[[server]]` pairs for the takeover logic.
    pub server_pairs: Vec<crate::takeover::PairSpec>,
    /// `[metrics] listen`, `None` when `[metrics] enabled = false`.
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct PlanPort {
    pub name: String,
    pub device: String,
    /// Whether `device` is a PCI address (else a vdev name).
    pub is_pci: bool,
    /// The kernel interface a socket port (net_af_packet, net_af_xdp) reads.
    pub kernel_iface: Option<String>,
    pub rx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub promiscuous: bool,
    pub mtu: u16,
    /// The appliance's own IPv4 addresses on this port (answered for ARP and ICMP echo),
    /// with their prefix lengths.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// `Some` for a `[[bond]]`: `device` is then the bonding vdev EAL creates over the
    /// members (see `RackConfig::eal_args`).
    pub bond: Option<PlanBond>,
}

/// A bonding device's make-up.
#[derive(Clone, Debug)]
pub struct PlanBond {
    pub mode: BondMode,
    /// active-backup: the member (name) preferred while its link is up.
    pub primary: Option<String>,
    /// The member ports: their names and DPDK devices (EAL's spelling).
    pub members: Vec<PlanMember>,
}

#[derive(Clone, Debug)]
pub struct PlanMember {
    pub name: String,
    pub device: String,
    pub is_pci: bool,
    pub kernel_iface: Option<String>,
}

impl PlanBond {
    /// The `[[port]]` name of the member whose DPDK device is `device`.
    pub fn member_name(&self, device: &str) -> Option<&str> {
        self.members.iter().find(|m| m.device == device).map(|m| m.name.as_str())
    }
}

impl PlanPort {
    /// Whether the port needs as many RX as TX queues, each RX queue paired with the TX
    /// queue of its number: net_tap does (one kernel queue each), and so do the socket
    /// ports (an AF_XDP socket is one RX and one TX ring; AF_PACKET opens every queue
    /// pair's socket in one fanout group, so each must be polled); a bond configures its
    /// members with its own queue counts.
    pub fn paired_queues(&self) -> bool {
        let paired = |d: &str| matches!(classify_device(d), Ok(DeviceKind::Vdev { driver: VdevDriver::Tap | VdevDriver::AfPacket | VdevDriver::AfXdp, .. }));
        match &self.bond {
            Some(b) => b.members.iter().any(|m| paired(&m.device)),
            None => paired(&self.device),
        }
    }

    /// The devices preflight must check: the port's own, or a bond's members'.
    pub fn devices(&self) -> Vec<crate::preflight::PortNeed<'_>> {
        use crate::preflight::PortNeed;
        match &self.bond {
            Some(b) => b.members.iter().map(|m| PortNeed { name: &m.name, device: &m.device, is_pci: m.is_pci, kernel_iface: m.kernel_iface.as_deref() }).collect(),
            None => vec![PortNeed { name: &self.name, device: &self.device, is_pci: self.is_pci, kernel_iface: self.kernel_iface.as_deref() }],
        }
    }
}

/// EAL spells PCI addresses in lower case.
fn eal_device(device: &str) -> String {
    if is_pci_address(device) {
        device.to_ascii_lowercase()
    } else {
        device.to_string()
    }
}

/// The role sets `run` can start in this release (`check` accepts the whole rack schema):
/// `forward`; `balance` or `splice`, alone or with `forward` for the traffic that is not
/// for a VIP.
fn runnable_role(roles: &[Role]) -> Option<Role> {
    match roles {
        [Role::Forward] => Some(Role::Forward),
        [Role::Balance] | [Role::Balance, Role::Forward] | [Role::Forward, Role::Balance] => Some(Role::Balance),
        [Role::Splice] | [Role::Splice, Role::Forward] | [Role::Forward, Role::Splice] => Some(Role::Splice),
        _ => None,
    }
}

pub fn from_config(cfg: &RackConfig) -> Result<RunPlan, String> {
    let roles = &cfg.node.roles;
    let Some(role) = runnable_role(roles) else {
        let list: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(format!(
            "{}: node.roles = {:?}: this release runs `forward`, or `balance` or `splice` (each alone or with `forward` for other traffic); tap, and balance with splice on one node, are accepted by `tapsplice check` but not implemented yet",
            cfg.source, list
        ));
    };
    let workers = cfg.worker_lcores();
    if workers.is_empty() {
        return Err(format!("{}: eal.lcores = {:?} names no worker lcore (the first lcore is the control lcore)", cfg.source, cfg.eal.lcores));
    }
    let ports = cfg
        .dataplane_ports()
        .into_iter()
        .map(|d| match d {
            DataplanePort::Port(p) => PlanPort {
                name: p.name.clone(),
                device: eal_device(&p.device),
                is_pci: is_pci_address(&p.device),
                kernel_iface: socket_port_iface(&p.device, &p.args).map(str::to_string),
                rx_queues: p.rx_queues,
                rx_desc: p.rx_desc,
                tx_desc: p.tx_desc,
                promiscuous: p.promiscuous,
                mtu: p.mtu,
                ipv4: p.addresses.iter().filter_map(|c| Some((c.ipv4()?, c.prefix_len))).collect(),
                bond: None,
            },
            DataplanePort::Bond(b) => PlanPort {
                name: b.name.clone(),
                device: b.vdev_name(),
                is_pci: false,
                kernel_iface: None,
                rx_queues: b.rx_queues,
                rx_desc: b.rx_desc,
                tx_desc: b.tx_desc,
                promiscuous: b.promiscuous,
                mtu: b.mtu,
                ipv4: b.addresses.iter().filter_map(|c| Some((c.ipv4()?, c.prefix_len))).collect(),
                bond: Some(PlanBond {
                    mode: b.mode,
                    primary: b.primary.clone(),
                    members: b
                        .members
                        .iter()
                        .filter_map(|m| cfg.port.iter().find(|p| &p.name == m))
                        .map(|p| PlanMember {
                            name: p.name.clone(),
                            device: eal_device(&p.device),
                            is_pci: is_pci_address(&p.device),
                            kernel_iface: socket_port_iface(&p.device, &p.args).map(str::to_string),
                        })
                        .collect(),
                }),
            },
        })
        .collect();
    Ok(RunPlan {
        node_id: cfg.node.id.clone(),
        role: role.as_str().to_string(),
        eal_args: cfg.eal_args("tapsplice"),
        file_prefix: cfg.eal.file_prefix.clone(),
        hugepages: cfg.eal.hugepages,
        memory_mb: cfg.eal.memory_mb,
        workers,
        mbufs: cfg.mempool.mbufs,
        mempool_cache: cfg.mempool.cache,
        data_room: cfg.mempool.data_room,
        burst: cfg.workers.burst,
        idle_backoff: cfg.workers.idle_backoff,
        idle_polls: cfg.workers.idle_polls,
        idle_max_sleep_us: cfg.workers.idle_max_sleep_us,
        ports,
        pairs: cfg.forward_pairs().into_iter().map(|(a, b)| (a as PortIndex, b as PortIndex)).collect(),
        ctl_socket: cfg.ctl.socket.clone(),
        membership: crate::membership::MembershipPlan::from_config(cfg)?,
        fence_targets: crate::fencing::targets(cfg),
        balance: if role == Role::Balance { crate::balancer::services(cfg, crate::config::ServiceMode::Balance)? } else { Vec::new() },
        splice: if role == Role::Splice { Some(crate::splicer::SplicePlan::from_config(cfg)?) } else { None },
        server_pairs: crate::takeover::PairSpec::from_config(cfg, &crate::fencing::targets(cfg)),
        metrics: cfg.metrics.enabled.then_some(cfg.metrics.listen),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> RackConfig {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/forward.toml");
        crate::config::load(std::path::Path::new(path)).expect("the forward example is valid")
    }

    #[test]
    fn the_forward_example_plans_one_worker_and_one_pair() {
        let plan = from_config(&example()).unwrap();
        assert_eq!(plan.role, "forward");
        assert_eq!(plan.workers, vec![1]);
        assert_eq!(plan.pairs, vec![(0, 1)]);
        assert_eq!(plan.ports.len(), 2);
        assert_eq!(plan.ports[0].ipv4, vec![(Ipv4Addr::new(10, 99, 0, 254), 24)]);
        assert!(!plan.ports[0].is_pci);
        assert!(plan.eal_args.contains(&"--no-pci".to_string()));
    }

    #[test]
    fn the_balance_example_plans_its_service_members_ports_and_in_band_peers() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/balance-taps.toml");
        let cfg = crate::config::load(std::path::Path::new(path)).expect("the balance example is valid");
        let plan = from_config(&cfg).unwrap();
        assert_eq!(plan.role, "balance");
        assert_eq!(plan.pairs, vec![(0, 1)], "balance + forward bridges other traffic");
        let s = &plan.balance[0];
        assert_eq!((s.vip, s.protocol, s.ports.clone(), s.client_port), (Ipv4Addr::new(10, 55, 0, 100), 6, vec![(80, 80), (443, 443)], Some(0)));
        assert_eq!(s.members.iter().map(|m| (m.port, m.weight)).collect::<Vec<_>>(), vec![(1, 100), (1, 100), (1, 200)]);
        assert_eq!(s.members[0].peer.as_deref(), Some("m1"));
        let m = plan.membership.unwrap();
        assert_eq!(m.inband_ports(), vec![1]);
        // Splice alongside balance is not runnable yet.
        let mut cfg = cfg;
        cfg.node.roles.push(Role::Splice);
        assert!(from_config(&cfg).is_err());
    }

    /// configs/balance.toml: the uplink is a bond over up0 and up1; the roles see the
    /// ports that are no member (proxies) and then the bond.
    #[test]
    fn bonds_replace_their_members_in_the_port_list() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/balance.toml");
        let cfg = crate::config::load(std::path::Path::new(path)).expect("the bond example is valid");
        let plan = from_config(&cfg).unwrap();
        let names: Vec<&str> = plan.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["proxies", "uplink"]);
        let bond = &plan.ports[1];
        assert_eq!(bond.device, "net_bonding_uplink");
        let b = bond.bond.as_ref().unwrap();
        assert_eq!(b.mode, BondMode::Lacp);
        assert_eq!(b.members.iter().map(|m| (m.name.as_str(), m.device.as_str())).collect::<Vec<_>>(), [("up0", "net_tap0"), ("up1", "net_tap1")]);
        assert!(bond.paired_queues(), "net_tap members: as many RX as TX queues");
        assert_eq!(bond.devices().len(), 2, "preflight checks the members");
        assert_eq!(bond.ipv4, vec![(Ipv4Addr::new(10, 0, 0, 2), 24)]);
        // The pool faces port 0 (proxies) now, the bond is port 1.
        assert_eq!(cfg.port_index("uplink"), Some(1));
        assert_eq!(cfg.port_index("up0"), None, "a member is not a port of its own");
        assert!(plan.balance[0].members.iter().all(|m| m.port == 0));
        let eal = plan.eal_args.join(" ");
        assert!(eal.contains("net_bonding_uplink,mode=4,slave=net_tap0,slave=net_tap1,xmit_policy=l34"), "{eal}");
    }

    #[test]
    fn roles_not_implemented_yet_are_refused_with_a_reason() {
        let mut cfg = example();
        cfg.node.roles = vec![Role::Tap];
        let e = from_config(&cfg).unwrap_err();
        assert!(e.contains("not implemented yet"), "{e}");
        // Splice runs, but needs a splice service.
        cfg.node.roles = vec![Role::Splice];
        let e = from_config(&cfg).unwrap_err();
        assert!(e.contains("no [[service]] has mode = \"splice\""), "{e}");
    }

    /// configs/splice-taps.toml: one port-routed splice service over two
    /// backends on the `backends` port; clients on the other port.
    #[test]
    fn the_splice_rack_plans_its_service_backends_and_client_port() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/splice-taps.toml");
        let cfg = crate::config::load(std::path::Path::new(path)).expect("the splice rack is valid");
        let plan = from_config(&cfg).unwrap();
        assert_eq!(plan.role, "splice");
        let sp = plan.splice.expect("a splice plan");
        assert_eq!(sp.specs.len(), 1);
        let s = &sp.specs[0];
        assert_eq!((s.vip, s.ports.clone(), s.connect_ms, s.connect_attempts), (Ipv4Addr::new(10, 0, 0, 100), vec![(80, 80), (8080, 8080)], 1000, 3));
        let pools = sp.pools();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].backends, vec![(Ipv4Addr::new(10, 1, 0, 21), None), (Ipv4Addr::new(10, 1, 0, 22), None)]);
        assert!(!pools[0].least_connections);
        assert_eq!(s.rules.default_pool, 0);
        assert!(sp.services[0].members.iter().all(|m| m.port == 1));
        assert_eq!(sp.client_ports(2), vec![0]);
        assert_eq!((sp.mss, sp.wscale, sp.nat_ports, sp.capacity()), (1460, 7, (20_000, 59_999), 65_536));
        // A route to another pool gets its own table.
        let mut cfg = cfg;
        cfg.pool.push(crate::config::PoolConfig {
            name: "static".into(),
            via: Some("backends".into()),
            members: vec![crate::config::PoolMember { address: "10.1.0.31".parse().unwrap(), port: Some(8081), ..Default::default() }],
            selection: crate::config::PoolSelection::LeastConnections,
        });
        cfg.service[0].route.push(crate::config::RouteRule { host: Some("*.static.example".into()), pool: "static".into(), ..Default::default() });
        let sp = from_config(&cfg).unwrap().splice.unwrap();
        assert_eq!(sp.services.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), vec!["web", "static"]);
        assert_eq!(sp.pools()[1].backends, vec![(Ipv4Addr::new(10, 1, 0, 31), Some(8081))]);
        assert!(sp.pools()[1].least_connections);
        assert_eq!(sp.specs[0].rules.rules[0].pool, 1);
    }

    #[test]
    fn a_config_without_worker_lcores_is_refused() {
        let mut cfg = example();
        cfg.eal.lcores = "0".into();
        assert!(from_config(&cfg).unwrap_err().contains("no worker lcore"));
    }
}
