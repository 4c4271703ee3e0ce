//! The port layer: the only part of tapsplice that touches DPDK.
//!
//! * [`eal`] — loading DPDK, EAL start-up and shut-down.
//! * [`mempool`] — the packet-buffer pool.
//! * [`ethdev`] — configuring, starting and reading ports.
//! * [`lcore`] — the run-to-completion burst loop, generic over a [`crate::role::Role`].
//!
//! Mbuf ownership rule: an mbuf returned by `rx_burst` is owned by the lcore loop until it
//! is either handed to `tx_burst` (which takes it) or freed; the loop never lets one leak.

pub mod eal;
pub mod ethdev;
pub mod lcore;
pub mod mempool;

pub use dpdk_sys as sys;

use std::fmt;
use std::sync::OnceLock;

static DPDK: OnceLock<sys::DpdkLib> = OnceLock::new();

/// Loads DPDK (once). Every other function of this module needs it first.
pub fn load() -> Result<&'static sys::DpdkLib, PortError> {
    if let Some(lib) = DPDK.get() {
        return Ok(lib);
    }
    let lib = sys::load().map_err(PortError::DpdkMissing)?;
    Ok(DPDK.get_or_init(|| lib))
}

/// The loaded DPDK library. Panics only if called before [`load`] succeeded, which is a
/// programming error in start-up order, not something input can cause.
#[inline]
pub fn dpdk() -> &'static sys::DpdkLib {
    DPDK.get().expect("dataplane::port::load() must succeed before DPDK is used")
}

/// DPDK's `rte_errno` with its message.
pub fn last_error() -> String {
    let lib = dpdk();
    // SAFETY: plain reads of thread-local errno and a static string table.
    unsafe {
        let e = lib.ts_errno();
        let msg = std::ffi::CStr::from_ptr(lib.rte_strerror(e)).to_string_lossy().into_owned();
        format!("{msg} (rte_errno {e})")
    }
}

/// Errors of the port layer; each Displays as one line that names the cause and the fix.
#[derive(Debug)]
pub enum PortError {
    DpdkMissing(String),
    Eal(String),
    Mempool(String),
    NoSuchDevice { port: String, device: String },
    Port { port: String, what: String },
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::DpdkMissing(e) => write!(
                f,
                "DPDK libraries could not be loaded ({e}); tapsplice needs the DPDK it was built against \
                 (Debian 12: `apt-get install libdpdk-dev dpdk-dev`), or rebuild it against the installed DPDK"
            ),
            PortError::Eal(e) => write!(f, "DPDK EAL initialisation failed: {e}"),
            PortError::Mempool(e) => write!(
                f,
                "creating the mbuf pool failed: {e}; lower mempool.mbufs or raise eal.memory_mb"
            ),
            PortError::NoSuchDevice { port, device } => write!(
                f,
                "port '{port}': DPDK device '{device}' does not exist; check the port's device name, \
                 that the PCI device is bound to vfio-pci and listed, or that the vdev driver is installed"
            ),
            PortError::Port { port, what } => write!(f, "port '{port}': {what}"),
        }
    }
}

impl std::error::Error for PortError {}
