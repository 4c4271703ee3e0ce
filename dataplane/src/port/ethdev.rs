//! Configuring, starting, reading and stopping ports (`rte_ethdev`).

use super::{dpdk, last_error, mempool::Mempool, sys, PortError};
use std::ffi::CString;

/// What the configuration asks of one port.
#[derive(Clone, Debug)]
pub struct PortSpec {
    pub name: String,
    /// DPDK device name: a PCI address or a vdev name such as `net_tap0`.
    pub device: String,
    pub rx_queues: u16,
    /// One TX queue per worker lcore, so lcores never share a TX queue.
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub promiscuous: bool,
    pub mtu: u16,
}

/// A started port.
#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    pub device: String,
    pub id: u16,
    pub mac: [u8; 6],
    pub rx_queues: u16,
    pub tx_queues: u16,
    /// Problems that did not stop the port (e.g. MTU not settable), for the start-up log.
    pub warnings: Vec<String>,
}

/// Hardware/driver counters of a port (`rte_eth_stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped by the NIC because no RX descriptor was free (the lcore was too slow).
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
    /// Packets received per RX queue (the first 16 queues; drivers that do not count per
    /// queue report zeros).
    pub rx_queue_packets: Vec<u64>,
}

/// `RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP` (bindgen cannot evaluate the
/// `RTE_BIT64` macros); masked by what the device supports.
const RSS_IP_L4: u64 = {
    const IP: u64 = (1 << 2) | (1 << 3) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 13) | (1 << 15);
    const TCP: u64 = (1 << 4) | (1 << 10) | (1 << 16);
    const UDP: u64 = (1 << 5) | (1 << 11) | (1 << 17);
    IP | TCP | UDP
};

/// Port `id`'s link: up, and its speed in Mbit/s (0 unknown). Any thread may ask.
pub fn link_status(id: u16) -> (bool, u32) {
    let mut l = sys::rte_eth_link::default();
    // SAFETY: an out-pointer; an unknown port id leaves it zeroed (link down).
    unsafe { dpdk().rte_eth_link_get_nowait(id, &mut l) };
    // RTE_ETH_SPEED_NUM_UNKNOWN is u32::MAX; reports and metrics say 0.
    let speed = if l.link_speed == u32::MAX { 0 } else { l.link_speed };
    (l.link_status() != 0, speed)
}

/// `RTE_ETH_RSS_NONFRAG_IPV4_TCP`: the NIC hashes IPv4/TCP by addresses and ports.
const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;
/// `RTE_ETH_RSS_L3_SRC_ONLY | L3_DST_ONLY | L4_SRC_ONLY | L4_DST_ONLY`: the hash leaves out
/// part of the 4-tuple (the steering assumes all of it).
const RSS_ONE_SIDE_ONLY: u64 = 0xf << 60;

/// A port's RSS hash key and redirection table (see [`Port::rss`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRss {
    pub key: Vec<u8>,
    /// The RX queue of each RETA entry.
    pub reta: Vec<u16>,
}

impl Port {
    /// Finds the device, configures queues and starts it.
    pub fn setup(spec: &PortSpec, pool: &Mempool) -> Result<Port, PortError> {
        let lib = dpdk();
        let perr = |what: String| PortError::Port { port: spec.name.clone(), what };
        let cdev = CString::new(spec.device.as_str()).map_err(|_| perr("device name contains NUL".into()))?;
        let mut id: u16 = 0;
        // SAFETY: valid C string and out-pointer.
        if unsafe { lib.rte_eth_dev_get_port_by_name(cdev.as_ptr(), &mut id) } != 0 {
            return Err(PortError::NoSuchDevice { port: spec.name.clone(), device: spec.device.clone() });
        }
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        if unsafe { lib.rte_eth_dev_info_get(id, &mut info) } != 0 {
            return Err(perr(format!("reading device info failed: {}", last_error())));
        }
        if spec.rx_queues > info.max_rx_queues || spec.tx_queues > info.max_tx_queues {
            return Err(perr(format!(
                "needs {} RX and {} TX queues (one TX queue per worker lcore) but device '{}' offers at most {} RX and {} TX; lower rx_queues or the number of worker lcores",
                spec.rx_queues, spec.tx_queues, spec.device, info.max_rx_queues, info.max_tx_queues
            )));
        }
        let mut early_warnings = Vec::new();
        let mut conf = sys::rte_eth_conf::default();
        if spec.rx_queues > 1 {
            let hf = RSS_IP_L4 & info.flow_type_rss_offloads;
            if hf != 0 {
                conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = hf;
            } else {
                early_warnings.push(format!(
                    "port '{}': device offers no IP/TCP/UDP RSS; its {} RX queues are filled by the driver's own rule",
                    spec.name, spec.rx_queues
                ));
            }
        }
        // SAFETY: valid port id and configuration.
        let rc = unsafe { lib.rte_eth_dev_configure(id, spec.rx_queues, spec.tx_queues, &conf) };
        if rc != 0 {
            return Err(perr(format!("configure failed: {}", errno_text(rc))));
        }
        let mut warnings = early_warnings;
        let (mut rx_desc, mut tx_desc) = (spec.rx_desc, spec.tx_desc);
        // SAFETY: valid, configured port and out-pointers. Drivers have their own limits.
        if unsafe { lib.rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rx_desc, &mut tx_desc) } == 0
            && (rx_desc != spec.rx_desc || tx_desc != spec.tx_desc)
        {
            warnings.push(format!(
                "port '{}': the driver adjusted rx_desc {} -> {rx_desc}, tx_desc {} -> {tx_desc}",
                spec.name, spec.rx_desc, spec.tx_desc
            ));
        }
        // SAFETY: valid port id.
        let socket = unsafe { lib.rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..spec.rx_queues {
            // SAFETY: the pool outlives the port; NULL rxconf = driver defaults.
            let rc = unsafe { lib.rte_eth_rx_queue_setup(id, q, rx_desc, socket, std::ptr::null(), pool.raw) };
            if rc != 0 {
                return Err(perr(format!(
                    "RX queue {q} setup failed: {} (each RX queue holds rx_desc mbufs: raise mempool.mbufs or lower rx_desc/rx_queues)",
                    errno_text(rc)
                )));
            }
        }
        for q in 0..spec.tx_queues {
            // SAFETY: NULL txconf = driver defaults.
            let rc = unsafe { lib.rte_eth_tx_queue_setup(id, q, tx_desc, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(perr(format!("TX queue {q} setup failed: {}", errno_text(rc))));
            }
        }
        let mut mtu: u16 = 0;
        // SAFETY: valid port id and out-pointer. Only a different MTU is set: some drivers
        // (vhost, ring) cannot set one at all.
        let rc = unsafe {
            if lib.rte_eth_dev_get_mtu(id, &mut mtu) == 0 && mtu == spec.mtu {
                0
            } else {
                lib.rte_eth_dev_set_mtu(id, spec.mtu)
            }
        };
        if rc != 0 {
            warnings.push(format!("port '{}': MTU {} not set: {}", spec.name, spec.mtu, errno_text(rc)));
        }
        // SAFETY: valid port id.
        let rc = unsafe { lib.rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(perr(format!("start failed: {}", errno_text(rc))));
        }
        if spec.promiscuous {
            // SAFETY: valid, started port.
            let rc = unsafe { lib.rte_eth_promiscuous_enable(id) };
            if rc != 0 {
                warnings.push(format!("port '{}': promiscuous mode not enabled: {}", spec.name, errno_text(rc)));
            }
        }
        let mut mac = sys::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        unsafe { lib.rte_eth_macaddr_get(id, &mut mac) };
        Ok(Port {
            name: spec.name.clone(),
            device: spec.device.clone(),
            id,
            mac: mac.addr_bytes,
            rx_queues: spec.rx_queues,
            tx_queues: spec.tx_queues,
            warnings,
        })
    }

    /// The name of the kernel interface behind the port (a TAP's), while it is in the
    /// appliance's own network namespace; `None` for ports without one.
    pub fn kernel_ifname(&self) -> Option<String> {
        let lib = dpdk();
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        if unsafe { lib.rte_eth_dev_info_get(self.id, &mut info) } != 0 || info.if_index == 0 {
            return None;
        }
        let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(info.if_index, name.as_mut_ptr()) };
        // SAFETY: on success the name is NUL-terminated within the buffer.
        (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned())
    }

    /// The port's RSS as configured: its hash key and its redirection table (RX queue per
    /// entry), when it spreads IPv4/TCP over several RX queues by the 4-tuple and the
    /// driver lets both be read (`None` otherwise: net_tap, vhost, a single queue).
    pub fn rss(&self) -> Option<PortRss> {
        if self.rx_queues < 2 {
            return None;
        }
        let lib = dpdk();
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: valid port id and out-pointer.
        if unsafe { lib.rte_eth_dev_info_get(self.id, &mut info) } != 0 || info.reta_size == 0 {
            return None;
        }
        let mut key = vec![0u8; usize::from(info.hash_key_size).max(40)];
        let mut conf = sys::rte_eth_rss_conf { rss_key: key.as_mut_ptr(), rss_key_len: key.len() as u8, ..Default::default() };
        // SAFETY: the key buffer outlives the call and its length is given.
        if unsafe { lib.rte_eth_dev_rss_hash_conf_get(self.id, &mut conf) } != 0 || conf.rss_hf & RSS_NONFRAG_IPV4_TCP == 0 || conf.rss_hf & RSS_ONE_SIDE_ONLY != 0 {
            return None;
        }
        key.truncate(usize::from(conf.rss_key_len).min(key.len()));
        let groups = usize::from(info.reta_size).div_ceil(64);
        let mut reta: Vec<sys::rte_eth_rss_reta_entry64> = (0..groups).map(|_| sys::rte_eth_rss_reta_entry64 { mask: u64::MAX, reta: [0; 64] }).collect();
        // SAFETY: `groups` entries of 64 cover reta_size.
        if unsafe { lib.rte_eth_dev_rss_reta_query(self.id, reta.as_mut_ptr(), info.reta_size) } != 0 {
            return None;
        }
        let queues = reta.iter().flat_map(|g| g.reta).take(usize::from(info.reta_size)).collect();
        Some(PortRss { key, reta: queues })
    }

    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer.
        unsafe { dpdk().rte_eth_stats_get(self.id, &mut s) };
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            rx_queue_packets: s.q_ipackets.iter().take(self.rx_queues as usize).copied().collect(),
        }
    }

    /// Link up/down and speed in Mbit/s (0 = unknown), without waiting for autonegotiation.
    pub fn link(&self) -> (bool, u32) {
        link_status(self.id)
    }

    /// The members of a bonding port as the bonding PMD sees them (`None` for a port that
    /// is not a bonding device).
    pub fn bond_members(&self) -> Option<Vec<BondMember>> {
        let lib = dpdk();
        // SAFETY: a valid port id; the buffer holds `cap` entries and the shim writes at
        // most that many.
        unsafe {
            let mode = lib.ts_bond_mode(self.id);
            if mode < 0 {
                return None;
            }
            const CAP: usize = 32;
            let mut raw: [sys::ts_bond_member; CAP] = std::mem::zeroed();
            let n = lib.ts_bond_members(self.id, raw.as_mut_ptr(), CAP as i32);
            if n < 0 {
                return None;
            }
            let lacp = mode == 4;
            Some(
                raw[..(n as usize).min(CAP)]
                    .iter()
                    .map(|m| {
                        let mut name = [0 as std::os::raw::c_char; 64];
                        let device = if lib.rte_eth_dev_get_name_by_port(m.port_id, name.as_mut_ptr()) == 0 {
                            std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()
                        } else {
                            format!("port{}", m.port_id)
                        };
                        let mut l = sys::rte_eth_link::default();
                        lib.rte_eth_link_get_nowait(m.port_id, &mut l);
                        let mut st = sys::rte_eth_stats::default();
                        lib.rte_eth_stats_get(m.port_id, &mut st);
                        BondMember {
                            device,
                            port_id: m.port_id,
                            link_up: l.link_status() != 0,
                            active: m.active != 0,
                            rx_packets: st.ipackets,
                            tx_packets: st.opackets,
                            lacp: lacp.then_some(LacpMember {
                                actor_state: m.actor_state,
                                partner_state: m.partner_state,
                                selected: m.selected != 0,
                                aggregator: m.agg_port_id,
                                partner_system: m.partner_system,
                            }),
                        }
                    })
                    .collect(),
            )
        }
    }

    /// The DPDK port id of a bonding port's primary member (`None` if not a bond).
    pub fn bond_primary(&self) -> Option<u16> {
        // SAFETY: a valid port id.
        let p = unsafe { dpdk().ts_bond_primary_get(self.id) };
        u16::try_from(p).ok()
    }

    /// Makes `member` the bonding port's primary (active-backup: the member it uses).
    pub fn set_bond_primary(&self, member: u16) -> Result<(), PortError> {
        // SAFETY: valid port ids; the PMD takes its own lock.
        let rc = unsafe { dpdk().ts_bond_primary_set(self.id, member) };
        if rc != 0 {
            return Err(PortError::Port { port: self.name.clone(), what: format!("setting the primary member to port {member} failed: {}", errno_text(rc)) });
        }
        Ok(())
    }

    /// Runs the link-change callbacks registered on `member` (a bonding device's own among
    /// them), as its driver would on a link interrupt: the bonding PMD re-reads the
    /// member's link and puts it in or takes it out of its active list.
    pub fn signal_link_change(&self, member: u16) -> Result<(), PortError> {
        // SAFETY: a valid port id; the callbacks take their own locks.
        let rc = unsafe { dpdk().ts_link_event(member) };
        if rc < 0 {
            return Err(PortError::Port { port: self.name.clone(), what: format!("signalling member port {member}'s link change failed: {}", errno_text(-rc)) });
        }
        Ok(())
    }

    /// Stops and closes the port (after every lcore has returned).
    pub fn shutdown(&self) {
        // SAFETY: no lcore polls the port any more.
        unsafe {
            dpdk().rte_eth_dev_stop(self.id);
            dpdk().rte_eth_dev_close(self.id);
        }
    }
}

/// One member of a bonding port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BondMember {
    /// The member's DPDK device name (`net_tap0`, a PCI address ...).
    pub device: String,
    pub port_id: u16,
    pub link_up: bool,
    /// In the bond's active list: carrying traffic (802.3ad: collecting and distributing).
    pub active: bool,
    /// The member's own counters (the bond's are their sums).
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// 802.3ad bonds only.
    pub lacp: Option<LacpMember>,
}

/// A member's 802.3ad state (IEEE 802.1AX actor/partner state bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LacpMember {
    pub actor_state: u8,
    pub partner_state: u8,
    /// The selection logic chose this member's aggregator.
    pub selected: bool,
    /// Port id of the aggregator the member is attached to.
    pub aggregator: u16,
    /// The partner's system id (MAC); all zero until a LACPDU was received.
    pub partner_system: [u8; 6],
}

fn errno_text(rc: i32) -> String {
    let e = rc.unsigned_abs() as i32;
    // SAFETY: rte_strerror returns a static string for any value.
    let msg = unsafe { std::ffi::CStr::from_ptr(dpdk().rte_strerror(e)) };
    format!("{} (errno {e})", msg.to_string_lossy())
}
