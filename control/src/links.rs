//! The ports' link state, as the workers, gratuitous ARP and the operator see it.
//!
//! The punt thread calls [`LinkWatch::poll`] every 50 ms and publishes the result in a
//! [`LinkStates`] that the workers read once per port and round (a frame for a port whose
//! link is down is dropped as `link_down` instead of failing in the driver), that
//! gratuitous ARP waits on, and that `ctl ports`, `ctl status`, the metrics and the report
//! show.
//!
//! Most ports' state is the driver's (`rte_eth_link_get_nowait`). A `net_tap` port's is not
//! when its kernel interface has been moved into another network namespace, as every
//! testbed and demo does: the TAP PMD asks for the interface's flags by name in the
//! appliance's own namespace, does not find it there, and reports the link down for good.
//! For those ports the watch asks the interface itself: it finds the TAP's file descriptor
//! (a `/dev/net/tun` descriptor of this process whose interface, by `TUNGETIFF`, has the
//! port's `iface` name), gets the namespace the interface now lives in (`TUNGETDEVNETNS`,
//! Linux ≥ 5.2), and reads `IFF_UP | IFF_RUNNING` through a socket opened in that
//! namespace (by a short-lived thread that enters it; a socket keeps its namespace). Where
//! any of that fails the driver's answer stands.

use dataplane::lcore_link::LinkStates;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// How the watch reads one port's link.
enum Source {
    /// The driver's link status.
    Driver { dpdk_id: u16 },
    /// A TAP interface, read in whatever namespace it is in now; the driver's status when
    /// that fails.
    Tap { dpdk_id: u16, tap: TapLink },
}

/// What the watch knows of one TAP interface.
struct TapLink {
    /// One of the TAP's queue descriptors (owned by the TAP PMD; never closed here).
    fd: i32,
    /// The namespace the socket below was opened in (its inode) and the socket.
    socket: Option<(u64, OwnedFd)>,
}

/// The ports' links, read every [`poll`](LinkWatch::poll) into [`LinkStates`].
pub struct LinkWatch {
    ports: Vec<Source>,
    states: LinkStates,
}

/// One port as the watch needs it: its DPDK id, and for a TAP its interface name.
pub struct WatchedPort {
    pub dpdk_id: u16,
    /// `Some(name)` for a `net_tap` port (its `iface` argument).
    pub tap_iface: Option<String>,
}

impl LinkWatch {
    /// A watch over `ports` (in configuration order), read once already.
    pub fn new(ports: &[WatchedPort]) -> LinkWatch {
        let taps = if ports.iter().any(|p| p.tap_iface.is_some()) { tun_descriptors() } else { Vec::new() };
        let sources = ports
            .iter()
            .map(|p| {
                let fd = p.tap_iface.as_deref().and_then(|name| taps.iter().find(|(_, n)| n == name).map(|&(fd, _)| fd));
                match fd {
                    Some(fd) => Source::Tap { dpdk_id: p.dpdk_id, tap: TapLink { fd, socket: None } },
                    None => Source::Driver { dpdk_id: p.dpdk_id },
                }
            })
            .collect();
        let mut w = LinkWatch { ports: sources, states: LinkStates::new(ports.len()) };
        w.poll();
        w
    }

    /// The states the watch writes (a handle on the same cells).
    pub fn states(&self) -> &LinkStates {
        &self.states
    }

    /// Reads every port's link now.
    pub fn poll(&mut self) {
        for (i, p) in self.ports.iter_mut().enumerate() {
            let up = match p {
                Source::Driver { dpdk_id } => driver_link(*dpdk_id),
                Source::Tap { dpdk_id, tap } => tap.link_up().unwrap_or_else(|| driver_link(*dpdk_id)),
            };
            self.states.set(i, up);
        }
    }
}

fn driver_link(dpdk_id: u16) -> bool {
    dataplane::port::ethdev::link_status(dpdk_id).0
}

/// `ifreq` as `SIOCGIFFLAGS` and `TUNGETIFF` use it: the name, then the flags (the rest of
/// the kernel's union is padding here).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReq {
    fn zeroed() -> IfReq {
        IfReq { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] }
    }

    fn named(name: &[libc::c_char; libc::IFNAMSIZ]) -> IfReq {
        IfReq { name: *name, ..IfReq::zeroed() }
    }
}

/// `_IOR('T', 210, unsigned int)` and `_IO('T', 227)` from `<linux/if_tun.h>`.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNGETDEVNETNS: libc::c_ulong = 0x54e3;

/// The interface of a TUN/TAP descriptor (its name, as the kernel now calls it).
fn tun_ifreq(fd: i32) -> Option<IfReq> {
    let mut r = IfReq::zeroed();
    // SAFETY: TUNGETIFF writes an ifreq into the buffer, which is one.
    (unsafe { libc::ioctl(fd, TUNGETIFF as _, &mut r as *mut IfReq) } == 0).then_some(r)
}

/// This process's `/dev/net/tun` descriptors and their interfaces' names.
fn tun_descriptors() -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            (std::fs::read_link(e.path()).ok()? == std::path::Path::new("/dev/net/tun")).then_some(fd)
        })
        .filter_map(|fd| {
            let r = tun_ifreq(fd)?;
            // SAFETY: the kernel NUL-terminates the name within IFNAMSIZ.
            let name = unsafe { CStr::from_ptr(r.name.as_ptr()) }.to_string_lossy().into_owned();
            Some((fd, name))
        })
        .collect()
}

impl TapLink {
    /// `IFF_UP` and `IFF_RUNNING` of the interface, in its namespace; `None` when that
    /// cannot be read (old kernel, interface gone).
    fn link_up(&mut self) -> Option<bool> {
        let req = tun_ifreq(self.fd)?;
        // SAFETY: TUNGETDEVNETNS takes no argument and returns a new descriptor, owned here.
        let ns = unsafe { libc::ioctl(self.fd, TUNGETDEVNETNS as _) };
        if ns < 0 {
            return None;
        }
        // SAFETY: a descriptor the kernel just gave us.
        let ns = unsafe { OwnedFd::from_raw_fd(ns) };
        let inode = std::fs::File::from(ns.try_clone().ok()?).metadata().ok()?.ino();
        if self.socket.as_ref().is_none_or(|(i, _)| *i != inode) {
            self.socket = Some((inode, socket_in(ns)?));
        }
        let (_, sock) = self.socket.as_ref()?;
        let mut r = IfReq::named(&req.name);
        // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of an ifreq.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut r as *mut IfReq) } != 0 {
            return None;
        }
        let want = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        Some(r.flags & want == want)
    }
}

/// A datagram socket in the network namespace `ns` (a thread enters it, opens the socket
/// and ends: the namespace is the thread's own, the socket keeps it).
fn socket_in(ns: OwnedFd) -> Option<OwnedFd> {
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace descriptor we own.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        // SAFETY: plain socket creation; the descriptor is owned by the result.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: a descriptor the kernel just gave us.
        (s >= 0).then(|| unsafe { OwnedFd::from_raw_fd(s) })
    })
    .join()
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_numbers_are_linux_ones() {
        // _IOR('T', 210, unsigned int): read, size 4, type 'T', number 210.
        assert_eq!(TUNGETIFF, (2 << 30) | (4 << 16) | (u64::from(b'T') << 8) as libc::c_ulong | 210);
        assert_eq!(TUNGETDEVNETNS, (u64::from(b'T') << 8) as libc::c_ulong | 227);
        assert_eq!(std::mem::size_of::<IfReq>(), 40, "struct ifreq");
    }

    #[test]
    fn a_descriptor_that_is_no_tap_has_no_interface() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(tun_ifreq(f.as_raw_fd()).is_none());
        assert!(TapLink { fd: f.as_raw_fd(), socket: None }.link_up().is_none());
    }
}
