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
//! namespace (by a short-lived thread that enters it; a socket keeps its namespace, and so
//! keeps it alive while the appliance runs: `ip netns del` then only unlinks its name).
//! Where that fails, the driver's answer stands while the interface is still in the
//! appliance's namespace; elsewhere the link is unknown and counted as up (with one
//! warning), since a link taken for down makes the workers drop all the port's traffic.
//!
//! A socket port (`net_af_packet`, `net_af_xdp`) reads a kernel interface of the
//! appliance's namespace, and its driver reports the link up from the start for good
//! (DPDK 22.11's PMDs do not look). Its link is the interface's `IFF_UP | IFF_RUNNING`
//! (carrier: a veth whose peer is down is not running), found by the index it had at the
//! start, as the PMD's socket is bound to it (a renamed interface is followed); an
//! interface that is gone is down. Where the flags cannot be read otherwise, the link is
//! unknown and counted as up, with one warning, as for a TAP.

use dataplane::lcore_link::LinkStates;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// How the watch reads one port's link.
enum Source {
    /// The driver's link status.
    Driver { dpdk_id: u16 },
    /// A TAP (or TUN) interface, read in whatever namespace it is in now.
    Tap { dpdk_id: u16, tap: TapLink },
    /// The kernel interface a socket port reads, in our namespace.
    Kernel(KernelLink),
}

/// What the watch knows of one TAP interface.
struct TapLink {
    /// The interface's name when the watch started (while in our namespace).
    name: String,
    /// One of the TAP's queue descriptors (owned by the TAP PMD; never closed here).
    fd: Option<i32>,
    /// The namespace the socket below was opened in (its inode) and the socket.
    socket: Option<(u64, OwnedFd)>,
    /// No new socket is tried before this after one could not be made.
    retry_at: Option<Instant>,
    /// The link could not be read (reported once).
    warned: bool,
}

/// What the watch knows of a socket port's kernel interface.
struct KernelLink {
    /// Its name at the start (for the warning).
    name: String,
    /// Its index at the start (`None`: there was no such interface).
    index: Option<u32>,
    /// The flags could not be read (reported once).
    warned: bool,
}

/// After a socket could not be opened in a TAP's namespace, the next try is this far off.
const SOCKET_RETRY: Duration = Duration::from_secs(5);

/// The ports' links, read every [`poll`](LinkWatch::poll) into [`LinkStates`].
pub struct LinkWatch {
    ports: Vec<(String, Source)>,
    states: LinkStates,
    /// A socket in the appliance's own namespace, for the socket ports' interfaces.
    own: Option<OwnedFd>,
}

/// One port as the watch needs it.
pub struct WatchedPort {
    /// The port's name (for the warning when its link cannot be read).
    pub name: String,
    pub dpdk_id: u16,
    /// `Some(name)` for a `net_tap`/`net_tun` port: its kernel interface's name.
    pub tap_iface: Option<String>,
    /// `Some(name)` for a socket port (`net_af_packet`, `net_af_xdp`): the kernel
    /// interface it reads.
    pub socket_iface: Option<String>,
}

impl LinkWatch {
    /// A watch over `ports` (in configuration order), read once already.
    pub fn new(ports: &[WatchedPort]) -> LinkWatch {
        let taps = if ports.iter().any(|p| p.tap_iface.is_some()) { tun_descriptors() } else { Vec::new() };
        let sources: Vec<(String, Source)> = ports
            .iter()
            .map(|p| {
                let source = match (&p.tap_iface, &p.socket_iface) {
                    (Some(name), _) => {
                        let fd = taps.iter().find(|(_, n)| n == name).map(|&(fd, _)| fd);
                        Source::Tap { dpdk_id: p.dpdk_id, tap: TapLink { name: name.clone(), fd, socket: None, retry_at: None, warned: false } }
                    }
                    (None, Some(iface)) => Source::Kernel(KernelLink { name: iface.clone(), index: if_index(iface), warned: false }),
                    (None, None) => Source::Driver { dpdk_id: p.dpdk_id },
                };
                (p.name.clone(), source)
            })
            .collect();
        // One socket of our namespace for every socket port's flags (none without any).
        let own = if sources.iter().any(|(_, s)| matches!(s, Source::Kernel(_))) { new_socket() } else { None };
        let mut w = LinkWatch { ports: sources, states: LinkStates::new(ports.len()), own };
        w.poll();
        w
    }

    /// The states the watch writes (a handle on the same cells).
    pub fn states(&self) -> &LinkStates {
        &self.states
    }

    /// Reads every port's link now.
    pub fn poll(&mut self) {
        let now = Instant::now();
        for (i, (port, p)) in self.ports.iter_mut().enumerate() {
            let up = match p {
                Source::Driver { dpdk_id } => driver_link(*dpdk_id),
                Source::Kernel(k) => match k.link_up(self.own.as_ref()) {
                    Some(up) => up,
                    None => {
                        if !k.warned {
                            k.warned = true;
                            eprintln!("tapsplice: port {port}: the link of interface {} cannot be read; it is taken as up", k.name);
                        }
                        true
                    }
                },
                Source::Tap { dpdk_id, tap } => match tap.link_up(now) {
                    Some(up) => up,
                    // Still in our namespace: the driver reads it right.
                    None if in_our_namespace(&tap.name) => driver_link(*dpdk_id),
                    // Elsewhere and unreadable (a kernel before 5.2, no right to enter its
                    // namespace): unknown, so counted as up. Calling it down would make
                    // the workers drop all of the port's traffic.
                    None => {
                        if !tap.warned {
                            tap.warned = true;
                            eprintln!("tapsplice: port {port}: the link of TAP interface {} cannot be read in its network namespace (needs Linux >= 5.2 and CAP_NET_ADMIN there); it is taken as up", tap.name);
                        }
                        true
                    }
                },
            };
            self.states.set(i, up);
        }
    }
}

fn driver_link(dpdk_id: u16) -> bool {
    dataplane::port::ethdev::link_status(dpdk_id).0
}

/// Whether this process's network namespace has an interface called `name`.
pub fn in_our_namespace(name: &str) -> bool {
    if_index(name).is_some()
}

/// The index of interface `name` in our namespace.
fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

impl KernelLink {
    /// `Some(false)` when the interface is gone, its flags when they can be read through
    /// `sock`; `None` when not (no socket, or the ioctl failed otherwise).
    fn link_up(&self, sock: Option<&OwnedFd>) -> Option<bool> {
        let Some(index) = self.index else { return Some(false) };
        let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: the buffer has IF_NAMESIZE bytes, as if_indextoname requires.
        if unsafe { libc::if_indextoname(index, name.as_mut_ptr()) }.is_null() {
            return Some(false);
        }
        let mut r = ifreq();
        r.ifr_name[..name.len()].copy_from_slice(&name);
        let up = up_and_running(sock?, &mut r);
        // The interface went away between the two calls.
        if up.is_none() && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENODEV) {
            return Some(false);
        }
        up
    }
}

/// A datagram socket of the calling thread's network namespace (for interface ioctls).
fn new_socket() -> Option<OwnedFd> {
    // SAFETY: plain socket creation; the descriptor is owned by the result.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    // SAFETY: a descriptor the kernel just gave us.
    (s >= 0).then(|| unsafe { OwnedFd::from_raw_fd(s) })
}

/// `IFF_UP` and `IFF_RUNNING` of the interface named in `r`, asked through `sock` (in the
/// interface's namespace); `None` when SIOCGIFFLAGS fails (errno says why).
fn up_and_running(sock: &OwnedFd, r: &mut libc::ifreq) -> Option<bool> {
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes the flags of an ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, r as *mut libc::ifreq) } != 0 {
        return None;
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { r.ifr_ifru.ifru_flags };
    let want = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    Some(flags & want == want)
}

/// An `ifreq` with every byte zero.
fn ifreq() -> libc::ifreq {
    // SAFETY: ifreq is plain data (a name and a union of integers and addresses), for
    // which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// The interface of a TUN/TAP descriptor (its name, as the kernel now calls it).
fn tun_ifreq(fd: i32) -> Option<libc::ifreq> {
    let mut r = ifreq();
    // SAFETY: TUNGETIFF writes an ifreq into the buffer, which is one.
    (unsafe { libc::ioctl(fd, libc::TUNGETIFF, &mut r as *mut libc::ifreq) } == 0).then_some(r)
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
            let name = unsafe { CStr::from_ptr(r.ifr_name.as_ptr()) }.to_string_lossy().into_owned();
            Some((fd, name))
        })
        .collect()
}

impl TapLink {
    /// `IFF_UP` and `IFF_RUNNING` of the interface, in its namespace (it may have been
    /// renamed there: the name is the descriptor's now); `None` when that cannot be read.
    fn link_up(&mut self, now: Instant) -> Option<bool> {
        let fd = self.fd?;
        let req = tun_ifreq(fd)?;
        // SAFETY: TUNGETDEVNETNS takes no argument and returns a new descriptor, owned here.
        let ns = unsafe { libc::ioctl(fd, libc::TUNGETDEVNETNS) };
        if ns < 0 {
            return None;
        }
        // SAFETY: a descriptor the kernel just gave us.
        let ns = unsafe { OwnedFd::from_raw_fd(ns) };
        let inode = std::fs::File::from(ns.try_clone().ok()?).metadata().ok()?.ino();
        if self.socket.as_ref().is_none_or(|(i, _)| *i != inode) {
            // The socket keeps its namespace alive: let go of the old one first.
            self.socket = None;
            if self.retry_at.is_some_and(|t| now < t) {
                return None;
            }
            match socket_in(ns) {
                Some(sock) => self.socket = Some((inode, sock)),
                None => {
                    self.retry_at = Some(now + SOCKET_RETRY);
                    return None;
                }
            }
        }
        let (_, sock) = self.socket.as_ref()?;
        let mut r = ifreq();
        r.ifr_name = req.ifr_name;
        up_and_running(sock, &mut r)
    }
}

/// A datagram socket in the network namespace `ns` (a thread enters it, opens the socket
/// and ends: the namespace is the thread's own, the socket keeps it); `None` when the
/// thread cannot be started or the namespace entered.
fn socket_in(ns: OwnedFd) -> Option<OwnedFd> {
    std::thread::Builder::new()
        .name("tapsplice-netns".into())
        .spawn(move || {
            // SAFETY: setns on this thread only, with a namespace descriptor we own.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            new_socket()
        })
        .ok()?
        .join()
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_that_is_no_tap_has_no_interface() {
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(tun_ifreq(f.as_raw_fd()).is_none());
        let mut t = TapLink { name: "x".into(), fd: Some(f.as_raw_fd()), socket: None, retry_at: None, warned: false };
        assert!(t.link_up(Instant::now()).is_none());
        t.fd = None;
        assert!(t.link_up(Instant::now()).is_none());
    }

    #[test]
    fn a_kernel_interface_is_read_by_its_index_and_flags() {
        let sock = new_socket().expect("a socket");
        // Loopback of the test's namespace, whatever its state: the flags as the kernel
        // has them; a name that was never an interface is down.
        let lo = KernelLink { name: "lo".into(), index: if_index("lo"), warned: false };
        let mut r = ifreq();
        r.ifr_name[0] = b'l' as libc::c_char;
        r.ifr_name[1] = b'o' as libc::c_char;
        assert_eq!(lo.link_up(Some(&sock)), up_and_running(&sock, &mut r));
        assert!(lo.link_up(Some(&sock)).is_some());
        assert_eq!(lo.link_up(None), None, "no socket: unknown");
        let none = KernelLink { name: "tapsplice-none0".into(), index: if_index("tapsplice-none0"), warned: false };
        assert_eq!(none.link_up(Some(&sock)), Some(false));
        // An index no interface has (any more): gone, so down.
        let gone = KernelLink { name: "x".into(), index: Some(u32::MAX - 7), warned: false };
        assert_eq!(gone.link_up(Some(&sock)), Some(false));
        // The watch: a socket port on a missing interface is down.
        let w = LinkWatch::new(&[WatchedPort { name: "p".into(), dpdk_id: u16::MAX, tap_iface: None, socket_iface: Some("tapsplice-none0".into()) }]);
        assert!(!w.states().is_up(0));
    }

    #[test]
    fn loopback_is_in_our_namespace_and_a_made_up_name_is_not() {
        assert!(in_our_namespace("lo"));
        assert!(!in_our_namespace("tapsplice-none0"));
    }
}
