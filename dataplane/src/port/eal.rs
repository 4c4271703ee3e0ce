//! EAL start-up and shut-down.

use super::{dpdk, last_error, load, PortError};
use std::ffi::CString;
use std::os::raw::c_char;

/// A running EAL. Dropping it does not clean up (DPDK cannot be re-initialised in a process
/// anyway); call [`Eal::cleanup`] at the end of an orderly stop.
pub struct Eal {
    pub tsc_hz: u64,
}

impl Eal {
    /// Loads DPDK and runs `rte_eal_init` with `args` (args[0] is the program name).
    pub fn init(args: &[String]) -> Result<Eal, PortError> {
        let lib = load()?;
        let cargs: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| PortError::Eal(format!("EAL argument contains NUL: {a:?}"))))
            .collect::<Result<_, _>>()?;
        // EAL may permute argv; it gets its own array of pointers that lives until exit.
        let mut argv: Vec<*mut c_char> = cargs.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        // Some EAL failure paths return -1 without setting rte_errno.
        // SAFETY: plain write of the thread-local errno.
        unsafe { lib.ts_set_errno(0) };
        // SAFETY: argc/argv describe valid NUL-terminated strings that we leak below, since
        // EAL keeps pointers into argv for the lifetime of the process.
        let rc = unsafe { lib.rte_eal_init(cargs.len() as i32, argv.as_mut_ptr()) };
        std::mem::forget(cargs);
        std::mem::forget(argv);
        if rc < 0 {
            // SAFETY: plain read of the thread-local errno.
            let detail = if unsafe { lib.ts_errno() } == 0 {
                "see the EAL: lines above (\"Cannot create lock\" means another process uses the same eal.file_prefix)".to_string()
            } else {
                last_error()
            };
            return Err(PortError::Eal(detail));
        }
        // SAFETY: EAL is initialised.
        let tsc_hz = unsafe { lib.rte_get_tsc_hz() };
        Ok(Eal { tsc_hz })
    }

    /// Releases EAL resources (hugepage files, runtime directory).
    pub fn cleanup(self) {
        // SAFETY: called once, after every lcore has returned.
        unsafe {
            dpdk().rte_eal_cleanup();
        }
    }
}

/// Reads the TSC (cycles since reset). Not free: tens of cycles on bare metal and more in
/// a VM (2.5 % of a busy worker when the loop read it twice per round), so the lcore loop
/// reads it every few iterations and times a sample of its rounds.
#[inline]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: RDTSC has no preconditions on x86-64.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: no preconditions.
    unsafe {
        dpdk().ts_rdtsc()
    }
}
