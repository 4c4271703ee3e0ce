//! Application health probes: is the service on this machine alive?
//!
//! A machine that heartbeats but whose application is dead must be told apart from a dead
//! machine (the first is healed by re-splicing or restarting the app, the second by
//! fencing), so the agent reports the probe's verdict in every heartbeat.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the application is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Alive when a TCP connection to the address completes within the timeout.
    Tcp { address: SocketAddr },
    /// Alive when the command exits 0 within the timeout (run without a shell).
    Command { argv: Vec<String> },
    /// No probe: the application counts as alive while the agent runs.
    None,
}

/// One probe result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub alive: bool,
    /// Why it is not alive (empty when alive).
    pub detail: String,
    pub took: Duration,
}

impl Probe {
    pub fn check(&self, timeout: Duration) -> ProbeResult {
        let started = Instant::now();
        let (alive, detail) = match self {
            Probe::None => (true, String::new()),
            Probe::Tcp { address } => match TcpStream::connect_timeout(address, timeout) {
                Ok(_) => (true, String::new()),
                Err(e) => (false, format!("tcp connect {address}: {e}")),
            },
            Probe::Command { argv } => run_command(argv, timeout),
        };
        ProbeResult { alive, detail, took: started.elapsed() }
    }
}

fn run_command(argv: &[String], timeout: Duration) -> (bool, String) {
    let Some((prog, args)) = argv.split_first() else {
        return (false, "empty probe command".into());
    };
    let mut child = match Command::new(prog).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {prog}: {e}")),
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return (true, String::new()),
            Ok(Some(status)) => return (false, format!("{prog} exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return (false, format!("{prog} did not finish within {} ms", timeout.as_millis()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return (false, format!("waiting for {prog}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn tcp_probe_sees_a_listener_and_its_absence() {
        let l = TcpListener::bind("127.0.0.77:0").unwrap();
        let p = Probe::Tcp { address: l.local_addr().unwrap() };
        assert!(p.check(Duration::from_millis(500)).alive);
        // The absence on a port that is bound but not listening: it stays ours, so no
        // other test running at the same time can be given it (a port freed by closing the
        // listener could be, and the probe then saw that test's listener).
        // SAFETY: plain socket calls on a descriptor this block creates; `held` owns it.
        let (held, port) = {
            unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                assert!(fd >= 0);
                let mut a: libc::sockaddr_in = std::mem::zeroed();
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 77]);
                let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                assert_eq!(libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len), 0);
                let mut got = len;
                assert_eq!(libc::getsockname(fd, (&mut a as *mut libc::sockaddr_in).cast(), &mut got), 0);
                (<std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd), u16::from_be(a.sin_port))
            }
        };
        let r = Probe::Tcp { address: ([127, 0, 0, 77], port).into() }.check(Duration::from_millis(500));
        assert!(!r.alive);
        assert!(r.detail.contains("tcp connect"), "{}", r.detail);
        drop(held);
    }

    #[test]
    fn command_probe_uses_the_exit_status_and_the_timeout() {
        assert!(Probe::Command { argv: vec!["true".into()] }.check(Duration::from_secs(2)).alive);
        let r = Probe::Command { argv: vec!["false".into()] }.check(Duration::from_secs(2));
        assert!(!r.alive && r.detail.contains("exited"), "{r:?}");
        let r = Probe::Command { argv: vec!["sleep".into(), "5".into()] }.check(Duration::from_millis(100));
        assert!(!r.alive && r.detail.contains("did not finish"), "{r:?}");
        assert!(r.took < Duration::from_secs(2));
        let r = Probe::Command { argv: vec!["/nonexistent/probe".into()] }.check(Duration::from_secs(1));
        assert!(!r.alive && r.detail.contains("cannot run"), "{r:?}");
    }
}
