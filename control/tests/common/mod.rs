//! What the appliance's integration tests share: the binary, a running appliance whose
//! output is collected, a private cookie-key file, polling and `ctl`.
#![allow(dead_code)] // each test file uses its own part

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tapsplice");

/// A `tapsplice run` child: its stdout lines arrive on `lines`, its stderr is collected.
/// Stopped with SIGINT (killed after 10 s) by [`Appliance::stop`] or on drop.
pub struct Appliance {
    child: Option<Child>,
    pub lines: mpsc::Receiver<String>,
    errs: Option<JoinHandle<String>>,
}

impl Appliance {
    /// `tapsplice run --config CFG ARGS...`, once it printed "tapsplice: running" (30 s;
    /// panics with its stderr otherwise).
    pub fn start<S: AsRef<OsStr>>(cfg: &Path, args: &[S]) -> Appliance {
        let mut child = Command::new(BIN).args(["run", "--config"]).arg(cfg).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tapsplice");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
        let err = child.stderr.take().expect("piped stderr");
        let errs = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            s
        });
        let a = Appliance { child: Some(child), lines, errs: Some(errs) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut running = false;
        while !running && Instant::now() < deadline {
            running = a.lines.recv_timeout(Duration::from_millis(200)).is_ok_and(|l| l.contains("tapsplice: running"));
        }
        if !running {
            let (status, stderr) = a.stop();
            panic!("the appliance did not start ({status}): {stderr}");
        }
        a
    }

    /// Stops it; its exit status and everything it wrote on stderr.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let status = self.interrupt().expect("the child is there until stopped");
        let stderr = self.errs.take().and_then(|e| e.join().ok()).unwrap_or_default();
        (status, stderr)
    }

    fn interrupt(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.interrupt();
    }
}

/// A SYN-cookie secret in `dir`, private (0600) as the appliance demands.
pub fn cookie_key(dir: &Path) -> PathBuf {
    let key = dir.join("cookie.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    key
}

/// Polls `ok` every 100 ms for up to `limit`.
pub fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

/// `tapsplice ctl --socket SOCK ARGS...`.
pub fn ctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(["ctl", "--socket"]).arg(sock).args(args).output().expect("tapsplice ctl")
}
