//! Everything a run creates is registered here first, and removed by `cleanup_all` — from
//! the `RunGuard`'s Drop (normal end, error, panic) or from the Ctrl-C handler (second
//! Ctrl-C, or when the main thread does not come back in time).
//!
//! Order of removal: child processes (SIGINT, then SIGKILL), DPDK runtime directories of
//! those processes, vhost-user sockets outside the run directory, namespaces (which deletes every interface in them), stray TAP
//! interfaces in the root namespace, the run directory (kept when the run failed), the
//! liveness file.

use crate::runid::{RunId, STATE_DIR};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Resources {
    children: Vec<(i32, String)>,
    dpdk_prefixes: Vec<String>,
    namespaces: Vec<String>,
    root_ifaces: Vec<String>,
    run_dirs: Vec<(PathBuf, bool)>, // (dir, keep)
    /// vhost-user sockets outside the run directory.
    sockets: Vec<PathBuf>,
    state_files: Vec<PathBuf>,
}

static RES: Mutex<Option<Resources>> = Mutex::new(None);

fn with<F: FnOnce(&mut Resources)>(f: F) {
    let mut g = RES.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Resources::default));
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Install the Ctrl-C / SIGTERM / SIGHUP handler: the first signal asks every loop to stop
/// (they all poll `interrupted()`), the second cleans up from the handler and exits 130.
pub fn install_signal_handler() {
    let _ = ctrlc::set_handler(|| {
        let n = SIGNALS.fetch_add(1, Ordering::SeqCst);
        INTERRUPTED.store(true, Ordering::SeqCst);
        if n == 0 {
            eprintln!("testbed: interrupted, stopping and cleaning up (Ctrl-C again to force)");
            // If the main thread does not finish within 20 s, clean up from here.
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_secs(20));
                eprintln!("testbed: main thread did not stop in time, forcing clean-up");
                cleanup_all();
                std::process::exit(130);
            });
        } else {
            cleanup_all();
            std::process::exit(130);
        }
    });
}

pub fn add_child(pid: i32, what: &str) {
    with(|r| r.children.push((pid, what.to_string())));
}

/// The child was stopped and reaped by its owner.
pub fn forget_child(pid: i32) {
    with(|r| r.children.retain(|(p, _)| *p != pid));
}

pub fn add_dpdk_prefix(p: &str) {
    with(|r| r.dpdk_prefixes.push(p.to_string()));
}

pub fn add_namespace(ns: &str) {
    with(|r| r.namespaces.push(ns.to_string()));
}

pub fn add_root_iface(ifname: &str) {
    with(|r| r.root_ifaces.push(ifname.to_string()));
}

pub fn add_run_dir(dir: PathBuf) {
    with(|r| r.run_dirs.push((dir, false)));
}

/// Keep the run directories (logs) after clean-up: the run failed.
pub fn keep_run_dirs() {
    with(|r| r.run_dirs.iter_mut().for_each(|d| d.1 = true));
}

/// A vhost-user socket of this run outside its run directory: removed at clean-up, and
/// recorded in `/run/testbed/<id>.sockets` so that `testbed cleanup` finds it after a
/// SIGKILL. When first registered, a stale socket already at `path` (its path contains
/// this fresh run's id, so nothing live owns it) is removed. The second appliance naming
/// the same socket (the other end of the link) changes nothing.
pub fn add_socket(run: &RunId, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut known = false;
    with(|r| known = r.sockets.iter().any(|s| s == path));
    if known {
        return Ok(());
    }
    let rec = run.sockets_file();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&rec)
        .with_context(|| format!("cannot write {}", rec.display()))?;
    writeln!(f, "{}", path.display()).with_context(|| format!("cannot write {}", rec.display()))?;
    with(|r| {
        if !r.state_files.contains(&rec) {
            r.state_files.push(rec.clone());
        }
        r.sockets.push(path.to_path_buf());
    });
    remove_socket(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

/// Remove `path` if it is a Unix socket (never anything else).
pub fn remove_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}

pub fn add_state_file(p: PathBuf) {
    with(|r| r.state_files.push(p));
}

/// Stop a process: SIGINT, wait up to `grace`, then SIGKILL. Reaps it when it is our child.
pub fn stop_pid(pid: i32, grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let p = Pid::from_raw(pid);
    if kill(p, None).is_err() {
        return;
    }
    let _ = kill(p, Signal::SIGINT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if reaped_or_gone(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(p, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !reaped_or_gone(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reaped_or_gone(pid: i32) -> bool {
    let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    if r == pid {
        return true;
    }
    // Not our child (ECHILD) or still running: is it still there?
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
}

/// Removes what DPDK processes of file prefix `prefix` leave behind: the runtime directory
/// `/var/run/dpdk/PREFIX` and their hugepage files (`PREFIXmap_N`, kept for secondary
/// processes after the primary exits) in every hugetlbfs mount. Without the latter a
/// run of hugepage trials (`bench balance --hugepages`) exhausts the reserved pages after
/// the first few processes.
pub fn remove_dpdk_files(prefix: &str) {
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", prefix));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for dir in mounts.lines().filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "hugetlbfs").then(|| f[1].to_string())
    }) {
        remove_hugepage_files_in(std::path::Path::new(&dir), prefix);
    }
}

/// Removes `PREFIXmap_N` files in `dir` (a hugetlbfs mount); other files stay.
fn remove_hugepage_files_in(dir: &std::path::Path, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with("map_")) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove everything registered. Idempotent; never panics.
pub fn cleanup_all() {
    let res = {
        let mut g = RES.lock().unwrap_or_else(|e| e.into_inner());
        g.take()
    };
    let Some(r) = res else { return };
    for (pid, _what) in r.children.iter().rev() {
        stop_pid(*pid, Duration::from_secs(5));
    }
    for p in &r.dpdk_prefixes {
        remove_dpdk_files(p);
    }
    for s in &r.sockets {
        remove_socket(s);
    }
    for ns in r.namespaces.iter().rev() {
        if let Err(e) = crate::netns::delete(ns) {
            eprintln!("testbed: clean-up: {:#}", e);
        }
    }
    for ifname in &r.root_ifaces {
        if crate::netns::root_link_exists(ifname) {
            let _ = crate::cmd::ip(&["link", "del", "dev", ifname]);
        }
    }
    // A net_af_packet or net_af_xdp port's veth has an ingress drop of its name (appliance.rs).
    if !r.root_ifaces.is_empty() {
        for name in crate::network::ingress_drops().iter().filter(|n| r.root_ifaces.contains(n)) {
            let _ = crate::network::undo_drop_ingress(name);
        }
    }
    for (dir, keep) in &r.run_dirs {
        if *keep {
            eprintln!("testbed: logs and configs kept in {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    for f in &r.state_files {
        let _ = std::fs::remove_file(f);
    }
}

/// Owns a run's registrations; cleans up when dropped.
pub struct RunGuard {
    _id: RunId,
}

impl RunGuard {
    /// Register a new run: liveness file and run directory.
    pub fn new(id: RunId) -> anyhow::Result<RunGuard> {
        use anyhow::Context;
        std::fs::create_dir_all(STATE_DIR)
            .with_context(|| format!("cannot create {}", STATE_DIR))?;
        std::fs::write(id.state_file(), format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", id.state_file().display()))?;
        add_state_file(id.state_file());
        std::fs::create_dir_all(id.run_dir())
            .with_context(|| format!("cannot create {}", id.run_dir().display()))?;
        add_run_dir(id.run_dir());
        Ok(RunGuard { _id: id })
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            keep_run_dirs();
        }
        cleanup_all();
    }
}

/// Ask every loop to stop, as a first Ctrl-C does (used by the run's watchdog).
pub fn request_stop() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_prefix_s_hugepage_files_are_removed() {
        let dir = std::env::temp_dir().join(format!("tb-huge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["tb1234567-dutio4map_0", "tb1234567-dutio4map_1", "tb1234567-dutio40map_0", "tb1234567-genio4map_0", "other"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        remove_hugepage_files_in(&dir, "tb1234567-dutio4");
        let mut left: Vec<String> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["other", "tb1234567-dutio40map_0", "tb1234567-genio4map_0"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
