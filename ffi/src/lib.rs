//! `dpdk-sys`: bindings to the system DPDK (pkg-config `libdpdk` >= 22.11).
//!
//! Only bindings live here; safe wrappers are in `dataplane::port`. DPDK is not linked into
//! the binary: a small shim library (built from `shim/shim.c` against the system DPDK and
//! embedded in this crate) is loaded at run time with [`load`]. Its `DT_NEEDED` entries pull
//! in the DPDK shared libraries; EAL then loads the PMDs from its plugin directory.
//! A host without DPDK can therefore still run `tapsplice check`, `ctl` and `agent`, and
//! `tapsplice run` can say in one line what is missing.
//!
//! The shim is tied to DPDK's ABI through the sonames it needs (`librte_eal.so.23` for
//! 22.11): a host with another DPDK ABI fails at [`load`] with the loader naming the
//! missing soname, and the caller says to install that DPDK or rebuild.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};

/// The shim shared object, built against the DPDK found at build time.
static SHIM_SO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libtapsplice_dpdk.so"));

/// Loads the shim (and through it the DPDK shared libraries).
///
/// The shim is written to a memfd and opened from `/proc/self/fd`, so no file needs to be
/// installed next to the binary. The error is the dynamic loader's message, e.g.
/// `librte_eal.so.23: cannot open shared object file`.
pub fn load() -> Result<DpdkLib, String> {
    let name = CString::new("tapsplice_dpdk").unwrap();
    // SAFETY: memfd_create with a valid C string; the fd is owned by `file` below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(SHIM_SO).map_err(|e| format!("writing the DPDK shim: {e}"))?;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    // SAFETY: loading a library runs its initialisers (DPDK's constructors register
    // drivers and buses); that is what we want and they do not depend on Rust state.
    let lib = unsafe {
        libloading::os::unix::Library::open(Some(&path), libc::RTLD_NOW | libc::RTLD_GLOBAL)
    }
    .map_err(|e| e.to_string())?;
    // SAFETY: the symbols have the types bindgen read from the same headers the shim was
    // compiled against.
    let dpdk = unsafe { DpdkLib::from_library(lib) }.map_err(|e| e.to_string())?;
    // The mapping stays valid after the fd is closed (debuggers then cannot find the
    // shim's file; its few symbols are trivial wrappers).
    drop(file);
    Ok(dpdk)
}
