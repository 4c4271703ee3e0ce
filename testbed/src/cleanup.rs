//! `testbed cleanup`: remove what earlier runs left behind (a run killed with SIGKILL, a
//! crash). Only names of the testbed's own form (`t` + 6 hex digits) are touched, and never
//! those of a run whose testbed process is still alive. vhost-user sockets live in the run
//! directory (removed with it); one outside it is removed from the run's record
//! `/run/testbed/<id>.sockets`, and only when it is a socket whose path contains the id.

use crate::runid::{run_id_of, STATE_DIR};
use std::path::Path;
use std::time::Duration;

/// Is the run with this id still alive (its liveness file names a live process)?
fn alive(id: &str) -> bool {
    let f = format!("{}/{}.pid", STATE_DIR, id);
    match std::fs::read_to_string(&f)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        Some(pid) if pid as u32 == std::process::id() => true,
        Some(pid) => {
            // A zombie (killed, not yet reaped) is dead for our purpose.
            let zombie = std::fs::read_to_string(format!("/proc/{}/stat", pid))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .map(|r| r.trim_start().starts_with('Z'))
                        .unwrap_or(false)
                })
                .unwrap_or(false);
            !zombie && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        }
        None => false,
    }
}

/// The pid holding DPDK's lock on `<runtime dir>/config`, if any.
fn dpdk_lock_holder(dir: &Path) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("config"))
        .ok()?;
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if r == 0 && fl.l_type != libc::F_UNLCK as i16 && fl.l_pid > 0 {
        Some(fl.l_pid)
    } else {
        None
    }
}

/// The sockets listed in a run's record that still exist: absolute paths that
/// contains the run's id, and that are Unix sockets (nothing else is ever removed).
fn stale_sockets(record: &Path, id: &str) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| std::path::PathBuf::from(l.trim()))
        .filter(|p| p.is_absolute() && p.to_string_lossy().contains(id))
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false)
        })
        .collect()
}

/// Remove leftovers; returns the lines describing what was removed.
pub fn cleanup(dry_run: bool) -> Vec<String> {
    let mut done = Vec::new();
    let mut act = |what: String, f: &mut dyn FnMut() -> anyhow::Result<()>| {
        if dry_run {
            done.push(format!("would remove {}", what));
        } else {
            match f() {
                Ok(()) => done.push(format!("removed {}", what)),
                Err(e) => done.push(format!("could not remove {}: {:#}", what, e)),
            }
        }
    };
    // DPDK processes of dead runs first (their TAPs go away with them).
    if let Ok(rd) = std::fs::read_dir("/var/run/dpdk") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = run_id_of(&name) else { continue };
            if name.as_bytes().get(7) != Some(&b'-') || alive(id) {
                continue;
            }
            let dir = e.path();
            if let Some(pid) = dpdk_lock_holder(&dir) {
                act(
                    format!("DPDK process {} (file prefix {})", pid, name),
                    &mut || {
                        crate::guard::stop_pid(pid, Duration::from_secs(5));
                        Ok(())
                    },
                );
            }
            act(format!("DPDK runtime dir {} and its hugepage files", dir.display()), &mut || {
                crate::guard::remove_dpdk_files(&name);
                Ok(())
            });
        }
    }
    for ns in crate::netns::list() {
        let Some(id) = run_id_of(&ns) else { continue };
        if ns.as_bytes().get(7) != Some(&b'-') || alive(id) {
            continue;
        }
        act(format!("namespace {}", ns), &mut || {
            crate::netns::delete(&ns)
        });
    }
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = run_iface_of(&name) else { continue };
            if alive(id) {
                continue;
            }
            act(format!("interface {}", name), &mut || {
                crate::cmd::ip(&["link", "del", "dev", &name]).map(|_| ())
            });
        }
    }
    // The ingress drops that kept the root kernel off a net_af_packet or net_af_xdp port's veth (named
    // after the veth).
    for name in crate::network::ingress_drops() {
        let Some(id) = run_iface_of(&name) else { continue };
        if alive(id) {
            continue;
        }
        act(format!("nftables table netdev {}", name), &mut || crate::network::undo_drop_ingress(&name));
    }
    if let Ok(rd) = std::fs::read_dir("/tmp") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("testbed-") else {
                continue;
            };
            let Some(id) = run_id_of(rest) else { continue };
            if rest.len() != 7 || alive(id) {
                continue;
            }
            let p = e.path();
            act(format!("run directory {}", p.display()), &mut || {
                Ok(std::fs::remove_dir_all(&p)?)
            });
        }
    }
    // vhost-user sockets a run kept outside its run directory (recorded at start-up).
    if let Ok(rd) = std::fs::read_dir(STATE_DIR) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".sockets").and_then(run_id_of) else {
                continue;
            };
            if name.len() != 7 + ".sockets".len() || alive(id) {
                continue;
            }
            let rec = e.path();
            for sock in stale_sockets(&rec, id) {
                act(format!("vhost-user socket {}", sock.display()), &mut || {
                    if crate::guard::remove_socket(&sock) {
                        Ok(())
                    } else {
                        Err(anyhow::anyhow!("not removed"))
                    }
                });
            }
            act(format!("socket record {}", rec.display()), &mut || {
                Ok(std::fs::remove_file(&rec)?)
            });
        }
    }
    if let Ok(rd) = std::fs::read_dir(STATE_DIR) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".pid").and_then(run_id_of) else {
                continue;
            };
            if alive(id) {
                continue;
            }
            let p = e.path();
            act(format!("liveness file {}", p.display()), &mut || {
                Ok(std::fs::remove_file(&p)?)
            });
        }
    }
    done
}

/// The run id of a root-namespace interface the testbed names (a TAP, or a net_af_packet
/// or net_af_xdp port's veth): the id and 1-2 base-36 digits.
fn run_iface_of(name: &str) -> Option<&str> {
    let id = run_id_of(name)?;
    let rest = &name[7..];
    (!rest.is_empty() && rest.len() <= 2 && rest.bytes().all(|c| c.is_ascii_alphanumeric())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::run_iface_of;

    #[test]
    fn a_run_interface_is_its_id_and_one_or_two_digits() {
        assert_eq!(run_iface_of("t2540fb0"), Some("t2540fb"));
        assert_eq!(run_iface_of("t2540fbz1"), Some("t2540fb"));
        assert_eq!(run_iface_of("t2540fb"), None, "the id alone");
        assert_eq!(run_iface_of("t2540fb0-p"), None, "a veth's placed end");
        assert_eq!(run_iface_of("t2540fb123"), None);
        assert_eq!(run_iface_of("eth0"), None);
    }
}
