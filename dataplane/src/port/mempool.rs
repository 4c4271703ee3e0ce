//! The packet-buffer pool.

use super::{dpdk, last_error, sys, PortError};
use std::ffi::CString;

/// An `rte_mempool` of packet mbufs. Lives until the process exits (ports keep pointers to
/// it), so it is never freed while a port may still use it.
#[derive(Clone, Copy)]
pub struct Mempool {
    pub(crate) raw: *mut sys::rte_mempool,
}

// SAFETY: rte_mempool is designed for concurrent use from lcores (per-lcore caches).
unsafe impl Send for Mempool {}
unsafe impl Sync for Mempool {}

impl Mempool {
    pub fn create(name: &str, mbufs: u32, cache: u32, data_room: u16) -> Result<Mempool, PortError> {
        let cname = CString::new(name).map_err(|_| PortError::Mempool("pool name contains NUL".into()))?;
        let lib = dpdk();
        // SAFETY: EAL is initialised; the name is copied by DPDK.
        let raw = unsafe {
            let socket = lib.rte_socket_id() as i32;
            lib.rte_pktmbuf_pool_create(cname.as_ptr(), mbufs, cache, 0, data_room, socket)
        };
        if raw.is_null() {
            return Err(PortError::Mempool(last_error()));
        }
        Ok(Mempool { raw })
    }

    pub fn available(&self) -> u32 {
        // SAFETY: raw is a live pool.
        unsafe { dpdk().rte_mempool_avail_count(self.raw) }
    }

    pub fn in_use(&self) -> u32 {
        // SAFETY: raw is a live pool.
        unsafe { dpdk().rte_mempool_in_use_count(self.raw) }
    }
}
