//! net_tap's RX signals, kept off the control thread.
//!
//! DPDK's net_tap sets every TAP queue's file descriptor `O_ASYNC`, owned by the process,
//! and counts the signals in a global "trigger"; its RX burst reads a descriptor only when
//! the trigger moved, so the signals must be handled somewhere, at the rate frames arrive.
//! Debian's DPDK 22.11 takes the first free real-time signal for it (`F_SETSIG`; "Using
//! rt-signal 35" in its debug log), older ones SIGIO. Real-time signals queue one per
//! frame and the kernel hands a process-directed one to any thread that does not block
//! it: in `testbed/tests/agents.rs` every thread of the appliance was woken about 2 000
//! times a second and the control thread (the main thread, its first choice) 16 000
//! times. Its 25 ms sleeps were restarted that often, the scheduler charged it for the
//! handlers, and on two shared CPUs it was found runnable but not run for up to 4 s: no
//! detector tick and no event for a peer killed and restarted within that time
//! (docs/heartbeat.md, "The control thread and net_tap's signals").
//!
//! [`route_to_own_thread`] blocks SIGIO and every real-time signal the C library leaves to
//! applications (SIGRTMIN..=SIGRTMAX; nothing else in the appliance uses them) in the
//! calling thread, before any other thread exists, so that EAL's lcores and every control
//! thread inherit the block, and starts the one thread that leaves them unblocked: every
//! such signal is delivered there, and net_tap's handler (one increment) runs there only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The name of the thread that takes the signals (`ps -L`, `/proc/PID/task/*/comm`).
pub const THREAD_NAME: &str = "tap-signals";

/// The signals net_tap may use: SIGIO and the applications' real-time signals.
fn tap_signal_numbers() -> impl Iterator<Item = libc::c_int> {
    std::iter::once(libc::SIGIO).chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
}

fn tap_signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in tap_signal_numbers() {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

fn mask(how: libc::c_int) -> std::io::Result<()> {
    let set = tap_signal_set();
    // SAFETY: changes the calling thread's signal mask only.
    let rc = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// The thread that takes net_tap's signals; it runs until this is dropped (after the ports
/// are closed: a TAP queue signals until its descriptor is), which also joins it.
pub struct TapSignals {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for TapSignals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Blocks net_tap's possible signals in the calling thread and starts the one thread that
/// takes them. Call it first thing, before any thread is spawned: a thread spawned earlier
/// keeps them unblocked and is interrupted by them. The thread keeps the process's CPU
/// set (it is started before EAL pins the main thread), so the kernel runs it on any CPU
/// the workers leave idle.
///
/// SIGIO is also set to be ignored when nothing handles it: when a real-time signal's
/// queue is full, the kernel sends plain SIGIO instead, whose default action would end
/// the appliance (an older net_tap that uses SIGIO itself installs its handler over this).
pub fn route_to_own_thread() -> Result<TapSignals, String> {
    // SAFETY: reads and, if it is the default, replaces SIGIO's disposition; no handler
    // of ours runs.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGIO, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_DFL {
            let mut ign: libc::sigaction = std::mem::zeroed();
            ign.sa_sigaction = libc::SIG_IGN;
            libc::sigaction(libc::SIGIO, &ign, std::ptr::null_mut());
        }
    }
    mask(libc::SIG_BLOCK).map_err(|e| format!("cannot block the TAP signals in the control thread: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            if let Err(e) = mask(libc::SIG_UNBLOCK) {
                // Then no thread takes them and net_tap's RX waits for a trigger that
                // never moves: say so loudly (other port kinds do not care).
                eprintln!("tapsplice: error: cannot unblock the TAP signals in {THREAD_NAME}: {e}; TAP ports will not receive");
                return;
            }
            // The handlers run while this thread sleeps; a signal ends a sleep early and
            // `sleep` goes back to sleep for the rest.
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .map_err(|e| format!("cannot start {THREAD_NAME}: {e}"))?;
    Ok(TapSignals { stop, thread: Some(thread) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's blocked signals, from /proc (what the kernel uses).
    fn blocked(tid: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        let blk = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim();
        u64::from_str_radix(blk, 16).unwrap()
    }

    fn gettid() -> String {
        // SAFETY: no arguments, returns the caller's thread id.
        unsafe { libc::gettid() }.to_string()
    }

    fn all_tap_signals() -> u64 {
        tap_signal_numbers().fold(0, |m, s| m | 1 << (s - 1))
    }

    #[test]
    fn the_tap_signals_are_blocked_in_the_caller_and_later_threads_and_taken_by_one_thread() {
        let all = all_tap_signals();
        assert_ne!(all & 1 << (libc::SIGIO - 1), 0);
        assert_ne!(all & 1 << (35 - 1), 0, "Debian's DPDK 22.11 net_tap took signal 35 here");
        // In a thread of its own, so that the test harness's thread keeps its mask.
        std::thread::spawn(move || {
            assert_eq!(blocked(&gettid()) & all, 0);
            let h = route_to_own_thread().unwrap();
            assert_eq!(blocked(&gettid()) & all, all);
            let later = std::thread::spawn(|| blocked(&gettid())).join().unwrap();
            assert_eq!(later & all, all, "threads spawned later inherit the block");
            // The signal thread unblocks them first thing.
            let tid = find_thread(THREAD_NAME).expect("the signal thread runs");
            let mut mask = u64::MAX;
            for _ in 0..100 {
                mask = blocked(&tid);
                if mask & all == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(mask & all, 0, "SigBlk {mask:x}");
            // SIGIO (a full real-time queue's fallback) no longer ends the process.
            // SAFETY: reads the disposition only.
            let ignored = unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGIO, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
            };
            assert!(ignored, "SIGIO is ignored");
            drop(h);
            assert!(find_thread_now(THREAD_NAME).is_none(), "dropping the guard ends the thread");
        })
        .join()
        .unwrap();
    }

    fn find_thread_now(name: &str) -> Option<String> {
        std::fs::read_dir("/proc/self/task").ok()?.flatten().find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            (comm.trim() == name).then(|| t.file_name().to_string_lossy().into_owned())
        })
    }

    fn find_thread(name: &str) -> Option<String> {
        for _ in 0..100 {
            for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
                let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                if comm.trim() == name {
                    return Some(t.file_name().to_string_lossy().into_owned());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}
