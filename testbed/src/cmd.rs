//! Running helper commands (`ip`, ...) with a time bound and one-line errors.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run a command to completion within `timeout`; return its stdout. A non-zero exit is an
/// error carrying the command line and the first line of its stderr.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Result<String> {
    let line = format!("{} {}", program, args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", program))?;
    let mut out = child.stdout.take().map(reader_thread);
    let mut err = child.stderr.take().map(reader_thread);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{}` did not finish within {:?}", line, timeout);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out.take().and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.take().and_then(|h| h.join().ok()).unwrap_or_default();
    if !status.success() {
        let first = stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        bail!("`{}` failed ({}): {}", line, status, first);
    }
    Ok(stdout)
}

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// `ip ARGS...` with a 10 s bound.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args, Duration::from_secs(10))
}

/// `ip -n NS ARGS...`
pub fn ip_ns(ns: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["-n", ns];
    v.extend_from_slice(args);
    ip(&v)
}
